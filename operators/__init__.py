"""Blender operators, one module per job family (build, import/export, batch, animation, engine)."""

import bpy

classes: tuple[type, ...] = ()

register, unregister = bpy.utils.register_classes_factory(classes)
