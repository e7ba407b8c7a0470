"""Viewport drawing of the splats: draw handler, GPU shaders, depsgraph and frame-change handlers."""

from . import draw, posing, state

# Registered in this order, unregistered in reverse.
_modules = (posing, draw)


def register() -> None:
    for module in _modules:
        module.register()


def unregister() -> None:
    for module in reversed(_modules):
        module.unregister()
    state.clear()
