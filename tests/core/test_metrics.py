"""Scoring metrics against analytic values and a slow per-pixel SSIM reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lca_blender.evaluate.metrics import SSIM_SIGMA, SSIM_WINDOW_SIZE, masked_psnr, masked_ssim, ssim_map
from lca_blender.maths.alignment import umeyama_similarity
from lca_blender.maths.rotations import axis_angle_to_quaternion, quaternion_to_matrix

C1, C2 = 0.01**2, 0.03**2


def test_psnr_of_a_constant_error_is_known():
    image = np.random.default_rng(0).random((20, 30, 3))
    assert masked_psnr(image, image + 0.1) == pytest.approx(20.0)
    assert masked_psnr(image, image + 0.01) == pytest.approx(40.0)
    assert masked_psnr(image, image) == math.inf


def test_psnr_ignores_pixels_outside_the_mask():
    image = np.zeros((10, 10, 3))
    other = image.copy()
    other[:5] = 0.1
    other[5:] = 0.9  # wildly wrong, but outside the mask
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    assert masked_psnr(image, other, mask) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        masked_psnr(image, other, np.zeros((10, 10), bool))


def test_ssim_of_identical_images_is_one():
    image = np.random.default_rng(1).random((32, 24, 3))
    assert np.allclose(ssim_map(image, image), 1.0)


def test_ssim_of_constant_images_is_the_luminance_term():
    first, second = np.full((16, 16, 3), 0.3), np.full((16, 16, 3), 0.7)
    expected = (2 * 0.3 * 0.7 + C1) / (0.3**2 + 0.7**2 + C1)
    assert np.allclose(ssim_map(first, second), expected)


def test_ssim_of_an_offset_keeps_structure_and_contrast():
    # y = x + b: variances and covariance are those of x, so only the luminance term moves.
    rng = np.random.default_rng(2)
    image = 0.2 + 0.5 * rng.random((24, 24))
    shifted = image + 0.25
    similarity = ssim_map(image, shifted)
    weights = np.outer(*(2 * [np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))]))
    weights /= weights.sum()
    mean = np.array(
        [[np.sum(weights * image[i - 5 : i + 6, j - 5 : j + 6]) for j in range(5, 19)] for i in range(5, 19)]
    )
    luminance = (2 * mean * (mean + 0.25) + C1) / (mean**2 + (mean + 0.25) ** 2 + C1)
    # Only float64 rounding separates the two (measured 9e-15).
    assert np.allclose(similarity[5:19, 5:19], luminance, atol=1e-9)


def _slow_ssim(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """SSIM of single-channel images pixel by pixel, with explicit reflected windows."""
    half = SSIM_WINDOW_SIZE // 2
    offsets = np.arange(-half, half + 1)
    weights = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * SSIM_SIGMA**2))
    weights /= weights.sum()
    height, width = first.shape

    def reflect(index: int, size: int) -> int:
        return -index if index < 0 else (2 * (size - 1) - index if index >= size else index)

    result = np.empty_like(first)
    for row in range(height):
        for column in range(width):
            rows = [reflect(row + offset, height) for offset in offsets]
            columns = [reflect(column + offset, width) for offset in offsets]
            x, y = first[np.ix_(rows, columns)], second[np.ix_(rows, columns)]
            mean_x, mean_y = np.sum(weights * x), np.sum(weights * y)
            var_x = np.sum(weights * (x - mean_x) ** 2)
            var_y = np.sum(weights * (y - mean_y) ** 2)
            cov = np.sum(weights * (x - mean_x) * (y - mean_y))
            result[row, column] = ((2 * mean_x * mean_y + C1) * (2 * cov + C2)) / (
                (mean_x**2 + mean_y**2 + C1) * (var_x + var_y + C2)
            )
    return result


def test_ssim_matches_the_slow_reference_under_an_affine_change():
    rng = np.random.default_rng(3)
    image = rng.random((14, 17))
    changed = 0.6 * image + 0.1 + 0.05 * rng.random((14, 17))
    # One-pass (E[x^2] - mu^2) against two-pass variances: float64 rounding only (measured 4e-15).
    assert np.allclose(ssim_map(image, changed), _slow_ssim(image, changed), atol=1e-10)
    # An inverted image is anti-correlated: its SSIM is negative in textured areas.
    assert ssim_map(image, 1 - image).mean() < 0


def test_masked_ssim_averages_inside_the_mask():
    rng = np.random.default_rng(4)
    image = rng.random((20, 20, 3))
    other = image.copy()
    other[:, 10:] = rng.random((20, 10, 3))
    mask = np.zeros((20, 20), bool)
    mask[:, :3] = True  # far from the changed half: identical windows
    assert masked_ssim(image, other, mask) == pytest.approx(1.0)
    # Windows reaching the changed half (columns 5-19) compare independent noise: measured 0.54.
    assert masked_ssim(image, other) < 0.8


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    return quaternion_to_matrix(axis_angle_to_quaternion(rng.normal(size=3)))


def test_umeyama_recovers_a_random_similarity_exactly():
    rng = np.random.default_rng(5)
    points = rng.normal(size=(30, 3))
    rotation, scale, translation = _random_rotation(rng), 1.7, rng.normal(size=3)
    moved = scale * points @ rotation.T + translation
    found = umeyama_similarity(points, moved)
    # Exact data: float64 rounding only (measured errors up to 1e-14).
    assert found.scale == pytest.approx(scale)
    assert np.allclose(found.rotation, rotation, atol=1e-10)
    assert np.allclose(found.translation, translation, atol=1e-10)
    assert np.allclose(found.apply(points), moved, atol=1e-10)
    assert np.allclose(found.matrix[:3, :3], scale * rotation)


def test_umeyama_never_returns_a_reflection():
    rng = np.random.default_rng(6)
    # Centred points with a diagonal covariance (orthonormal columns): principal axes along x, y, z.
    samples = rng.normal(size=(40, 3))
    columns, _ = np.linalg.qr(samples - samples.mean(0))
    points = columns * [3.0, 2.0, 0.5]
    mirrored = points * [1.0, 1.0, -1.0]  # the best orthogonal fit is the mirror itself
    found = umeyama_similarity(points, mirrored)
    assert np.linalg.det(found.rotation) == pytest.approx(1.0)
    # The flattest axis is the one flipped back, so the best proper fit leaves the points unturned.
    assert np.allclose(found.rotation, np.eye(3), atol=1e-9)


def test_umeyama_without_scale_is_rigid():
    rng = np.random.default_rng(7)
    points = rng.normal(size=(10, 3))
    rotation = _random_rotation(rng)
    found = umeyama_similarity(points, 2.0 * points @ rotation.T, with_scale=False)
    assert found.scale == 1.0
    assert np.allclose(found.rotation, rotation, atol=1e-10)
