"""Export the selected avatar as glTF 2.0 with KHR_gaussian_splatting (.glb): rigged, or posed splats.

The avatar is read back from the scene (armature, body mesh with its vertex groups and shape
keys, splat attributes), not from its .lca file, so the artist's edits go with it; the core
(`lca_blender/formats/gltf.py`) writes the file.
"""

from __future__ import annotations

import dataclasses

import bpy
import numpy as np
from bpy_extras.io_utils import ExportHelper

from ..viewport import posing, state
from .animation import avatar_armature
from .import_export import active_avatar_splats


def _matrices(collection, count: int, attribute: str) -> np.ndarray:
    """[count, 4, 4] row-major matrices from a collection's `attribute` (foreach_get is column-major)."""
    values = np.empty(count * 16, np.float32)
    collection.foreach_get(attribute, values)
    return values.reshape(count, 4, 4).transpose(0, 2, 1).astype(np.float64)


def _bone_arrays(armature: bpy.types.Object, body: bpy.types.Object) -> dict:
    """The armature's bones, in the body's object space."""
    bones = armature.data.bones
    count = len(bones)
    to_body = np.linalg.inv(np.array(body.matrix_world)) @ np.array(armature.matrix_world)
    rest = to_body @ _matrices(bones, count, "matrix_local")
    tails = np.empty(count * 3, np.float32)
    bones.foreach_get("tail_local", tails)
    tails = tails.reshape(-1, 3).astype(np.float64) @ to_body[:3, :3].T + to_body[:3, 3]
    return {
        "joint_names": [bone.name for bone in bones],
        "joint_parents": [bones.find(bone.parent.name) if bone.parent else -1 for bone in bones],
        "rest_matrices": rest,
        "bone_tails": tails,
    }


def _posed_bones(armature: bpy.types.Object, body: bpy.types.Object, joint_names: list[str]) -> np.ndarray:
    """[J, 4, 4] the pose bones' current frames in the body's object space, in `joint_names` order."""
    pose_bones = armature.pose.bones
    to_body = np.linalg.inv(np.array(body.matrix_world)) @ np.array(armature.matrix_world)
    posed = to_body @ _matrices(pose_bones, len(pose_bones), "matrix")
    order = [pose_bones.find(name) for name in joint_names]
    return posed[order]


def _expression_keys(body: bpy.types.Object) -> list[bpy.types.ShapeKey]:
    shape_keys = body.data.shape_keys
    if shape_keys is None:
        return []
    return [key for key in shape_keys.key_blocks if key != shape_keys.reference_key]


def _expression_values(body: bpy.types.Object) -> np.ndarray:
    return np.array([0.0 if key.mute else key.value for key in _expression_keys(body)], np.float32)


def _body_arrays(body: bpy.types.Object, joint_names: list[str]) -> dict:
    """The body's rest mesh, triangles, vertex-group skin and shape keys, in its object space."""
    from ..lca_blender.addon.blender_data import triangles_from_loops

    mesh = body.data
    vertex_count = len(mesh.vertices)
    rest = np.empty(vertex_count * 3, np.float32)
    reference = mesh.shape_keys.reference_key.data if mesh.shape_keys else mesh.vertices
    reference.foreach_get("co", rest)
    loop_vertices = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", loop_vertices)
    loop_totals = np.empty(len(mesh.polygons), np.int32)
    mesh.polygons.foreach_get("loop_total", loop_totals)
    joint_of_group = {
        group.index: joint_names.index(group.name)
        for group in body.vertex_groups
        if group.name in joint_names
    }
    members, joints, weights = [], [], []
    # Vertex groups have no bulk getter; one pass over the memberships (~50 ms for 14k vertices).
    for vertex in mesh.vertices:
        for element in vertex.groups:
            joint = joint_of_group.get(element.group)
            if joint is not None:
                members.append(vertex.index)
                joints.append(joint)
                weights.append(element.weight)
    keys = _expression_keys(body)
    coordinates = np.empty((len(keys), vertex_count * 3), np.float32)
    for row, key in zip(coordinates, keys, strict=True):
        getattr(key, "points", key.data).foreach_get("co", row)
    return {
        "vertices": rest.reshape(-1, 3),
        "triangles": triangles_from_loops(loop_vertices, loop_totals),
        "skin": (np.array(members, np.int64), np.array(joints, np.int64), np.array(weights, np.float32)),
        "expression_names": [key.name for key in keys],
        "expression_coordinates": coordinates.reshape(len(keys), vertex_count, 3),
    }


@dataclasses.dataclass(frozen=True)
class SceneAvatar:
    """An avatar read back from the scene, in its body's object space."""

    avatar: object  # GaussianAvatar (splat sliders applied)
    armature: bpy.types.Object
    body: bpy.types.Object

    def pose_now(self):
        """The Pose of the armature as it stands now, in the body's object space."""
        from ..lca_blender.maths.deform import pose_from_world

        rig = self.avatar.rig
        return pose_from_world(rig, _posed_bones(self.armature, self.body, rig.joint_names))

    def expressions_now(self) -> np.ndarray:
        return _expression_values(self.body)


def scene_avatar(splats: bpy.types.Object) -> SceneAvatar:
    """The avatar of `splats` read from the scene: the rig from the armature and the body, the
    Gaussians from the splats' attributes, with the splats' scale and opacity sliders applied."""
    from ..lca_blender.addon.blender_data import avatar_from_attributes
    from ..lca_blender.addon.blender_rig import rig_from_blender
    from ..lca_blender.errors import AvatarError

    body = posing.body_of(splats)
    armature = avatar_armature(body)
    if body is None or armature is None:
        raise AvatarError(
            f"'{splats.name}' is not parented to a body mesh with an Armature modifier; "
            "re-import the avatar from its .lca file."
        )
    bones = _bone_arrays(armature, body)
    rig = rig_from_blender(**bones, **_body_arrays(body, bones["joint_names"]))
    # The splats' attributes are the whole binding and appearance (see blender_data.py).
    avatar = avatar_from_attributes(rig, posing._point_attributes(splats.data))
    settings = splats.lca
    avatar = dataclasses.replace(
        avatar,
        antialiased=settings.antialiased,
        log_scales=(avatar.log_scales + np.log(settings.splat_scale)).astype(np.float32),
        opacities=np.clip(avatar.opacities * settings.opacity, 0.0, 1.0).astype(np.float32),
    )
    return SceneAvatar(avatar=avatar, armature=armature, body=body)


def _scene_animation(context: bpy.types.Context, source: SceneAvatar):
    """The scene's frame range as an AnimationClip in the world (the scene goes back to its frame)."""
    from ..lca_blender.addon.blender_rig import pose_to_world
    from ..lca_blender.formats.animation import AnimationClip

    scene = context.scene
    current = scene.frame_current
    frames = range(scene.frame_start, scene.frame_end + 1)
    rig = source.avatar.rig
    rotations = np.empty((len(frames), rig.joint_count, 4), np.float32)
    translations = np.empty((len(frames), 3), np.float32)
    expressions = np.empty((len(frames), len(rig.expression_names)), np.float32)
    body_matrix = np.array(source.body.matrix_world)
    try:
        for row, frame in enumerate(frames):
            scene.frame_set(frame)
            pose = pose_to_world(source.pose_now(), body_matrix)
            rotations[row], translations[row] = pose.rotations, pose.translation
            expressions[row] = source.expressions_now()
    finally:
        scene.frame_set(current)
    fps = scene.render.fps / scene.render.fps_base
    return AnimationClip(fps, rotations, translations, expressions, name=scene.name)


class LCA_OT_export_gltf(bpy.types.Operator, ExportHelper):
    """Export the avatar as glTF 2.0 with Gaussian splats (KHR_gaussian_splatting): its skeleton,
    skinned splats and body with the expressions as morph targets, posed at the current frame"""

    bl_idname = "lca.export_gltf"
    bl_label = "Export LCA Gaussian Avatar (.glb)"
    bl_options = {"REGISTER"}

    filename_ext = ".glb"
    filter_glob: bpy.props.StringProperty(default="*.glb", options={"HIDDEN"})
    content: bpy.props.EnumProperty(
        name="Content",
        items=(
            (
                "RIGGED",
                "Rigged avatar",
                "Skeleton, skinned splats and body mesh with expression morph targets, posed at the "
                "current frame",
            ),
            (
                "POSED",
                "Posed splats",
                "The splats as posed at the current frame, what every splat viewer shows",
            ),
        ),
        default="RIGGED",
    )
    include_body: bpy.props.BoolProperty(
        name="Body mesh",
        description="Include the body mesh (the splats' cage) with its morph targets",
        default=True,
    )
    include_animation: bpy.props.BoolProperty(
        name="Animation",
        description="Include the scene's frame range as an animation of the joints and expressions",
        default=False,
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if active_avatar_splats(context) is None:
            cls.poll_message_set("Select an imported LCA avatar")
            return False
        return True

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "content")
        column = layout.column()
        column.enabled = self.content == "RIGGED"
        column.prop(self, "include_body")
        column.prop(self, "include_animation")

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..lca_blender.addon.blender_rig import to_world
        from ..lca_blender.avatar import Splats
        from ..lca_blender.errors import AvatarError
        from ..lca_blender.formats.gltf import write_avatar_glb, write_splats_glb

        splats_object = active_avatar_splats(context)
        name = splats_object.lca.avatar_name or splats_object.name
        context.view_layer.update()
        try:
            if self.content == "POSED":
                preview = state.get_preview(splats_object.name)
                if preview is None:
                    preview = posing.pose_splats(splats_object, context.evaluated_depsgraph_get())
                settings = splats_object.lca
                splats = Splats(
                    means=preview.means,
                    rotations=preview.rotations,
                    scales=preview.scales * settings.splat_scale,
                    opacities=np.clip(preview.opacities * settings.opacity, 0.0, 1.0),
                    sh=preview.sh,
                )
                write_splats_glb(self.filepath, splats, name=name)
                self.report({"INFO"}, f"Wrote {splats.count} posed splats to {self.filepath}")
                return {"FINISHED"}
            source = scene_avatar(splats_object)
            body_matrix = np.array(source.body.matrix_world)
            avatar, pose = to_world(source.avatar, source.pose_now(), body_matrix)
            animation = _scene_animation(context, source) if self.include_animation else None
            write_avatar_glb(
                self.filepath,
                avatar,
                pose,
                source.expressions_now(),
                animation=animation,
                body=self.include_body,
                name=name,
            )
        except AvatarError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Wrote the rigged avatar ({avatar.gaussian_count} splats) to {self.filepath}")
        return {"FINISHED"}


def _export_menu_entry(menu: bpy.types.Menu, context: bpy.types.Context) -> None:
    menu.layout.operator(LCA_OT_export_gltf.bl_idname, text="LCA Gaussian avatar (.glb)")


classes: tuple[type, ...] = (LCA_OT_export_gltf,)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.TOPBAR_MT_file_export.append(_export_menu_entry)


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_export.remove(_export_menu_entry)
    _unregister_classes()
