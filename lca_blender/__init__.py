"""LCA Avatars core: the avatar data model, posing, files and the engine (never imports bpy).

Who loads what is told by the folders (README.md in this folder; tests/core/test_architecture.py
checks it): Blender's Python loads the top-level modules except `cli` and the packages named in
`BLENDER_LOADED_PACKAGES` (numpy and the standard library only; each `*_torch.py` twin in them is
the engine's). Everything else (`bodies/`, `render/`, `reconstruct/`, `evaluate/`, `cli.py`) runs
only in the engine.
"""

__version__ = "0.1.0"

BLENDER_LOADED_PACKAGES = ("maths", "formats", "addon", "batch")
ENGINE_ONLY_MODULES = ("cli",)
TORCH_TWIN_SUFFIX = "_torch"
