"""The add-on's settings on Blender data: one property group on objects, one on the scene."""

import bpy

LOOK_ITEMS = (
    ("CAPTURED", "As captured", "The colours of the photos, view-dependent (spherical harmonics)"),
    ("RELIT", "Relit", "Albedo lit by the scene's lights and world colour"),
)


def _preview_switched(settings: bpy.types.PropertyGroup, context: bpy.types.Context) -> None:
    # Pose (or drop) the preview at once rather than at the next frame change.
    from ..viewport.posing import update_previews

    splats = settings.id_data
    if settings.is_splats and context.scene is not None and splats.name in context.scene.objects:
        update_previews(context.scene, context.evaluated_depsgraph_get(), [splats])


def _look_changed(settings: bpy.types.PropertyGroup, context: bpy.types.Context) -> None:
    # Splats that Blender renders itself take the look and sliders through their posing modifier;
    # the relit look's colours are computed at once (the drawer applies all three itself).
    from ..viewport.native_splats import apply_settings, renders_natively

    splats = settings.id_data
    if settings.is_splats and renders_natively(splats):
        apply_settings(splats)
        _preview_switched(settings, context)


class LCA_PG_object(bpy.types.PropertyGroup):
    """Per-object settings. On `<name>_splats` meshes: the preview; on rigs and bodies: the avatar."""

    is_splats: bpy.props.BoolProperty(name="LCA splats", default=False, options={"HIDDEN"})
    avatar_name: bpy.props.StringProperty(name="Avatar", description="The avatar this object belongs to")
    source_path: bpy.props.StringProperty(name="Source", subtype="FILE_PATH", description="The .lca file")
    antialiased: bpy.props.BoolProperty(
        name="Antialiased",
        description="The splats were fitted antialiased: the preview compensates their opacities for "
        "the screen-space low-pass filter (set on import from the .lca file)",
        default=False,
        options={"HIDDEN"},
    )
    preview: bpy.props.BoolProperty(
        name="Preview",
        description="Draw the splats in the viewport with the add-on's shader (off where Blender 5.3+ "
        "draws and renders them natively)",
        default=True,
        update=_preview_switched,
    )
    look: bpy.props.EnumProperty(name="Look", items=LOOK_ITEMS, default="CAPTURED", update=_look_changed)
    splat_scale: bpy.props.FloatProperty(
        name="Splat scale",
        description="Multiplies every splat's size",
        default=1.0,
        min=0.01,
        max=10.0,
        update=_look_changed,
    )
    opacity: bpy.props.FloatProperty(
        name="Opacity",
        description="Multiplies every splat's opacity",
        default=1.0,
        min=0.0,
        max=1.0,
        update=_look_changed,
    )


class LCA_PG_scene(bpy.types.PropertyGroup):
    """Scene-wide settings and the state of a running build, read by the sidebar."""

    build_progress: bpy.props.FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    build_stage: bpy.props.StringProperty(name="Stage")
    build_message: bpy.props.StringProperty(name="Message")
    build_running: bpy.props.BoolProperty(name="Building", default=False)


classes = (LCA_PG_object, LCA_PG_scene)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.Object.lca = bpy.props.PointerProperty(type=LCA_PG_object)
    bpy.types.Scene.lca = bpy.props.PointerProperty(type=LCA_PG_scene)


def unregister() -> None:
    del bpy.types.Scene.lca
    del bpy.types.Object.lca
    _unregister_classes()
