"""Motion onto an avatar: BVH, SMPL-X / AMASS and face captures as the avatar's animation clip.

Each source becomes an `AnimationClip` of the avatar's rig (`formats/animation.py`) at the
source's frame rate: body motion is retargeted (`maths/retarget.py`) through a bone map
(`formats/bone_map.py`); a face capture keys the 52 ARKit expressions and the head and eye bones,
as the Blender import does. `select_frames` and `resample_clip` cut and retime a clip.
"""

from __future__ import annotations

import math
import re

import numpy as np

from ..avatar import ARKIT_EXPRESSIONS, Rig
from ..errors import PoseError
from ..maths.retarget import RetargetedMotion, Skeleton, retarget
from ..maths.rotations import quaternion_multiply
from .amass import SMPLX_JOINT_NAMES, SMPLX_TO_OURS, SmplxMotion, smplx_poses, smplx_skeleton
from .animation import AnimationClip
from .bone_map import BoneMap, best_bone_map, builtin_bone_map, correspondence
from .bvh import BvhMotion, bvh_poses, bvh_skeleton
from .face_capture import FaceCapture, bone_rotations, resample, yaw_pitch_roll_quaternions

JAW_OPEN_RADIANS = 0.45
"""SMPL-X jaw turn (about its X axis) that opens the mouth fully: `jawOpen` 1 on an ARKit avatar."""
HEAD_BONE, EYE_BONES = "head", ("eye.L", "eye.R")


def rig_skeleton(rig: Rig) -> Skeleton:
    """The rig's bones as a retargeting skeleton, standing at rest on the floor under its soles."""
    soles = float(rig.vertices[:, 2].min())
    return Skeleton(
        names=tuple(rig.joint_names),
        parents=rig.joint_parents.astype(np.int64),
        rest=rig.rest_transforms.astype(np.float64),
        floor=soles,
        lowest=soles,
    )


def clip_from_retargeted(rig: Rig, motion: RetargetedMotion, frame_rate: float, name: str) -> AnimationClip:
    """An AnimationClip of `rig` holding a retargeted motion (no expressions)."""
    count = len(motion.rotations)
    return AnimationClip(
        frame_rate=float(frame_rate),
        rotations=motion.rotations.astype(np.float32),
        translations=motion.translations.astype(np.float32),
        expression_weights=np.zeros((count, len(rig.expression_names)), np.float32),
        name=name,
    )


def clip_from_bvh(
    rig: Rig,
    bvh: BvhMotion,
    bone_map: BoneMap | None = None,
    fingers: bool = True,
    root_motion: bool = True,
    name: str = "bvh",
) -> AnimationClip:
    """The BVH motion retargeted onto `rig` through `bone_map` (None: the built-in map that fits)."""
    skeleton = bvh_skeleton(bvh)
    bone_map = bone_map or best_bone_map(skeleton.names)
    pairs = correspondence(bone_map, skeleton.names, rig.joint_names, fingers)
    motion = retarget(skeleton, bvh_poses(bvh, skeleton), rig_skeleton(rig), pairs, root_motion)
    return clip_from_retargeted(rig, motion, bvh.frame_rate, name)


def is_smplx_rig(rig: Rig) -> bool:
    return rig.joint_names == list(SMPLX_JOINT_NAMES)


def clip_from_amass(
    rig: Rig,
    motion: SmplxMotion,
    rest_joints: np.ndarray | None = None,
    sole_height: float | None = None,
    root_motion: bool = True,
    name: str = "amass",
) -> AnimationClip:
    """SMPL-X / AMASS motion on `rig` (Anny's or SMPL-X's joints). `rest_joints` [55, 3] are the
    subject's SMPL-X rest joints in SMPL-X's frame and `sole_height` its soles' Y (from the model
    file); None takes them from the rig when it is an SMPL-X rig, else the generic skeleton's. The
    jaw opens `jawOpen` on an avatar with ARKit expressions and no jaw bone."""
    if rest_joints is None and is_smplx_rig(rig):
        # The rig's heads are SMPL-X's joints turned into our frame: turn them back.
        rest_joints = rig.bone_heads.astype(np.float64) @ SMPLX_TO_OURS
        sole_height = float(rig.vertices[:, 2].min())
    skeleton = smplx_skeleton(rest_joints, sole_height)
    pairs = correspondence(builtin_bone_map("smplx"), skeleton.names, rig.joint_names, motion.has_hands)
    poses = smplx_poses(motion, skeleton, rest_joints)
    retargeted = retarget(skeleton, poses, rig_skeleton(rig), pairs, root_motion)
    clip = clip_from_retargeted(rig, retargeted, motion.frame_rate, name)
    if "jawOpen" in rig.expression_names and "jaw" not in rig.joint_names:
        clip.expression_weights[:, rig.expression_names.index("jawOpen")] = jaw_open_weights(motion)
    return clip


def jaw_open_weights(motion: SmplxMotion) -> np.ndarray:
    """[T] the ARKit `jawOpen` weight that stands for SMPL-X's jaw turn (about its X axis)."""
    jaw = motion.axis_angles[:, SMPLX_JOINT_NAMES.index("jaw"), 0]
    return np.clip(jaw / JAW_OPEN_RADIANS, 0.0, 1.0).astype(np.float32)


def clip_from_face_capture(
    rig: Rig, capture: FaceCapture, frame_rate: float | None = None, name: str = "face"
) -> AnimationClip:
    """A face capture on `rig` at `frame_rate` (None: the capture's own, else 30): its expressions by
    ARKit name, and the head and eye bones turned by its yaw, pitch and roll (the rest stays)."""
    frame_rate = frame_rate or capture.frame_rate or 30.0
    sampled = resample(capture, frame_rate)
    count = sampled.frame_count
    weights = np.zeros((count, len(rig.expression_names)), np.float32)
    for index, expression in enumerate(ARKIT_EXPRESSIONS):
        if sampled.expressions_present[index] and expression in rig.expression_names:
            weights[:, rig.expression_names.index(expression)] = sampled.weights[:, index]
    rotations = np.zeros((count, rig.joint_count, 4), np.float32)
    rotations[..., 0] = 1.0
    turns = []
    if sampled.has_head:
        turns.append((HEAD_BONE, sampled.head))
    if sampled.has_eyes:
        turns += [(EYE_BONES[0], sampled.left_eye), (EYE_BONES[1], sampled.right_eye)]
    for bone, angles in turns:
        if bone in rig.joint_names:
            joint = rig.joint_index(bone)
            rest = rig.rest_transforms[joint, :3, :3].astype(np.float64)
            rotations[:, joint] = bone_rotations(rest, yaw_pitch_roll_quaternions(angles))
    return AnimationClip(
        frame_rate=float(frame_rate),
        rotations=rotations,
        translations=np.zeros((count, 3), np.float32),
        expression_weights=weights,
        name=name,
    )


_FRAMES = re.compile(r"^\s*(\d*)\s*:\s*(\d*)\s*$")


def select_frames(clip: AnimationClip, spec: str) -> AnimationClip:
    """The clip's frames A to B, both included, from "A:B" (0-based source frames; "A:" to the end,
    ":B" from the start)."""
    match = _FRAMES.match(spec)
    if match is None:
        raise PoseError(f"--frames takes A:B (first and last frame, from 0), got '{spec}'.")
    first = int(match[1]) if match[1] else 0
    last = int(match[2]) if match[2] else clip.frame_count - 1
    if not first <= last < clip.frame_count:
        raise PoseError(
            f"Frames {first}:{last} are outside the motion's {clip.frame_count} frames "
            f"(0 to {clip.frame_count - 1})."
        )
    part = slice(first, last + 1)
    return AnimationClip(
        frame_rate=clip.frame_rate,
        rotations=clip.rotations[part].copy(),
        translations=clip.translations[part].copy(),
        expression_weights=clip.expression_weights[part].copy(),
        name=clip.name,
    )


def resample_clip(clip: AnimationClip, frame_rate: float) -> AnimationClip:
    """The clip at `frame_rate` frames a second over the same time span: rotations along the
    shortest arc, translations and expression weights linearly."""
    if not (math.isfinite(frame_rate) and 0 < frame_rate <= 1000):
        raise PoseError(f"The frame rate must be above 0 and at most 1000, got {frame_rate}.")
    if math.isclose(frame_rate, clip.frame_rate):
        return clip
    duration = (clip.frame_count - 1) / clip.frame_rate
    times = np.arange(int(math.floor(duration * frame_rate + 1e-6)) + 1) / frame_rate
    position = times * clip.frame_rate
    before = np.minimum(np.floor(position).astype(np.int64), clip.frame_count - 1)
    after = np.minimum(before + 1, clip.frame_count - 1)
    fraction = (position - before)[:, None]

    def blend(values: np.ndarray) -> np.ndarray:
        return (values[before] * (1 - fraction) + values[after] * fraction).astype(np.float32)

    return AnimationClip(
        frame_rate=float(frame_rate),
        rotations=_slerp(clip.rotations[before], clip.rotations[after], fraction[:, :, None]),
        translations=blend(clip.translations),
        expression_weights=blend(clip.expression_weights),
        name=clip.name,
    )


def _slerp(a: np.ndarray, b: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Quaternions [..., 4] from a to b along the shortest arc, `fraction` [..., 1] of the way."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    dot = np.sum(a * b, axis=-1, keepdims=True)
    b = np.where(dot < 0, -b, b)
    dot = np.abs(dot)
    # The turn from a to b, raised to the fraction: a * (a^-1 b)^t.
    relative = quaternion_multiply(a * np.array([1.0, -1.0, -1.0, -1.0]), b)
    angle = np.arccos(np.clip(dot, -1.0, 1.0))
    axis = relative[..., 1:] / np.maximum(np.linalg.norm(relative[..., 1:], axis=-1, keepdims=True), 1e-12)
    partial = np.concatenate([np.cos(angle * fraction), axis * np.sin(angle * fraction)], axis=-1)
    result = quaternion_multiply(a, partial)
    return (result / np.linalg.norm(result, axis=-1, keepdims=True)).astype(np.float32)
