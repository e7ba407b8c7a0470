"""Sidebar panels, property groups and the add-on preferences."""

import bpy

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

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.prop(self, "engine_python")


classes: tuple[type, ...] = (LCA_AddonPreferences,)

register, unregister = bpy.utils.register_classes_factory(classes)
