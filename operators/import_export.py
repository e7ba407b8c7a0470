"""Scaffolding replaced by the module's real content in this change."""

import bpy

classes: tuple[type, ...] = ()

register, unregister = bpy.utils.register_classes_factory(classes)
