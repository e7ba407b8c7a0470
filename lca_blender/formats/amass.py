"""SMPL-X / AMASS motion (.npz): per-frame axis-angle rotations of SMPL-X's 55 joints and a translation.

What is read (with `np.load(allow_pickle=False)`; only these keys, each checked before it is
loaded, so a file's Python objects are never touched):

- `poses` [T, 165] (SMPL-X: root, 21 body joints, jaw, two eyes, 15 + 15 finger joints, 3 numbers
  each) or [T, 156] (SMPL+H: root, 21 body joints, 15 + 15 finger joints); or the split keys
  `root_orient` [T, 3], `pose_body` [T, 63], `pose_hand` [T, 90], `pose_jaw` [T, 3], `pose_eye` [T, 6];
- `trans` [T, 3] metres; `mocap_frame_rate` (SMPL-X files) or `mocap_framerate` (SMPL+H); `betas`.

AMASS's world is Z up with the floor at z = 0, which is the project's frame, so the motion needs
no turn. SMPL-X's own (rest) frame is Y up, facing +Z; its joints rest with no rotation in a
T-pose, and a joint's axis-angle turns it about SMPL-X's axes as carried by its parent: forward
kinematics G_j = G_parent R_j, joint_j = joint_parent + G_parent (J_j - J_parent), and the pelvis
at J_0 + trans. Finger rotations are taken as relative to the flat hand (AMASS stores them so).

Rest joint positions J come from the SMPL-X model for the subject's `betas` when the user has the
model file (see `bodies/smplx_body.py`); without it, `GENERIC_SMPLX_JOINTS` is a T-posed skeleton
of ordinary proportions made for this project (not taken from the model): retargeting needs the
rest's bone directions, which every SMPL-X body shares closely, and a hip height.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AvatarFileError
from ..maths.retarget import Skeleton
from ..maths.rotations import axis_angle_to_quaternion, bone_matrix, quaternion_to_matrix
from .reading import open_regular_file

SMPLX_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "jaw", "left_eye_smplhf", "right_eye_smplhf",
    "left_index1", "left_index2", "left_index3", "left_middle1", "left_middle2", "left_middle3",
    "left_pinky1", "left_pinky2", "left_pinky3", "left_ring1", "left_ring2", "left_ring3",
    "left_thumb1", "left_thumb2", "left_thumb3",
    "right_index1", "right_index2", "right_index3", "right_middle1", "right_middle2",
    "right_middle3", "right_pinky1", "right_pinky2", "right_pinky3", "right_ring1", "right_ring2",
    "right_ring3", "right_thumb1", "right_thumb2", "right_thumb3",
)  # fmt: skip
"""SMPL-X's 55 skinned joints in the model's order (also the order of its full pose vector)."""

SMPLX_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)  # fmt: skip
"""SMPL-X's kinematic tree: each joint's parent (the model files' `kintree_table[0]`)."""

SMPLX_TO_OURS = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""SMPL-X's rest frame (Y up, facing +Z) -> the project's (Z up, facing -Y)."""

_CENTRE = {
    "pelvis": (0.0, 0.0, 0.0), "spine1": (0.0, 0.10, -0.015), "spine2": (0.0, 0.23, 0.0),
    "spine3": (0.0, 0.29, 0.01), "neck": (0.0, 0.50, -0.02), "head": (0.0, 0.60, 0.01),
    "jaw": (0.0, 0.57, 0.06),
}  # fmt: skip
_LEFT = {
    "hip": (0.06, -0.08, -0.01), "knee": (0.10, -0.46, 0.0), "ankle": (0.08, -0.86, -0.04),
    "foot": (0.11, -0.92, 0.08), "collar": (0.07, 0.41, 0.0), "shoulder": (0.18, 0.45, -0.02),
    "elbow": (0.44, 0.44, -0.03), "wrist": (0.69, 0.44, -0.03), "eye_smplhf": (0.03, 0.66, 0.09),
    "index1": (0.78, 0.435, 0.025), "index2": (0.815, 0.435, 0.025), "index3": (0.84, 0.435, 0.025),
    "middle1": (0.785, 0.435, 0.0), "middle2": (0.825, 0.435, 0.0), "middle3": (0.85, 0.435, 0.0),
    "pinky1": (0.76, 0.43, -0.04), "pinky2": (0.785, 0.43, -0.04), "pinky3": (0.805, 0.43, -0.04),
    "ring1": (0.775, 0.435, -0.02), "ring2": (0.81, 0.435, -0.02), "ring3": (0.835, 0.435, -0.02),
    "thumb1": (0.72, 0.425, 0.025), "thumb2": (0.745, 0.415, 0.05), "thumb3": (0.77, 0.41, 0.065),
}  # fmt: skip
GENERIC_SOLE_HEIGHT = -0.95
"""Metres, SMPL-X's Y: where the generic skeleton's soles are (its pelvis is at 0)."""

MAX_AMASS_BYTES = 1024**3
MAX_ARRAY_BYTES = 512 * 1024**2
MAX_FRAME_RATE = 1000.0
MAX_TRANSLATION = 1e4
_FULL = {165: "smplx", 156: "smplh"}


def generic_smplx_joints() -> np.ndarray:
    """[55, 3] a generic SMPL-X rest skeleton (T-pose, metres, SMPL-X's frame; see the docstring)."""
    joints = []
    for name in SMPLX_JOINT_NAMES:
        side, _, part = name.partition("_")
        if name in _CENTRE:
            joints.append(_CENTRE[name])
        else:
            x, y, z = _LEFT[part]
            joints.append((x if side == "left" else -x, y, z))
    return np.array(joints)


@dataclass(frozen=True)
class SmplxMotion:
    """SMPL-X (or SMPL+H) motion: every joint's axis-angle, frame by frame, and the translation."""

    frame_rate: float
    axis_angles: np.ndarray  # [T, 55, 3] float64 radians, SMPL-X's joint order
    translations: np.ndarray  # [T, 3] float64 metres (`trans`)
    has_hands: bool  # whether the fingers move (many AMASS takes hold flat hands)
    betas: np.ndarray | None = None  # [B] the subject's shape, when the file has it

    @property
    def frame_count(self) -> int:
        return int(self.axis_angles.shape[0])


def _amass_error(source: str, reason: str) -> AvatarFileError:
    return AvatarFileError(f"'{source}' is not SMPL-X / AMASS motion this can read: {reason}.")


def read_amass(path: str | os.PathLike) -> SmplxMotion:
    """Read an AMASS / SMPL-X motion .npz (see the module docstring)."""
    source = Path(path)
    try:
        with open_regular_file(source) as handle:
            if os.fstat(handle.fileno()).st_size > MAX_AMASS_BYTES:
                raise _amass_error(source.name, "it is larger than 1 GB")
            try:
                archive = np.load(handle, allow_pickle=False)
            except OSError:
                raise
            except Exception as error:  # a damaged zip directory raises many kinds, see _motion_from_archive
                raise _amass_error(source.name, f"it is not an .npz archive ({error})") from None
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise _amass_error(source.name, "it holds a single array, not an .npz archive")
            with archive:
                return _motion_from_archive(archive, source.name)
    except OSError as error:
        raise AvatarFileError(f"Cannot read '{source.name}': {error.strerror or error}.") from None


def _motion_from_archive(archive: np.lib.npyio.NpzFile, source: str) -> SmplxMotion:
    keys = set(archive.files)

    def array(key: str, columns: int | None) -> np.ndarray:
        info = next(item for item in archive.zip.infolist() if item.filename in (key, f"{key}.npy"))
        if info.file_size > MAX_ARRAY_BYTES:
            raise _amass_error(source, f"'{key}' is larger than 512 MB")
        try:
            values = archive[key]
        except ValueError as error:
            if "allow_pickle" in str(error):
                raise _amass_error(source, f"'{key}' holds Python objects rather than numbers") from None
            raise _amass_error(source, f"'{key}' is damaged ({error})") from None
        except Exception as error:
            # The member is untrusted bytes that zipfile, zlib and numpy's header parser take apart;
            # each damage raises its own kind (zlib.error, TokenError, NotImplementedError, ...).
            raise _amass_error(source, f"'{key}' cannot be read ({type(error).__name__}: {error})") from None
        if values.dtype.kind not in "fiu":
            raise _amass_error(source, f"'{key}' must hold numbers, found {values.dtype}")
        values = values.astype(np.float64)
        if columns is not None and (values.ndim != 2 or values.shape[1] != columns):
            raise _amass_error(source, f"'{key}' must have shape [frames, {columns}], found {values.shape}")
        if not np.isfinite(values).all():
            raise _amass_error(source, f"'{key}' holds NaN or infinite values")
        return values

    count = len(SMPLX_JOINT_NAMES)
    if "poses" in keys:
        poses = array("poses", None)
        if poses.ndim != 2 or poses.shape[1] not in _FULL:
            raise _amass_error(
                source, f"'poses' must have 165 (SMPL-X) or 156 (SMPL+H) columns, found shape {poses.shape}"
            )
        frames = len(poses)
        axis_angles = np.zeros((frames, count, 3))
        if poses.shape[1] == 165:
            axis_angles[:] = poses.reshape(frames, count, 3)
        else:  # SMPL+H: no jaw or eyes
            axis_angles[:, :22] = poses[:, :66].reshape(frames, 22, 3)
            axis_angles[:, 25:] = poses[:, 66:].reshape(frames, 30, 3)
    elif {"root_orient", "pose_body"} <= keys:
        root = array("root_orient", 3)
        frames = len(root)
        axis_angles = np.zeros((frames, count, 3))
        axis_angles[:, 0] = root
        for key, columns, first in (
            ("pose_body", 63, 1),
            ("pose_jaw", 3, 22),
            ("pose_eye", 6, 23),
            ("pose_hand", 90, 25),
        ):
            if key in keys:
                values = array(key, columns)
                if len(values) != frames:
                    raise _amass_error(source, f"'{key}' has {len(values)} frames, 'root_orient' {frames}")
                axis_angles[:, first : first + columns // 3] = values.reshape(frames, -1, 3)
            elif key == "pose_body":
                raise _amass_error(source, "it has 'root_orient' but no 'pose_body'")
    else:
        raise _amass_error(source, "it has neither 'poses' nor 'root_orient' and 'pose_body'")
    if not frames:
        raise _amass_error(source, "it has no frames")
    translations = np.zeros((frames, 3))
    if "trans" in keys:
        translations = array("trans", 3)
        if len(translations) != frames:
            raise _amass_error(source, f"'trans' has {len(translations)} frames, the poses {frames}")
        if np.abs(translations).max() > MAX_TRANSLATION:
            raise _amass_error(source, "'trans' moves the body over 10 km")
    rate_key = next((key for key in ("mocap_frame_rate", "mocap_framerate") if key in keys), None)
    if rate_key is None:
        raise _amass_error(source, "it has no frame rate ('mocap_frame_rate' or 'mocap_framerate')")
    rate = array(rate_key, None).reshape(-1)
    if rate.shape != (1,) or not 0 < rate[0] <= MAX_FRAME_RATE:
        raise _amass_error(source, f"'{rate_key}' must be one number above 0 and at most {MAX_FRAME_RATE:g}")
    betas = None
    if "betas" in keys:
        betas = array("betas", None).reshape(-1)[:300]
    if np.abs(axis_angles).max() > 100 * math.pi:
        raise _amass_error(source, "its rotations are far larger than any turn (are they in degrees?)")
    return SmplxMotion(
        frame_rate=float(rate[0]),
        axis_angles=axis_angles,
        translations=translations,
        has_hands=bool(np.abs(axis_angles[:, 25:]).max() > 1e-6),
        betas=betas,
    )


def smplx_skeleton(rest_joints: np.ndarray | None = None, sole_height: float | None = None) -> Skeleton:
    """SMPL-X's skeleton at rest in the project's frame, placed where AMASS puts a body that stands
    upright facing -Y with no translation: rest_joints [55, 3] (SMPL-X's frame; None: the generic
    skeleton) turned about the pelvis, which stays at J_0's numbers. `sole_height` is the soles' Y
    in SMPL-X's frame (None: the generic skeleton's, relative to the lowest joint)."""
    joints = generic_smplx_joints() if rest_joints is None else np.asarray(rest_joints, np.float64)
    if joints.shape != (len(SMPLX_JOINT_NAMES), 3) or not np.isfinite(joints).all():
        raise AvatarFileError(f"SMPL-X rest joints must be 55 finite points, found shape {joints.shape}.")
    if sole_height is None:
        sole_height = joints[:, 1].min() + (GENERIC_SOLE_HEIGHT - generic_smplx_joints()[:, 1].min())
    heads = joints[0] + (joints - joints[0]) @ SMPLX_TO_OURS.T
    parents = np.array(SMPLX_PARENTS, np.int64)
    tails = np.empty_like(heads)
    for joint, parent in enumerate(parents):
        children = np.flatnonzero(parents == joint)
        if len(children):
            tails[joint] = heads[children].mean(axis=0)
        else:  # a leaf continues from its parent, at half that distance
            tails[joint] = heads[joint] + 0.5 * (heads[joint] - heads[parent])
        if np.linalg.norm(tails[joint] - heads[joint]) < 1e-3:
            tails[joint] = heads[joint] + np.array([0.0, 0.0, 0.01])
    lowest = joints[0, 2] + (sole_height - joints[0, 1])
    return Skeleton(
        names=SMPLX_JOINT_NAMES,
        parents=parents,
        rest=bone_matrix(heads, tails, np.zeros(len(heads))),
        floor=0.0,
        lowest=float(lowest),
    )


def smplx_poses(motion: SmplxMotion, skeleton: Skeleton, rest_joints: np.ndarray | None = None) -> np.ndarray:
    """[T, 55, 4, 4] the skeleton's bones posed by the motion, in AMASS's world (see the docstring);
    `rest_joints` as given to `smplx_skeleton`."""
    joints = generic_smplx_joints() if rest_joints is None else np.asarray(rest_joints, np.float64)
    local = quaternion_to_matrix(axis_angle_to_quaternion(motion.axis_angles))  # [T, 55, 3, 3]
    count = motion.frame_count
    world = np.empty_like(local)
    positions = np.empty((count, len(SMPLX_PARENTS), 3))
    for joint, parent in enumerate(SMPLX_PARENTS):
        if parent < 0:
            world[:, joint] = local[:, joint]
            positions[:, joint] = joints[joint] + motion.translations
        else:
            world[:, joint] = world[:, parent] @ local[:, joint]
            positions[:, joint] = positions[:, parent] + world[:, parent] @ (joints[joint] - joints[parent])
    frames = np.zeros((count, len(SMPLX_PARENTS), 4, 4))
    # G maps SMPL-X's rest frame into the world; the skeleton's rest is SMPL-X's turned by A.
    frames[:, :, :3, :3] = world @ SMPLX_TO_OURS.T @ skeleton.rest[:, :3, :3]
    frames[:, :, :3, 3] = positions
    frames[:, :, 3, 3] = 1.0
    return frames
