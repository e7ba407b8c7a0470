"""Motion onto the avatar: retarget another armature's animation (BVH, FBX: Mixamo, CMU, Rokoko, ...)
and import SMPL-X / AMASS motion, baked to keyframes on the avatar's bones.

The maths is in `lca_blender/maths/retarget.py` and the bone maps in `lca_blender/formats/bone_map.py`;
this module reads the armatures' bones and the source's posed bones frame by frame, and keys the
result (one key a frame, linear; keys already in that range on those channels are replaced).
Menus: Object ▸ Animation ▸ Retarget Motion onto Avatar, File ▸ Import ▸ AMASS / SMPL-X motion.
"""

from __future__ import annotations

import dataclasses

import bpy
import numpy as np
from bpy_extras.io_utils import ExportHelper, ImportHelper

from .animation import avatar_armature, avatar_body
from .face_capture import _action, key_bone_rotation, key_curve
from .gltf_export import _matrices

BUILTIN_CHOICES = (
    ("mixamo", "Mixamo", "Mixamo characters and animations (mixamorig:Hips, ...)"),
    ("cmu_bvh", "CMU BVH", "BVH named as the CMU motion-capture database's (Hips, LowerBack, LThumb, ...)"),
    ("smplx", "SMPL-X", "SMPL-X's joint names (pelvis, left_hip, ...)"),
)
_source_items: list[tuple[str, str, str]] = []  # kept alive: Blender does not copy enum item strings


def _source_armatures(operator: bpy.types.Operator, context: bpy.types.Context) -> list[tuple[str, str, str]]:
    target = avatar_armature(context.active_object) if context else None
    _source_items[:] = [
        (obj.name, obj.name, f"Retarget the animation of '{obj.name}'")
        for obj in (context.scene.objects if context else ())
        if obj.type == "ARMATURE" and obj != target
    ] or [("", "(no other armature)", "Import a BVH or FBX animation first")]
    return _source_items


def armature_skeleton(armature: bpy.types.Object, world: bool):
    """The armature's bones as a retargeting Skeleton: in the world (`world`), else in the armature's
    own space. Its floor is the armature object's origin height, its lowest point its lowest bone."""
    from ..lca_blender.maths.retarget import Skeleton

    bones = armature.data.bones
    count = len(bones)
    rest = _matrices(bones, count, "matrix_local")
    tails = np.empty(count * 3, np.float32)
    bones.foreach_get("tail_local", tails)
    tails = tails.reshape(-1, 3).astype(np.float64)
    floor = 0.0
    if world:
        matrix = np.array(armature.matrix_world)
        rest = matrix @ rest
        tails = tails @ matrix[:3, :3].T + matrix[:3, 3]
        floor = float(matrix[2, 3])
    lowest = float(min(rest[:, 2, 3].min(), tails[:, 2].min()))
    return Skeleton(
        names=tuple(bone.name for bone in bones),
        parents=np.array([bones.find(bone.parent.name) if bone.parent else -1 for bone in bones]),
        rest=rest,
        floor=floor,
        lowest=lowest,
    )


def _with_soles(skeleton, armature: bpy.types.Object):
    """The avatar's skeleton with its soles' height (its body's lowest vertex, in the armature's
    space) as its lowest point, when it has a body."""
    body = avatar_body(armature)
    if body is None or not len(body.data.vertices):
        return skeleton
    vertices = np.empty(len(body.data.vertices) * 3, np.float32)
    body.data.vertices.foreach_get("co", vertices)
    to_armature = np.linalg.inv(np.array(armature.matrix_world)) @ np.array(body.matrix_world)
    heights = vertices.reshape(-1, 3).astype(np.float64) @ to_armature[2, :3] + to_armature[2, 3]
    return dataclasses.replace(skeleton, lowest=float(heights.min()))


def key_motion(
    armature: bpy.types.Object,
    frames: np.ndarray,
    rotations: np.ndarray,
    translations: np.ndarray | None,
    driven: np.ndarray,
    action_name: str,
) -> int:
    """Key a retargeted motion on the armature: rotations [T, J, 4] of the driven bones and, when
    given, the root's offset [T, 3] (armature space) as its location. Returns the bones keyed."""
    action = _action(armature, action_name)
    bones = armature.data.bones
    for index in np.flatnonzero(driven):
        key_bone_rotation(armature, bones[int(index)].name, frames, rotations[:, index])
    if translations is not None:
        root = next(bone for bone in bones if bone.parent is None)
        rest = np.array(root.matrix_local)[:3, :3]
        # A root pose bone's location is in its rest frame: world head = rest head + R_rest location.
        location = translations @ rest
        path = f'pose.bones["{bpy.utils.escape_identifier(root.name)}"].location'
        for axis in range(3):
            key_curve(armature, action, path, axis, frames, location[:, axis], group=root.name)
    return int(driven.sum())


class LCA_OT_retarget_motion(bpy.types.Operator):
    """Bake another armature's animation (an imported BVH or FBX: Mixamo, CMU, Rokoko, ...) onto the
    avatar's bones over its frame range, through a bone map, whatever either rest pose"""

    bl_idname = "lca.retarget_motion"
    bl_label = "Retarget Motion onto Avatar"
    bl_options = {"REGISTER", "UNDO"}

    source: bpy.props.EnumProperty(
        name="Source", description="The armature whose animation drives the avatar", items=_source_armatures
    )
    bone_map: bpy.props.EnumProperty(
        name="Bone map",
        items=(
            ("AUTO", "Automatic", "The built-in map that finds the most of the source's bones"),
            *BUILTIN_CHOICES,
            ("FILE", "From file", "A bone map JSON file (save a built-in one to start from)"),
        ),
        default="AUTO",
    )
    bone_map_file: bpy.props.StringProperty(name="Bone map file", subtype="FILE_PATH")
    use_root_motion: bpy.props.BoolProperty(
        name="Root motion",
        description="Move the avatar as the source's hips move (scaled by height)",
        default=True,
    )
    use_fingers: bpy.props.BoolProperty(
        name="Fingers", description="Drive the fingers when the source has them", default=True
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if avatar_armature(context.active_object) is None:
            cls.poll_message_set("Select the avatar (its armature or body) to retarget motion onto")
            return False
        return True

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..lca_blender.errors import AvatarError

        target = avatar_armature(context.active_object)
        source = context.scene.objects.get(self.source)
        if source is None or source.type != "ARMATURE" or source == target:
            self.report(
                {"ERROR"}, "Choose the armature whose animation drives the avatar (import a BVH or FBX)."
            )
            return {"CANCELLED"}
        try:
            message = self._retarget(context, source, target)
        except AvatarError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, message)
        return {"FINISHED"}

    def _bone_map(self, source_names):
        from ..lca_blender.formats.bone_map import best_bone_map, builtin_bone_map, read_bone_map

        if self.bone_map == "AUTO":
            return best_bone_map(source_names)
        if self.bone_map == "FILE":
            return read_bone_map(bpy.path.abspath(self.bone_map_file))
        return builtin_bone_map(self.bone_map)

    def _retarget(
        self, context: bpy.types.Context, source: bpy.types.Object, target: bpy.types.Object
    ) -> str:
        from ..lca_blender.errors import AvatarError
        from ..lca_blender.formats.bone_map import correspondence
        from ..lca_blender.maths.retarget import retarget

        action = source.animation_data.action if source.animation_data else None
        if action is None:
            raise AvatarError(f"'{source.name}' has no animation to retarget.")
        first, last = (int(round(frame)) for frame in action.frame_range)
        frames = np.arange(first, last + 1)
        source_skeleton = armature_skeleton(source, world=True)
        target_skeleton = _with_soles(armature_skeleton(target, world=False), target)
        bone_map = self._bone_map(source_skeleton.names)
        pairs = correspondence(bone_map, source_skeleton.names, target_skeleton.names, self.use_fingers)

        scene = context.scene
        current = scene.frame_current
        window_manager = context.window_manager
        poses = np.empty((len(frames), len(source_skeleton.names), 4, 4))
        window_manager.progress_begin(0, len(frames))
        try:
            for row, frame in enumerate(frames):
                scene.frame_set(int(frame))
                pose_bones = source.pose.bones
                poses[row] = np.array(source.matrix_world) @ _matrices(pose_bones, len(pose_bones), "matrix")
                window_manager.progress_update(row)
        finally:
            window_manager.progress_end()
            scene.frame_set(current)
        motion = retarget(source_skeleton, poses, target_skeleton, pairs, self.use_root_motion)
        keyed = key_motion(
            target,
            frames.astype(np.float32),
            motion.rotations,
            motion.translations if self.use_root_motion else None,
            motion.driven,
            f"{target.name}_{source.name}",
        )
        scene.frame_set(current)
        return (
            f"Retargeted '{source.name}' with the {bone_map.name} map: {len(pairs.target)} bones matched, "
            f"{keyed} keyed on frames {first}-{last}, height ratio {motion.height_ratio:.3f}"
        )


class LCA_OT_save_bone_map(bpy.types.Operator, ExportHelper):
    """Save a built-in bone map as JSON, to edit for another skeleton's bone names and load in
    Retarget Motion"""

    bl_idname = "lca.save_bone_map"
    bl_label = "Save Bone Map"
    bl_options = {"REGISTER"}

    filename_ext = ".json"
    filter_glob: bpy.props.StringProperty(default="*.json", options={"HIDDEN"})
    bone_map: bpy.props.EnumProperty(name="Bone map", items=BUILTIN_CHOICES)

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..lca_blender.errors import AvatarError
        from ..lca_blender.formats.bone_map import builtin_bone_map, write_bone_map

        try:
            write_bone_map(self.filepath, builtin_bone_map(self.bone_map))
        except AvatarError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Saved the {self.bone_map} bone map to {self.filepath}")
        return {"FINISHED"}


class LCA_OT_import_amass(bpy.types.Operator, ImportHelper):
    """Key SMPL-X / AMASS motion (.npz) on the avatar's bones from the current frame, at the scene's
    frame rate (an SMPL-X avatar's own joints, else a generic SMPL-X skeleton, are the source's rest)"""

    bl_idname = "lca.import_amass"
    bl_label = "Import AMASS Motion"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".npz"
    filter_glob: bpy.props.StringProperty(default="*.npz", options={"HIDDEN"})
    use_root_motion: bpy.props.BoolProperty(
        name="Root motion", description="Move the avatar as the subject's pelvis moves", default=True
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if avatar_armature(context.active_object) is None:
            cls.poll_message_set("Select the avatar (its armature or body) to key the motion on")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..lca_blender.errors import AvatarError
        from ..lca_blender.formats.amass import (
            SMPLX_JOINT_NAMES,
            SMPLX_TO_OURS,
            read_amass,
            smplx_poses,
            smplx_skeleton,
        )
        from ..lca_blender.formats.animation import AnimationClip
        from ..lca_blender.formats.bone_map import builtin_bone_map, correspondence
        from ..lca_blender.formats.motion import jaw_open_weights, resample_clip
        from ..lca_blender.maths.retarget import retarget

        target = avatar_armature(context.active_object)
        scene = context.scene
        fps = scene.render.fps / scene.render.fps_base
        try:
            motion = read_amass(self.filepath)
            target_skeleton = _with_soles(armature_skeleton(target, world=False), target)
            rest_joints = sole = None
            if target_skeleton.names == SMPLX_JOINT_NAMES:
                rest_joints = target_skeleton.heads @ SMPLX_TO_OURS
            skeleton = smplx_skeleton(rest_joints, sole)
            pairs = correspondence(
                builtin_bone_map("smplx"), skeleton.names, target_skeleton.names, motion.has_hands
            )
            retargeted = retarget(
                skeleton,
                smplx_poses(motion, skeleton, rest_joints),
                target_skeleton,
                pairs,
                self.use_root_motion,
            )
            jaw = jaw_open_weights(motion)[:, None]
            clip = resample_clip(
                AnimationClip(
                    motion.frame_rate,
                    retargeted.rotations.astype(np.float32),
                    retargeted.translations.astype(np.float32),
                    jaw.astype(np.float32),
                ),
                fps,
            )
        except AvatarError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        frames = scene.frame_current + np.arange(clip.frame_count, dtype=np.float32)
        key_motion(
            target,
            frames,
            clip.rotations,
            clip.translations if self.use_root_motion else None,
            retargeted.driven,
            f"{target.name}_amass",
        )
        body = avatar_body(target)
        keys = body.data.shape_keys if body is not None else None
        if keys is not None and "jawOpen" in keys.key_blocks and "jaw" not in target.data.bones:
            key_curve(
                keys,
                _action(keys, f"{body.name}_amass"),
                'key_blocks["jawOpen"].value',
                0,
                frames,
                clip.expression_weights[:, 0],
            )
        scene.frame_set(scene.frame_current)
        self.report(
            {"INFO"},
            f"Keyed {motion.frame_count} frames of AMASS motion as {clip.frame_count} at {fps:g} fps "
            f"({len(pairs.target)} joints{', fingers' if motion.has_hands else ''})",
        )
        return {"FINISHED"}


def _animation_menu_entry(menu: bpy.types.Menu, context: bpy.types.Context) -> None:
    menu.layout.separator()
    menu.layout.operator_context = "INVOKE_DEFAULT"
    menu.layout.operator(LCA_OT_retarget_motion.bl_idname, text="Retarget Motion onto Avatar")
    menu.layout.operator(LCA_OT_save_bone_map.bl_idname, text="Save Bone Map…")


def _import_menu_entry(menu: bpy.types.Menu, context: bpy.types.Context) -> None:
    menu.layout.operator(LCA_OT_import_amass.bl_idname, text="AMASS / SMPL-X motion (.npz) onto avatar")


classes: tuple[type, ...] = (LCA_OT_retarget_motion, LCA_OT_save_bone_map, LCA_OT_import_amass)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.VIEW3D_MT_object_animation.append(_animation_menu_entry)
    bpy.types.VIEW3D_MT_pose.append(_animation_menu_entry)
    bpy.types.TOPBAR_MT_file_import.append(_import_menu_entry)


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_import.remove(_import_menu_entry)
    bpy.types.VIEW3D_MT_pose.remove(_animation_menu_entry)
    bpy.types.VIEW3D_MT_object_animation.remove(_animation_menu_entry)
    _unregister_classes()
