"""The sRGB transfer functions (IEC 61966-2-1) in numpy: display values <-> linear light.

One definition for the whole project. Both are odd functions: negative values mirror the positive
branch and values above 1 follow the power law, so out-of-gamut colours (3DGS spherical harmonics
can leave [0, 1]) survive a round trip. Callers that mean "a displayable colour" clip first. The
differentiable twin is `colour_torch.py`.
"""

from __future__ import annotations

import numpy as np

SRGB_LINEAR_LIMIT = 0.0031308  # linear values up to here are encoded by the straight segment
SRGB_ENCODED_LIMIT = 0.04045  # its image in display values
SRGB_SLOPE = 12.92


def _encode(linear: np.ndarray) -> np.ndarray:
    return np.where(
        linear <= SRGB_LINEAR_LIMIT, SRGB_SLOPE * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055
    )


def _decode(srgb: np.ndarray) -> np.ndarray:
    return np.where(srgb <= SRGB_ENCODED_LIMIT, srgb / SRGB_SLOPE, ((srgb + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Display values of linear-light `linear` (any shape; dtype kept)."""
    linear = np.asarray(linear)
    with np.errstate(invalid="ignore"):  # the branch np.where discards may see negative bases
        return np.where(linear < 0, -_encode(-linear), _encode(linear))


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """Linear light of display values `srgb` (any shape; dtype kept): the inverse of `linear_to_srgb`."""
    srgb = np.asarray(srgb)
    with np.errstate(invalid="ignore"):
        return np.where(srgb < 0, -_decode(-srgb), _decode(srgb))
