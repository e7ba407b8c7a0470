"""Viewport drawing of the splats: draw handler, GPU shaders, depsgraph and frame-change handlers."""

import bpy

classes: tuple[type, ...] = ()

register, unregister = bpy.utils.register_classes_factory(classes)
