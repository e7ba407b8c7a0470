"""Sidebar panels, property groups and the add-on preferences."""

import bpy

from . import properties

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
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)

# Registered in this order, unregistered in reverse; the property groups come first because the
# panels and operators read them.
_modules = (properties,)


def register() -> None:
    _register_classes()
    for module in _modules:
        module.register()


def unregister() -> None:
    for module in reversed(_modules):
        module.unregister()
    _unregister_classes()
