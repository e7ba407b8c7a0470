"""Blender operators, one module per job family (import/export, build, batch, rendering, engine)."""

from . import (
    animation,
    batch,
    build,
    engine,
    face_capture,
    gltf_export,
    import_export,
    render_frames,
    retarget,
)

# Registered in this order, unregistered in reverse.
_modules = (
    import_export,
    engine,
    build,
    batch,
    animation,
    render_frames,
    gltf_export,
    face_capture,
    retarget,
)


def register() -> None:
    for module in _modules:
        module.register()


def unregister() -> None:
    for module in reversed(_modules):
        module.unregister()
