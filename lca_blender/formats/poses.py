"""Poses from names and files: built-in presets for the Anny skeleton and a small JSON pose format.

A pose file (JSON) looks like:

    {"joints": {"upperarm01.L": {"euler_xyz_deg": [0, 0, 47]},
                "finger2-1.R": {"quaternion_wxyz": [0.9, 0.4, 0, 0]}},
     "translation": [0, 0, 0.1],
     "expressions": {"jawOpen": 0.7}}

Joint rotations are local to the bone's rest frame, exactly what a Blender pose bone shows in its
rotation fields (Euler XYZ in degrees, or a quaternion). Unlisted joints stay at rest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..avatar import FINGERS, Pose, Rig
from ..errors import PoseError
from ..maths.rotations import axis_angle_to_quaternion, quaternion_multiply

MAX_POSE_FILE_BYTES = 1024 * 1024


def _curl(side: str, fingers: tuple[str, ...], degrees: float) -> dict[str, dict[str, list[float]]]:
    # In this rig every phalanx bends towards the palm about its own +X axis, on both sides.
    return {
        f"{finger}-{phalanx}.{side}": {"euler_xyz_deg": [degrees * (0.6 if finger == "finger1" else 1), 0, 0]}
        for finger in fingers
        for phalanx in (1, 2, 3)
    }


PRESETS: dict[str, dict[str, Any]] = {
    "rest": {"joints": {}},
    "t-pose": {
        "joints": {
            "upperarm01.L": {"euler_xyz_deg": [0, 0, 47]},
            "upperarm01.R": {"euler_xyz_deg": [0, 0, -47]},
        }
    },
    "fists": {"joints": {**_curl("L", FINGERS, 70), **_curl("R", FINGERS, 70)}},
    "point": {
        "joints": {
            **_curl("R", ("finger1", "finger3", "finger4", "finger5"), 75),
            "upperarm01.R": {"euler_xyz_deg": [60, 0, -30]},
            "lowerarm01.R": {"euler_xyz_deg": [-20, 0, 0]},
        }
    },
    "wave": {
        "joints": {
            "upperarm01.R": {"euler_xyz_deg": [0, 90, -50]},
            "lowerarm01.R": {"euler_xyz_deg": [45, 0, 0]},
            "neck01": {"euler_xyz_deg": [0, 0, -10]},
        },
        "expressions": {"mouthSmileLeft": 0.8, "mouthSmileRight": 0.8},
    },
    "finger-curl-jaw-open": {
        "joints": {**_curl("L", ("finger2",), 80), **_curl("R", ("finger2", "finger3"), 80)},
        "expressions": {"jawOpen": 0.7},
    },
}


def euler_xyz_to_quaternion(degrees: np.ndarray) -> np.ndarray:
    """Blender's 'XYZ' Euler angles (degrees) -> quaternion (w, x, y, z): X first, then Y, then Z."""
    x, y, z = (math.radians(float(angle)) for angle in degrees)
    about_x = axis_angle_to_quaternion(np.array([x, 0.0, 0.0]))
    about_y = axis_angle_to_quaternion(np.array([0.0, y, 0.0]))
    about_z = axis_angle_to_quaternion(np.array([0.0, 0.0, z]))
    return quaternion_multiply(about_z, quaternion_multiply(about_y, about_x))


def pose_from_spec(rig: Rig, spec: Mapping[str, Any]) -> tuple[Pose, dict[str, float]]:
    """A Pose and expression weights from a pose dictionary (the JSON format above)."""
    if not isinstance(spec, Mapping):
        raise PoseError("A pose must be a JSON object with 'joints', 'translation' and 'expressions'.")
    unknown = set(spec) - {"joints", "translation", "expressions"}
    if unknown:
        raise PoseError(f"Unknown keys in the pose: {', '.join(sorted(unknown))}.")
    pose = Pose.rest(rig.joint_count)
    joints = spec.get("joints", {})
    if not isinstance(joints, Mapping):
        raise PoseError("'joints' must map joint names to rotations.")
    for name, rotation in joints.items():
        pose.rotations[rig.joint_index(name)] = _joint_rotation(name, rotation)
    if "translation" in spec:
        translation = _numbers(spec["translation"], 3, "translation")
        pose.translation[:] = translation
    expressions = spec.get("expressions", {})
    if not isinstance(expressions, Mapping):
        raise PoseError("'expressions' must map expression names to weights.")
    weights = {}
    for name, value in expressions.items():
        if name not in rig.expression_names:
            raise PoseError(f"Unknown expression '{name}'.")
        weights[name] = float(_numbers([value], 1, f"expression '{name}'")[0])
    return pose, weights


def _numbers(values: Any, count: int, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise PoseError(f"{what} must be a list of {count} numbers.") from None
    if array.shape != (count,) or not np.isfinite(array).all():
        raise PoseError(f"{what} must be a list of {count} finite numbers.")
    if np.abs(array).max(initial=0.0) > 1e6:
        raise PoseError(f"{what} holds a number too large to be a rotation, offset or weight.")
    return array


def _joint_rotation(name: str, rotation: Any) -> np.ndarray:
    if not isinstance(rotation, Mapping) or len(rotation) != 1:
        raise PoseError(f"Joint '{name}' needs exactly one of 'euler_xyz_deg' or 'quaternion_wxyz'.")
    ((kind, values),) = rotation.items()
    if kind == "euler_xyz_deg":
        return euler_xyz_to_quaternion(_numbers(values, 3, f"'{name}' euler_xyz_deg"))
    if kind == "quaternion_wxyz":
        quaternion = _numbers(values, 4, f"'{name}' quaternion_wxyz")
        norm = np.linalg.norm(quaternion)
        if norm < 1e-8:
            raise PoseError(f"Joint '{name}' has a zero quaternion.")
        return quaternion / norm
    raise PoseError(f"Joint '{name}': unknown rotation kind '{kind}' (use euler_xyz_deg or quaternion_wxyz).")


def load_pose(rig: Rig, name_or_path: str) -> tuple[Pose, dict[str, float]]:
    """A preset by name, or a pose JSON file by path."""
    if name_or_path in PRESETS:
        return pose_from_spec(rig, PRESETS[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        raise PoseError(f"'{name_or_path}' is neither a pose preset ({', '.join(PRESETS)}) nor a pose file.")
    if path.stat().st_size > MAX_POSE_FILE_BYTES:
        raise PoseError(f"The pose file '{path.name}' is too large to be a pose.")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise PoseError(f"Cannot read the pose file '{path.name}': {error.strerror or error}.") from None
    except RecursionError:
        raise PoseError(f"The pose file '{path.name}' is nested too deeply to be a pose.") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, integers of over 4300 digits
        raise PoseError(f"The pose file '{path.name}' is not valid JSON: {error}.") from None
    return pose_from_spec(rig, spec)
