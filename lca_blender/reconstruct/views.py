"""What the reconstruction stages hand each other: posed photos, the fitted body, the presets.

World frame: the fitted body's rig frame (metres, Z up, the body faces -Y at rest, soles at z = 0
at rest). Cameras follow the renderer's OpenCV convention (`preview.Camera`: world-to-camera
`viewmat`, +Z forward, +Y down, pixel intrinsics `K`). Pixels are linear light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..avatar import ARKIT_EXPRESSIONS, Pose, Rig
from ..errors import AvatarError
from ..maths.cameras import Camera


@dataclass(frozen=True)
class View:
    """One usable photo with its person mask and its camera in the body's world frame."""

    source: str
    pixels: np.ndarray  # [H, W, 3] float32 linear light in [0, 1]
    mask: np.ndarray  # [H, W] float32 person coverage in [0, 1]
    camera: Camera
    pose: Pose | None = None  # the person's pose in this photo where it is not the capture pose


@dataclass(frozen=True)
class BodyFit:
    """The fitted body: shape (as a rig at rest), the pose and expression held in the photos."""

    rig: Rig
    pose: Pose  # the capture pose
    expressions: np.ndarray  # [E] float32 weights, E = len(rig.expression_names)
    views: list[View]
    report: dict[str, Any]  # figures worth logging: landmark error in pixels, silhouette IoU, ...


@dataclass(frozen=True)
class Preset:
    """How hard a build works: photo size, Gaussian count, optimisation steps."""

    name: str
    max_side: int  # photos are resized so their longer side is at most this many pixels
    gaussians: int
    body_steps: int
    gaussian_steps: int


PRESETS = {
    "preview": Preset("preview", max_side=256, gaussians=15_000, body_steps=200, gaussian_steps=150),
    "standard": Preset("standard", max_side=512, gaussians=40_000, body_steps=400, gaussian_steps=800),
    "high": Preset("high", max_side=1024, gaussians=150_000, body_steps=600, gaussian_steps=3000),
}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise AvatarError(f"Unknown quality preset '{name}'. Use one of: {', '.join(PRESETS)}.")
    return PRESETS[name]


def views_from_renders(cameras: list[Camera], images: np.ndarray) -> list[View]:
    """Views from display-space RGBA renders [C, H, W, 4] (`preview.render_views`): linear pixels,
    the coverage as the mask. For tests and benchmarks that photograph a known avatar."""
    from ..maths.colour import srgb_to_linear

    return [
        View(
            camera.name,
            srgb_to_linear(image[..., :3]).astype(np.float32),
            image[..., 3].astype(np.float32),
            camera,
        )
        for camera, image in zip(cameras, images, strict=True)
    ]


def capture_to_json(pose: Pose, expressions: np.ndarray, names: list[str] | None = None) -> dict[str, Any]:
    """The capture pose and expression as JSON, for an avatar's provenance["capture"]."""
    names = names or list(ARKIT_EXPRESSIONS)
    return {
        "pose": {
            "rotations": np.asarray(pose.rotations, np.float64).round(6).tolist(),
            "translation": np.asarray(pose.translation, np.float64).round(6).tolist(),
        },
        "expressions": {
            name: round(float(weight), 6) for name, weight in zip(names, expressions, strict=True) if weight
        },
    }


def capture_from_json(data: dict[str, Any], rig: Rig) -> tuple[Pose, np.ndarray]:
    """The capture pose and expression weights [E] stored by `capture_to_json`."""
    try:
        pose = Pose(
            rotations=np.asarray(data["pose"]["rotations"], np.float32).reshape(rig.joint_count, 4),
            translation=np.asarray(data["pose"]["translation"], np.float32).reshape(3),
        )
        expressions = np.zeros(len(rig.expression_names), np.float32)
        for name, weight in data.get("expressions", {}).items():
            expressions[rig.expression_names.index(name)] = float(weight)
    except (KeyError, TypeError, ValueError) as error:
        raise AvatarError(f"The avatar's capture pose is malformed ({error}).") from None
    pose.validate(rig)
    return pose, expressions
