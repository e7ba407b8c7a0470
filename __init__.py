"""LCA Avatars Blender extension: registers the operators, panels and viewport sub-packages."""

from . import operators, panels, viewport

# Registered in this order, unregistered in reverse, so later parts can rely on earlier ones.
_parts = (operators, panels, viewport)


def register() -> None:
    for part in _parts:
        part.register()


def unregister() -> None:
    for part in reversed(_parts):
        part.unregister()
