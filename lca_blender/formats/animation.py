"""Animation clips: a rig's poses and expressions over time, and the JSON file that lists them.

An animation file (JSON) is a frame rate and a list of frames, each one a pose in the format of
`poses.py` (or the name of a preset):

    {"fps": 30,
     "name": "wave",
     "frames": [{"joints": {"upperarm01.R": {"euler_xyz_deg": [0, 90, -50]}}},
                {"joints": {"upperarm01.R": {"euler_xyz_deg": [0, 90, -40]}},
                 "expressions": {"jawOpen": 0.4}},
                "rest"]}

Frame k is shown at time k / fps seconds; between frames, rotations turn along the shortest arc
and translations and expression weights change linearly (what glTF's LINEAR interpolation does).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..avatar import Pose, Rig, shape_mismatch
from ..errors import PoseError
from .poses import PRESETS, pose_from_spec

MAX_ANIMATION_FILE_BYTES = 64 * 1024 * 1024
MAX_FRAME_RATE = 1000.0


@dataclass
class AnimationClip:
    """A rig's poses and expression weights, one per frame at a constant frame rate."""

    frame_rate: float  # frames per second
    rotations: np.ndarray  # [T, J, 4] float32 local joint rotations (w, x, y, z), identity = rest
    translations: np.ndarray  # [T, 3] float32 world offset of the whole body, metres
    expression_weights: np.ndarray  # [T, E] float32, in the rig's expression order
    name: str = "animation"

    def __post_init__(self) -> None:
        if not (isinstance(self.frame_rate, (int, float)) and 0 < self.frame_rate <= MAX_FRAME_RATE):
            raise PoseError(f"An animation's frame rate must be above 0 and at most {MAX_FRAME_RATE:g}.")
        count = int(np.shape(self.rotations)[0]) if np.ndim(self.rotations) == 3 else -1
        for label, values, shape in (
            ("rotations", self.rotations, (None, None, 4)),
            ("translations", self.translations, (count, 3)),
            ("expression weights", self.expression_weights, (count, None)),
        ):
            if not isinstance(values, np.ndarray) or values.dtype != np.float32:
                raise PoseError(f"The animation's {label} must be a float32 array.")
            wanted = shape_mismatch(values, shape)
            if wanted:
                raise PoseError(f"The animation's {label} must have shape {wanted}, found {values.shape}.")
            if not np.isfinite(values).all():
                raise PoseError(f"The animation's {label} contain NaN or infinite values.")
        if count == 0:
            raise PoseError("An animation needs at least one frame.")

    @property
    def frame_count(self) -> int:
        return int(self.rotations.shape[0])

    @property
    def times(self) -> np.ndarray:
        """[T] float64 seconds of each frame from the clip's start."""
        return np.arange(self.frame_count) / float(self.frame_rate)

    def pose(self, frame: int) -> Pose:
        return Pose(rotations=self.rotations[frame].copy(), translation=self.translations[frame].copy())

    def check_rig(self, rig: Rig) -> None:
        """Raise PoseError unless the clip fits `rig` (its joints and expressions)."""
        if self.rotations.shape[1] != rig.joint_count:
            raise PoseError(
                f"The animation poses {self.rotations.shape[1]} joints; the avatar has {rig.joint_count}."
            )
        if self.expression_weights.shape[1] != len(rig.expression_names):
            raise PoseError(
                f"The animation has {self.expression_weights.shape[1]} expression weights per frame; "
                f"the avatar has {len(rig.expression_names)} expressions."
            )
        norms = np.linalg.norm(self.rotations, axis=2)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise PoseError("Animation rotations must be unit quaternions (w, x, y, z).")


def clip_from_spec(rig: Rig, spec: Any) -> AnimationClip:
    """An AnimationClip from an animation dictionary (the JSON format above)."""
    if not isinstance(spec, dict):
        raise PoseError("An animation must be a JSON object with 'fps' and 'frames'.")
    unknown = set(spec) - {"fps", "frames", "name"}
    if unknown:
        raise PoseError(f"Unknown keys in the animation: {', '.join(sorted(unknown))}.")
    fps = spec.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps):
        raise PoseError("The animation needs 'fps', its frame rate in frames per second.")
    frames = spec.get("frames")
    if not isinstance(frames, list) or not frames:
        raise PoseError("The animation needs 'frames': a list of poses, at least one.")
    name = spec.get("name", "animation")
    if not isinstance(name, str) or not name:
        raise PoseError("The animation's 'name' must be a non-empty string.")
    rotations = np.empty((len(frames), rig.joint_count, 4), np.float32)
    translations = np.empty((len(frames), 3), np.float32)
    expressions = np.zeros((len(frames), len(rig.expression_names)), np.float32)
    for index, frame in enumerate(frames):
        if isinstance(frame, str):
            if frame not in PRESETS:
                raise PoseError(f"Frame {index}: '{frame}' is not a pose preset ({', '.join(PRESETS)}).")
            frame = PRESETS[frame]
        try:
            pose, weights = pose_from_spec(rig, frame)
        except PoseError as error:
            raise PoseError(f"Frame {index}: {error}") from None
        rotations[index] = pose.rotations
        translations[index] = pose.translation
        for expression, weight in weights.items():
            expressions[index, rig.expression_names.index(expression)] = weight
    return AnimationClip(
        frame_rate=float(fps),
        rotations=rotations,
        translations=translations,
        expression_weights=expressions,
        name=name,
    )


def load_animation(rig: Rig, path: str | os.PathLike) -> AnimationClip:
    """Read an animation JSON file (see the module docstring) for `rig`."""
    source = Path(path)
    if not source.is_file():
        raise PoseError(f"The animation file '{source}' does not exist.")
    if source.stat().st_size > MAX_ANIMATION_FILE_BYTES:
        raise PoseError(f"The animation file '{source.name}' is too large (over 64 MB) to be an animation.")
    try:
        spec = json.loads(source.read_text(encoding="utf-8"))
    except OSError as error:
        raise PoseError(
            f"Cannot read the animation file '{source.name}': {error.strerror or error}."
        ) from None
    except RecursionError:
        raise PoseError(
            f"The animation file '{source.name}' is nested too deeply to be an animation."
        ) from None
    except ValueError as error:
        raise PoseError(f"The animation file '{source.name}' is not valid JSON: {error}.") from None
    return clip_from_spec(rig, spec)
