"""Blender operators, one module per job family (import/export, build, batch, rendering, engine)."""

from . import import_export

# Registered in this order, unregistered in reverse.
_modules = (import_export,)


def register() -> None:
    for module in _modules:
        module.register()


def unregister() -> None:
    for module in reversed(_modules):
        module.unregister()
