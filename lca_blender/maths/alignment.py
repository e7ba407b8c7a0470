"""Similarity alignment of point sets in numpy (Umeyama 1991, "Least-squares estimation of
transformation parameters between two point patterns"): the scale s, rotation R (det +1, never a
reflection) and translation t minimising sum |s R x_i + t - y_i|^2.

The reconstruction aligns structure-from-motion cameras to the body with it; the evaluation aligns
an avatar's joints to the ground truth's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Similarity:
    """x -> scale * rotation @ x + translation."""

    scale: float
    rotation: np.ndarray  # [3, 3] proper rotation (det +1)
    translation: np.ndarray  # [3]

    def apply(self, points: np.ndarray) -> np.ndarray:
        """[N, 3] the transformed `points` [N, 3]."""
        return self.scale * np.asarray(points, np.float64) @ self.rotation.T + self.translation

    @property
    def matrix(self) -> np.ndarray:
        """[4, 4] homogeneous matrix of the transform."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.scale * self.rotation
        matrix[:3, 3] = self.translation
        return matrix


def umeyama_similarity(source: np.ndarray, target: np.ndarray, with_scale: bool = True) -> Similarity:
    """The similarity taking `source` [N, 3] closest to `target` [N, 3] in least squares (Umeyama).

    A proper rotation is always returned: when the best orthogonal fit would be a reflection, the
    axis of least variance is flipped back, as Umeyama's theorem prescribes.
    """
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[0] < 3:
        raise ValueError(
            f"Need two matching [N, 3] point sets with N >= 3, found {source.shape}, {target.shape}."
        )
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_centred, target_centred = source - source_mean, target - target_mean
    source_variance = np.mean(np.sum(source_centred**2, axis=1))
    if source_variance == 0:
        raise ValueError("The source points are all the same point.")
    covariance = target_centred.T @ source_centred / source.shape[0]
    left, singular_values, right_transposed = np.linalg.svd(covariance)
    signs = np.ones(source.shape[1])
    if np.linalg.det(left) * np.linalg.det(right_transposed) < 0:
        signs[-1] = -1.0
    rotation = left @ np.diag(signs) @ right_transposed
    scale = float(np.sum(singular_values * signs) / source_variance) if with_scale else 1.0
    translation = target_mean - scale * rotation @ source_mean
    return Similarity(scale=scale, rotation=rotation, translation=translation)
