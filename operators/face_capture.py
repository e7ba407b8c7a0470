"""Import a face capture (Live Link Face CSV, JSON lines) as keyframes on the avatar: the 52 ARKit
shape keys of its body and the rotations of its head and eye bones.

The capture is resampled to the scene's frame rate and keyed from the current frame on, one key a
frame, with linear interpolation; keys already in that range on those channels are replaced. The
parsing and the maths are in `lca_blender/formats/face_capture.py`.
"""

from __future__ import annotations

import bpy
import numpy as np
from bpy_extras.io_utils import ImportHelper
from mathutils import Quaternion

from .animation import avatar_armature, avatar_body

HEAD_BONE = "head"
EYE_BONES = ("eye.L", "eye.R")  # the subject's left and right eye (Live Link's LeftEye, RightEye)


def _action(datablock: bpy.types.ID, name: str) -> bpy.types.Action:
    """The datablock's action, made (and assigned) when it has none."""
    animation = datablock.animation_data or datablock.animation_data_create()
    if animation.action is None:
        animation.action = bpy.data.actions.new(name)
    return animation.action


def _fcurve(datablock: bpy.types.ID, action: bpy.types.Action, path: str, index: int, group: str):
    ensure = bpy.types.Action.bl_rna.functions.get("fcurve_ensure_for_datablock")
    if ensure is not None:  # Blender 4.4+: layered, slotted actions; groups by name from 5.0
        if "group_name" in ensure.parameters:
            return action.fcurve_ensure_for_datablock(datablock, path, index=index, group_name=group)
        return action.fcurve_ensure_for_datablock(datablock, path, index=index)
    curve = action.fcurves.find(path, index=index)
    return curve or action.fcurves.new(path, index=index, action_group=group)


def _linear() -> int:
    """The value foreach_set takes for LINEAR interpolation."""
    return bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value


def key_curve(
    datablock: bpy.types.ID,
    action: bpy.types.Action,
    path: str,
    index: int,
    frames: np.ndarray,
    values: np.ndarray,
    group: str = "",
) -> None:
    """Key `values` at `frames` (one per frame, linear) on one channel, replacing its keys in that range."""
    curve = _fcurve(datablock, action, path, index, group)
    points = curve.keyframe_points
    if len(points):
        old = np.empty(2 * len(points), np.float32)
        points.foreach_get("co", old)
        inside = np.flatnonzero((old[0::2] > frames[0] - 0.5) & (old[0::2] < frames[-1] + 0.5))
        for position in inside[::-1]:
            points.remove(points[int(position)], fast=True)
    kept = len(points)
    coordinates = np.empty(2 * (kept + len(frames)), np.float32)
    interpolation = np.empty(kept + len(frames), np.int32)
    if kept:
        points.foreach_get("co", coordinates[: 2 * kept])
        points.foreach_get("interpolation", interpolation[:kept])
    coordinates[2 * kept :: 2] = frames
    coordinates[2 * kept + 1 :: 2] = values
    interpolation[kept:] = _linear()
    points.add(len(frames))
    points.foreach_set("co", coordinates)
    points.foreach_set("interpolation", interpolation)
    curve.update()  # sorts the keys by frame and sets their handles


def key_bone_rotation(
    armature: bpy.types.Object, bone: str, frames: np.ndarray, rotations: np.ndarray
) -> None:
    """Key a pose bone's rotation (quaternions [T, 4] w, x, y, z) in whatever mode the bone has."""
    pose_bone = armature.pose.bones[bone]
    action = _action(armature, f"{armature.name}_face_capture")
    mode = pose_bone.rotation_mode
    if mode == "QUATERNION":
        path, channels = "rotation_quaternion", rotations
    elif mode == "AXIS_ANGLE":
        path = "rotation_axis_angle"
        channels = np.array(
            [(angle, *axis) for axis, angle in (Quaternion(q).to_axis_angle() for q in rotations)]
        )
    else:
        path, eulers = "rotation_euler", []
        for quaternion in rotations:
            # Each Euler close to the previous one, so the curves do not jump by full turns.
            euler = Quaternion(quaternion).to_euler(mode, *eulers[-1:])
            eulers.append(euler)
        channels = np.array([tuple(euler) for euler in eulers])
    data_path = f'pose.bones["{bpy.utils.escape_identifier(bone)}"].{path}'
    for index in range(channels.shape[1]):
        key_curve(armature, action, data_path, index, frames, channels[:, index], group=bone)


class LCA_OT_import_face_capture(bpy.types.Operator, ImportHelper):
    """Key the avatar's 52 ARKit expressions and its head and eye bones from a face capture
    (Live Link Face .csv or JSON lines), from the current frame at the scene's frame rate"""

    bl_idname = "lca.import_face_capture"
    bl_label = "Import Face Capture"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".csv"
    filter_glob: bpy.props.StringProperty(default="*.csv;*.jsonl;*.json;*.txt", options={"HIDDEN"})
    strength: bpy.props.FloatProperty(
        name="Expression strength",
        description="Multiplies every expression weight",
        default=1.0,
        min=0.0,
        max=3.0,
    )
    rotation_strength: bpy.props.FloatProperty(
        name="Rotation strength",
        description="Multiplies the head and eye angles",
        default=1.0,
        min=0.0,
        max=3.0,
    )
    smoothing: bpy.props.FloatProperty(
        name="Smoothing",
        description="Width of a Gaussian smoothing of the capture, in seconds (0: none)",
        default=0.0,
        min=0.0,
        max=1.0,
        subtype="TIME_ABSOLUTE",
        unit="TIME_ABSOLUTE",
    )
    use_head: bpy.props.BoolProperty(name="Head", description="Key the head bone's rotation", default=True)
    use_eyes: bpy.props.BoolProperty(name="Eyes", description="Key the eye bones' rotations", default=True)
    mirrored: bpy.props.BoolProperty(
        name="Mirrored", description="The capture was recorded mirrored: swap left and right", default=False
    )
    capture_frame_rate: bpy.props.FloatProperty(
        name="Capture frame rate",
        description="Frames per second of the recording's timecodes (0: find it from the timecodes)",
        default=0.0,
        min=0.0,
        max=1000.0,
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if avatar_body(context.active_object) is None:
            cls.poll_message_set("Select an imported LCA avatar (its body has the expression shape keys)")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..lca_blender.avatar import ARKIT_EXPRESSIONS
        from ..lca_blender.errors import AvatarError
        from ..lca_blender.formats.face_capture import (
            bone_rotations,
            read_face_capture,
            resample,
            yaw_pitch_roll_quaternions,
        )

        body = avatar_body(context.active_object)
        armature = avatar_armature(context.active_object)
        scene = context.scene
        fps = scene.render.fps / scene.render.fps_base
        try:
            capture = read_face_capture(self.filepath, self.capture_frame_rate or None)
            sampled = resample(
                capture, fps, self.strength, self.rotation_strength, self.smoothing, self.mirrored
            )
        except AvatarError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        frames = scene.frame_current + np.arange(sampled.frame_count, dtype=np.float32)

        shape_keys = body.data.shape_keys
        action = _action(shape_keys, f"{body.name}_face_capture")
        keyed = 0
        for index, name in enumerate(ARKIT_EXPRESSIONS):
            if sampled.expressions_present[index] and name in shape_keys.key_blocks:
                path = f'key_blocks["{bpy.utils.escape_identifier(name)}"].value'
                key_curve(shape_keys, action, path, 0, frames, sampled.weights[:, index])
                keyed += 1

        bones, wanted = [], []
        if self.use_head and sampled.has_head:
            wanted.append((HEAD_BONE, sampled.head))
        if self.use_eyes and sampled.has_eyes:
            wanted += [(EYE_BONES[0], sampled.left_eye), (EYE_BONES[1], sampled.right_eye)]
        missing = []
        for bone, angles in wanted:
            if armature is None or bone not in armature.data.bones:
                missing.append(bone)
                continue
            rest = np.array(armature.data.bones[bone].matrix_local, np.float64)[:3, :3]
            local = bone_rotations(rest, yaw_pitch_roll_quaternions(angles))
            key_bone_rotation(armature, bone, frames, local)
            bones.append(bone)

        scene.frame_set(scene.frame_current)
        message = (
            f"Keyed {keyed} expressions{' and ' + ', '.join(bones) if bones else ''} on frames "
            f"{int(frames[0])}-{int(frames[-1])} ({sampled.frame_count} frames at {fps:g} fps)"
        )
        if missing:
            message += f"; the rig has no bone {', '.join(missing)}"
        self.report({"WARNING"} if missing or keyed == 0 else {"INFO"}, message)
        return {"FINISHED"}


def _import_menu_entry(menu: bpy.types.Menu, context: bpy.types.Context) -> None:
    menu.layout.operator(LCA_OT_import_face_capture.bl_idname, text="Face capture (.csv, .jsonl)")


classes: tuple[type, ...] = (LCA_OT_import_face_capture,)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.TOPBAR_MT_file_import.append(_import_menu_entry)


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_import.remove(_import_menu_entry)
    _unregister_classes()
