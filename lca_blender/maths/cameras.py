"""Pinhole cameras in the engine's OpenCV convention (+X right, +Y down, +Z forward): the camera
record, a look-at view matrix, and where a camera on an orbit round the body stands.

Azimuth 0 looks at the face (the body faces -Y), 90 degrees from the body's left (+X), 180 from
behind; elevation lifts the camera above the horizon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """A pinhole camera (OpenCV convention) with a name for labels and file names."""

    name: str
    position: np.ndarray  # [3] world position
    viewmat: np.ndarray  # [4, 4] world to camera
    intrinsics: np.ndarray  # [3, 3] pixel intrinsics K
    width: int
    height: int


def look_at(position: np.ndarray, target: np.ndarray, up: np.ndarray | None = None) -> np.ndarray:
    """[4, 4] world-to-camera matrix of a camera at `position` looking at `target` (Z up)."""
    position = np.asarray(position, np.float64)
    forward = np.asarray(target, np.float64) - position
    forward /= np.linalg.norm(forward)
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, np.float64)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-6:  # looking straight up or down
        right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    viewmat = np.eye(4)
    viewmat[:3, :3] = rotation
    viewmat[:3, 3] = -rotation @ position
    return viewmat


def orbit_direction(azimuth: float, elevation: float) -> np.ndarray:
    """[3] unit vector from the orbit's centre to a camera at `azimuth` and `elevation` (radians)."""
    return np.array(
        [
            math.sin(azimuth) * math.cos(elevation),
            -math.cos(azimuth) * math.cos(elevation),
            math.sin(elevation),
        ]
    )
