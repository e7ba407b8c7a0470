"""Import .lca avatars as an armature, a body mesh and a splats mesh; export the posed splats as .ply;
import static splat .ply files (through Blender's own importer from 5.3, as a previewed mesh before)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np
from bpy_extras.io_utils import ExportHelper, ImportHelper

from ..viewport import native_splats, posing, state
from .animation import avatar_splats


@dataclass(frozen=True)
class ImportedAvatar:
    """The Blender objects made for one avatar."""

    collection: bpy.types.Collection
    rig: bpy.types.Object  # armature <name>_rig
    body: bpy.types.Object  # mesh <name>_body, child of the rig
    splats: bpy.types.Object  # mesh <name>_splats, child of the body


def create_avatar_objects(context: bpy.types.Context, filepath: str) -> ImportedAvatar:
    """Read an .lca file and build its objects in a new collection named after the file.

    Raises AvatarError (with an artist-readable message) when the file cannot be read.
    """
    from ..lca_blender.formats.lca import read_avatar
    from ..lca_blender.maths.deform import bind

    avatar = read_avatar(filepath)
    binding = bind(avatar)
    name = Path(filepath).stem
    if context.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    collection = bpy.data.collections.new(name)
    context.scene.collection.children.link(collection)
    rig = _build_armature(context, collection, f"{name}_rig", avatar.rig)
    # The body and the splats are built before they join the scene: every operator call updates
    # the view layer, which would otherwise re-evaluate the half-built body (5x slower).
    body = _build_body(context, f"{name}_body", avatar.rig, rig)
    splats = _build_splats(f"{name}_splats", avatar, binding, body)
    for obj in (rig, body, splats):
        obj.lca.avatar_name = name
        obj.lca.source_path = str(filepath)
    splats.lca.is_splats = True
    splats.lca.antialiased = avatar.antialiased
    if native_splats.has_native_splats():
        native_splats.add_native_splats(splats, body, avatar)
        # Blender draws and renders the posed splats itself; the draw handler would draw them twice.
        splats.lca.preview = False
    collection.objects.link(body)
    collection.objects.link(splats)
    body.hide_set(True)  # needs the view layer: hidden once linked
    posing.bind_splats(splats, avatar, binding)

    for obj in context.view_layer.objects:
        obj.select_set(False)
    rig.select_set(True)
    context.view_layer.objects.active = rig
    if splats.lca.preview:
        # Blender's own splats (5.3+) need no first pose here: it evaluates them when it first
        # draws them, as it does a .ply it imports; evaluating now would only delay the import.
        posing.update_previews(context.scene, context.evaluated_depsgraph_get(), [splats])
    return ImportedAvatar(collection=collection, rig=rig, body=body, splats=splats)


def _build_armature(
    context: bpy.types.Context, collection: bpy.types.Collection, name: str, rig_data
) -> bpy.types.Object:
    from ..lca_blender.addon.blender_data import bone_arrays

    bones = bone_arrays(rig_data)
    armature = bpy.data.armatures.new(name)
    armature.display_type = "OCTAHEDRAL"
    rig = bpy.data.objects.new(name, armature)
    rig.show_in_front = True
    collection.objects.link(rig)
    context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        edit_bones = [armature.edit_bones.new(bone_name) for bone_name in bones.names]
        armature.edit_bones.foreach_set("head", bones.heads.reshape(-1))
        armature.edit_bones.foreach_set("tail", bones.tails.reshape(-1))
        armature.edit_bones.foreach_set("roll", bones.rolls)
        # Unconnected bones keep their heads exactly where the rig has them.
        for bone, parent in zip(edit_bones, bones.parents, strict=True):
            if parent >= 0:
                bone.parent = edit_bones[parent]
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    return rig


def _build_body(context: bpy.types.Context, name: str, rig_data, rig: bpy.types.Object) -> bpy.types.Object:
    """The body mesh (not yet in any collection): vertex groups, the Armature modifier, shape keys."""
    from ..lca_blender.addon.blender_data import (
        OUTER_LAYER_GROUP,
        joint_weights,
        mesh_arrays,
        outer_layer_weights,
        shape_key_coordinates,
    )

    arrays = mesh_arrays(rig_data)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(arrays.vertex_count)
    mesh.loops.add(arrays.loop_vertices.shape[0])
    mesh.polygons.add(arrays.polygon_count)
    # Attributes and `uv` take whole arrays in one copy; `vertices` "co", `loops` "vertex_index" and
    # the UV layer's `data` go item by item (10-50x slower).
    mesh.attributes["position"].data.foreach_set("vector", arrays.coordinates)
    mesh.attributes[".corner_vert"].data.foreach_set("value", arrays.loop_vertices)
    mesh.polygons.foreach_set("loop_start", arrays.loop_starts)
    mesh.polygons.foreach_set("use_smooth", np.ones(arrays.polygon_count, bool))
    if arrays.loop_uvs is not None:
        mesh.uv_layers.new(name="UVMap").uv.foreach_set("vector", arrays.loop_uvs)
    mesh.update()

    body = bpy.data.objects.new(name, mesh)
    body.parent = rig
    _add_vertex_groups(context, body, rig_data.joint_names, joint_weights(rig_data))
    outer = outer_layer_weights(rig_data)
    if outer is not None:
        _add_vertex_groups(context, body, [OUTER_LAYER_GROUP], outer[None])
    modifier = body.modifiers.new("Armature", "ARMATURE")
    modifier.object = rig
    # Every key's value is set: Blender 5.3 gives a new key 1.0 (4.5 gave 0.0), which would put
    # all 52 expressions at full strength.
    body.shape_key_add(name="Basis", from_mix=False).value = 0.0
    for expression, coordinates in zip(
        rig_data.expression_names, shape_key_coordinates(rig_data), strict=True
    ):
        key = body.shape_key_add(name=expression, from_mix=False)
        key.value = 0.0
        # `points` is the shape key's raw coordinate array (Blender 4.1+): 50x faster than `data`.
        key.points.foreach_set("co", coordinates)
    # The splats are the avatar's look; the body is their cage: out of renders, and a wireframe
    # once the artist unhides it.
    body.hide_render = True
    body.display_type = "WIRE"
    return body


def _add_vertex_groups(
    context: bpy.types.Context, body: bpy.types.Object, joint_names: list[str], weights: np.ndarray
) -> None:
    """One vertex group per joint with its skin weights [J, V].

    Vertex groups have no bulk setter, but a point attribute converts into a vertex group of the
    same name in C (keeping only the non-zero weights), so each group is one foreach_set.
    """
    mesh = body.data
    with context.temp_override(object=body, active_object=body):
        for joint_name, joint_weight in zip(joint_names, weights, strict=True):
            attribute = mesh.attributes.new(joint_name, "FLOAT", "POINT")
            attribute.data.foreach_set("value", joint_weight)
            mesh.attributes.active = attribute
            bpy.ops.geometry.attribute_convert(mode="VERTEX_GROUP")


def _build_splats(name: str, avatar, binding, body: bpy.types.Object) -> bpy.types.Object:
    """The splats mesh (not yet in any collection), a child of the body."""
    from ..lca_blender.addon.blender_data import splat_attributes

    splats = bpy.data.objects.new(name, _points_mesh(name, *splat_attributes(avatar, binding)))
    splats.parent = body
    # Blender's renderers draw nothing for a mesh of loose points: the splats reach final frames
    # through lca.render_frames, and the object's "Disable in Renders" switch leaves them out there.
    return splats


def _points_mesh(name: str, means: np.ndarray, attributes: dict[str, np.ndarray]) -> bpy.types.Mesh:
    """A mesh of loose points at `means` [N, 3] with the point attributes of `blender_data`."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(means.shape[0])
    mesh.attributes["position"].data.foreach_set("vector", means.reshape(-1))
    for attribute_name, values in attributes.items():
        if values.ndim == 2:
            mesh.attributes.new(attribute_name, "FLOAT_VECTOR", "POINT").data.foreach_set(
                "vector", values.reshape(-1)
            )
        else:
            data_type = "INT" if values.dtype == np.int32 else "FLOAT"
            mesh.attributes.new(attribute_name, data_type, "POINT").data.foreach_set("value", values)
    mesh.update()
    return mesh


def create_static_splats(context: bpy.types.Context, filepath: str) -> bpy.types.Object:
    """Before Blender 5.3: a 3DGS .ply as a mesh of points with the splats' 3DGS attributes, in the
    active collection, which the viewport preview draws (and `lca.render_frames` renders) where
    the object is. Raises AvatarError (artist-readable) when the file cannot be read."""
    from ..lca_blender.addon.blender_data import static_splat_attributes
    from ..lca_blender.formats.ply import read_ply

    name = Path(filepath).stem
    static = read_ply(filepath)
    splats = bpy.data.objects.new(name, _points_mesh(name, *static_splat_attributes(static)))
    splats.lca.is_splats = True
    splats.lca.antialiased = static.antialiased
    splats.lca.avatar_name = name
    splats.lca.source_path = str(filepath)
    context.view_layer.active_layer_collection.collection.objects.link(splats)
    for obj in context.view_layer.objects:
        obj.select_set(False)
    splats.select_set(True)
    context.view_layer.objects.active = splats
    posing.update_previews(context.scene, context.evaluated_depsgraph_get(), [splats])
    return splats


class LCA_OT_import_avatar(bpy.types.Operator, ImportHelper):
    """Import an LCA avatar (.lca): a posable armature, its body mesh and its Gaussian splats"""

    bl_idname = "lca.import_avatar"
    bl_label = "Import LCA Avatar"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filename_ext = ".lca"
    filter_glob: bpy.props.StringProperty(default="*.lca", options={"HIDDEN"})
    # Set by drag-and-drop (the file handler) and by multi-selection in the file browser.
    directory: bpy.props.StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})
    files: bpy.props.CollectionProperty(
        type=bpy.types.OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"}
    )

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if self.directory and len(self.files):
            return self.execute(context)
        return ImportHelper.invoke(self, context, event)

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..lca_blender.errors import AvatarError

        paths = [os.path.join(self.directory, file.name) for file in self.files if file.name]
        for path in paths or [self.filepath]:
            try:
                create_avatar_objects(context, path)
            except AvatarError as error:
                self.report({"ERROR"}, str(error))
                return {"CANCELLED"}
        return {"FINISHED"}


class LCA_FH_avatar(bpy.types.FileHandler):
    """Drop .lca files on the 3D viewport or the outliner to import them."""

    bl_idname = "LCA_FH_avatar"
    bl_label = "LCA Avatar"
    bl_import_operator = "lca.import_avatar"
    bl_file_extensions = ".lca"

    @classmethod
    def poll_drop(cls, context: bpy.types.Context) -> bool:
        return context.area is not None and context.area.type in {"VIEW_3D", "OUTLINER"}


def active_avatar_splats(context: bpy.types.Context) -> bpy.types.Object | None:
    """The splats object of the active object's avatar, else the scene's only one."""
    splats = avatar_splats(context.active_object)
    if splats is not None:
        return splats
    candidates = posing.splats_objects(context.scene)
    return candidates[0] if len(candidates) == 1 else None


class LCA_OT_export_posed_ply(bpy.types.Operator, ExportHelper):
    """Write the avatar's splats as posed at the current frame to a 3D Gaussian splat .ply"""

    bl_idname = "lca.export_posed_ply"
    bl_label = "Export Posed Splats (.ply)"
    bl_options = {"REGISTER"}

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default="*.ply", options={"HIDDEN"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if active_avatar_splats(context) is None:
            cls.poll_message_set("Select an imported LCA avatar")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..lca_blender.avatar import Splats
        from ..lca_blender.errors import AvatarError
        from ..lca_blender.formats.ply import write_ply

        splats_object = active_avatar_splats(context)
        preview = state.get_preview(splats_object.name)
        try:
            if preview is None:
                preview = posing.pose_splats(splats_object, context.evaluated_depsgraph_get())
            settings = splats_object.lca  # the sliders, as the viewport applies them
            splats = Splats(
                means=preview.means,
                rotations=preview.rotations,
                scales=preview.scales * settings.splat_scale,
                opacities=np.clip(preview.opacities * settings.opacity, 0.0, 1.0),
                sh=preview.sh,
                antialiased=settings.antialiased,  # marked in the header for viewers that honour it
            )
            write_ply(self.filepath, splats)
        except AvatarError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Wrote {splats.count} splats to {self.filepath}")
        return {"FINISHED"}


class LCA_OT_import_splats_ply(bpy.types.Operator, ImportHelper):
    """Import a static 3D Gaussian splat .ply (3DGS, SuperSplat, gsplat, a posed LCA export): a native
    splat object through Blender's own importer from Blender 5.3, a mesh of points that the LCA
    viewport preview draws before"""

    bl_idname = "lca.import_splats_ply"
    bl_label = "Import Gaussian Splats (.ply)"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default="*.ply", options={"HIDDEN"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        if native_splats.has_native_splats():
            return self._import_natively()
        from ..lca_blender.errors import AvatarError

        try:
            create_static_splats(context, self.filepath)
        except AvatarError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return {"FINISHED"}

    def _import_natively(self) -> set[str]:
        before = set(bpy.data.objects)
        try:
            bpy.ops.wm.ply_import(filepath=self.filepath)
        except RuntimeError as error:  # Blender's importer reports an unreadable file this way
            self.report({"ERROR"}, f"Cannot read '{self.filepath}': {str(error).strip()}")
            return {"CANCELLED"}
        made = [obj for obj in bpy.data.objects if obj not in before]
        if not any(obj.type == "POINTCLOUD" and obj.data.type == "GAUSSIAN_SPLAT" for obj in made):
            for obj in made:
                bpy.data.objects.remove(obj)
            self.report(
                {"ERROR"},
                f"'{self.filepath}' holds no Gaussian splats (no 3DGS properties such as f_dc_0, "
                "opacity, scale_0, rot_0); import meshes with File > Import > Stanford PLY",
            )
            return {"CANCELLED"}
        return {"FINISHED"}


def _import_menu_entry(menu: bpy.types.Menu, context: bpy.types.Context) -> None:
    menu.layout.operator(LCA_OT_import_avatar.bl_idname, text="LCA Avatar (.lca)")
    menu.layout.operator(LCA_OT_import_splats_ply.bl_idname, text="Gaussian Splats (.ply)")


def _export_menu_entry(menu: bpy.types.Menu, context: bpy.types.Context) -> None:
    menu.layout.operator(LCA_OT_export_posed_ply.bl_idname, text="LCA Posed Splats (.ply)")


classes: tuple[type, ...] = (
    LCA_OT_import_avatar,
    LCA_FH_avatar,
    LCA_OT_export_posed_ply,
    LCA_OT_import_splats_ply,
)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.TOPBAR_MT_file_import.append(_import_menu_entry)
    bpy.types.TOPBAR_MT_file_export.append(_export_menu_entry)


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_export.remove(_export_menu_entry)
    bpy.types.TOPBAR_MT_file_import.remove(_import_menu_entry)
    _unregister_classes()
