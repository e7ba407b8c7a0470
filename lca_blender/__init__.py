"""LCA Avatars core: the avatar data model, posing, files and the engine (never imports bpy)."""

__version__ = "0.1.0"
