"""Rotating 3DGS spherical-harmonic colours with the world: one (2l+1)-square matrix per degree.

A Gaussian's colour seen along direction d is sum_k s_k Y_k(d) (`sh.sh_basis`). Turning the
world by a rotation R moves every direction to R d, so the turned Gaussian's coefficients s' must
satisfy sum_k s'_k Y_k(R d) = sum_k s_k Y_k(d) for every d. Each degree l spans a space that
rotations map onto itself: Y_l(R d) = D_l Y_l(d) with D_l orthogonal (the real Wigner matrix in
this basis), so s'_l = D_l s_l. D_l is found exactly by least squares on directions spread over
the sphere, which needs no closed-form Wigner recurrences and holds for any basis order.
"""

from __future__ import annotations

import numpy as np

from .sh import degree_of, sh_basis

_SAMPLE_COUNT = 64  # directions; each degree needs at least 2l+1 = 7 independent ones


def _sample_directions() -> np.ndarray:
    """[_SAMPLE_COUNT, 3] unit directions on a Fibonacci spiral (deterministic, well spread)."""
    index = np.arange(_SAMPLE_COUNT) + 0.5
    z = 1.0 - 2.0 * index / _SAMPLE_COUNT
    azimuth = np.pi * (1.0 + 5.0**0.5) * index
    radius = np.sqrt(1.0 - z * z)
    return np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth), z], axis=1)


def sh_rotation_matrix(rotation: np.ndarray, degree: int) -> np.ndarray:
    """[(degree+1)^2, (degree+1)^2] float64 block-diagonal matrix D with s' = D s for `rotation` [3, 3]."""
    rotation = np.asarray(rotation, np.float64)
    directions = _sample_directions()
    before = sh_basis(directions, degree)  # Y(d)
    after = sh_basis(directions @ rotation.T, degree)  # Y(R d)
    size = (degree + 1) ** 2
    matrix = np.zeros((size, size))
    for level in range(degree + 1):
        block = slice(level * level, (level + 1) ** 2)
        # after = before D^T within the block, solved in the least-squares sense (exact here).
        transposed, *_ = np.linalg.lstsq(before[:, block], after[:, block], rcond=None)
        matrix[block, block] = transposed.T
    return matrix


def rotate_sh(sh: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """`sh` [N, B, 3] 3DGS coefficients of Gaussians turned by `rotation` [3, 3] (same dtype back)."""
    matrix = sh_rotation_matrix(rotation, degree_of(sh.shape[1]))
    return np.einsum("kj,njc->nkc", matrix, sh.astype(np.float64)).astype(sh.dtype)
