"""Sidebar panels, property groups and the add-on preferences."""

import bpy

from ..lca_blender.errors import AvatarError
from ..operators.engine import engine_start_command
from . import properties, sidebar

# Blender keys add-on preferences by the add-on's root package, which inside an extension is
# `bl_ext.<repository>.lca_avatars`: this package's parent, whatever repository it was installed in.
ADDON_PACKAGE = __package__.rpartition(".")[0]


class LCA_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    engine_python: bpy.props.StringProperty(
        name="Engine Python",
        description=(
            "Python of the engine's virtual environment; "
            "leave empty to use the one set up by the project's setup script"
        ),
        subtype="FILE_PATH",
    )
    device: bpy.props.EnumProperty(
        name="Device",
        description="Where the engine computes",
        items=(
            ("AUTO", "Auto", "CUDA when a GPU is there, else the CPU"),
            ("CPU", "CPU", "Always the CPU (slower; no GPU needed)"),
            ("CUDA", "CUDA", "An NVIDIA GPU"),
        ),
        default="AUTO",
    )
    quality: bpy.props.EnumProperty(
        name="Quality",
        description="Default quality preset of new builds: more quality takes longer",
        items=(
            ("PREVIEW", "Preview", "A quick look (minutes)"),
            ("STANDARD", "Standard", "Good for animation"),
            ("HIGH", "High", "Close-ups (takes the longest)"),
        ),
        default="STANDARD",
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "engine_python")
        row = layout.row()
        try:
            row.label(text=f"Engine: {engine_start_command(context)[0]}", icon="CHECKMARK")
        except AvatarError as error:
            row.label(text=str(error), icon="ERROR")
        layout.operator("lca.install_engine", icon="IMPORT")
        layout.prop(self, "device")
        layout.prop(self, "quality")


classes: tuple[type, ...] = (LCA_AddonPreferences,)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)

# Registered in this order, unregistered in reverse; the property groups come first because the
# panels and operators read them.
_modules = (properties, sidebar)


def register() -> None:
    _register_classes()
    for module in _modules:
        module.register()


def unregister() -> None:
    for module in reversed(_modules):
        module.unregister()
    _unregister_classes()
