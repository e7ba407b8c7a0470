"""What the viewport draws: per splats object, the posed Gaussians and their appearance.

The posing handlers (`viewport/posing.py`) write here after each frame change or depsgraph
update; the draw handler (`viewport/draw.py`) reads and uploads what changed, and the sidebar
shows why a splats object could not be posed. Plain Python and numpy, so both sides and the
tests can use it without a GPU.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SplatPreview:
    """One splats object's Gaussians in world space, as the viewport should draw them now."""

    means: np.ndarray  # [N, 3] float32 world positions (posed, object transform applied)
    rotations: np.ndarray  # [N, 4] float32 unit quaternions (w, x, y, z), world
    scales: np.ndarray  # [N, 3] float32 world standard deviations
    opacities: np.ndarray  # [N] float32
    sh: np.ndarray  # [N, B, 3] float32 3DGS spherical harmonics ("as captured")
    albedo: np.ndarray  # [N, 3] float32 linear
    roughness: np.ndarray  # [N] float32
    specular: np.ndarray  # [N] float32
    outward_signs: np.ndarray  # [N] float32 +-1: which side of each disc is out of the skin
    version: int = 0  # bumped whenever the posed arrays change; the drawer re-uploads then
    extras: dict = field(default_factory=dict)  # drawer-owned caches (GPU batches, sort order)


_PREVIEWS: dict[str, SplatPreview] = {}


def set_preview(object_name: str, preview: SplatPreview) -> None:
    previous = _PREVIEWS.get(object_name)
    preview.version = previous.version + 1 if previous else 1
    _PREVIEWS[object_name] = preview


def get_preview(object_name: str) -> SplatPreview | None:
    return _PREVIEWS.get(object_name)


def previews() -> dict[str, SplatPreview]:
    return _PREVIEWS


def remove_preview(object_name: str) -> None:
    _PREVIEWS.pop(object_name, None)


# Why posing failed, per splats object; the preview keeps its last pose meanwhile.
_POSING_ERRORS: dict[str, str] = {}


def set_posing_error(object_name: str, message: str) -> None:
    _POSING_ERRORS[object_name] = message


def posing_error(object_name: str) -> str | None:
    """Why the splats object could not be posed last time; None when it was."""
    return _POSING_ERRORS.get(object_name)


def posing_errors() -> dict[str, str]:
    return _POSING_ERRORS


def clear_posing_error(object_name: str) -> None:
    _POSING_ERRORS.pop(object_name, None)


def clear() -> None:
    _PREVIEWS.clear()
    _POSING_ERRORS.clear()
