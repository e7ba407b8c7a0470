"""The numpy 3DGS projection (Blender's side) against pinhole geometry, closed forms and the engine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lca_blender.maths.projection import (
    LOW_PASS,
    MIN_ALPHA,
    covariances,
    opencv_camera,
    project_gaussians,
    quad_extent,
)


def _blender_camera(shift: tuple[float, float] = (0.03, -0.02)) -> tuple[np.ndarray, np.ndarray]:
    """A view matrix looking along +Y from y = -4 and a perspective projection with a lens shift."""
    camera_to_world = np.array([[1.0, 0, 0, 0.1], [0, 0, -1, -4.0], [0, 1, 0, 0.2], [0, 0, 0, 1]])
    near, far, focal = 0.1, 50.0, 1.6
    projection = np.array(
        [
            [focal, 0, 2 * shift[0], 0],
            [0, focal * 4 / 3, 2 * shift[1], 0],
            [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
            [0, 0, -1, 0],
        ]
    )
    return np.linalg.inv(camera_to_world), projection


def test_opencv_camera_puts_points_on_the_same_pixels() -> None:
    view, projection = _blender_camera()
    width, height = 160, 120
    viewmat, K = opencv_camera(view, projection, width, height)
    points = np.random.default_rng(0).uniform(-1, 1, size=(20, 3))
    clip = (projection @ view @ np.c_[points, np.ones(20)].T).T
    ndc = clip[:, :2] / clip[:, 3:]
    gl_pixels = (ndc + 1) / 2 * [width, height]
    expected = np.c_[gl_pixels[:, 0], height - gl_pixels[:, 1]]  # rows from the top
    camera = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    pixels = camera @ K.T
    # Two float64 routes to pixel coordinates of ~100: roundoff ~1e-13 px.
    np.testing.assert_allclose(pixels[:, :2] / pixels[:, 2:], expected, atol=1e-9)
    with pytest.raises(ValueError, match="orthographic"):
        opencv_camera(view, np.diag([1.0, 1.0, -0.1, 1.0]), width, height)


def test_covariance_of_a_quarter_turn_swaps_the_axes() -> None:
    # 90 degrees about Z takes the X axis to Y: Sigma = diag(b^2, a^2, c^2) for scales (a, b, c).
    quarter = np.array([[math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]])
    triangle = covariances(2.0 * quarter, np.array([[0.1, 0.2, 0.3]]))  # not normalised on purpose
    np.testing.assert_allclose(triangle[0], [0.04, 0.0, 0.0, 0.01, 0.0, 0.09], atol=1e-17)


def test_quad_extent_is_where_alpha_falls_to_the_discard_threshold() -> None:
    opacities = np.array([1.0, 0.5, 0.05, MIN_ALPHA, 1e-5])
    extents = quad_extent(opacities)
    assert extents[0] == pytest.approx(math.sqrt(2 * math.log(255)), rel=1e-15)  # 3.33
    visible = opacities >= MIN_ALPHA
    np.testing.assert_allclose(
        opacities[visible] * np.exp(-(extents[visible] ** 2) / 2), MIN_ALPHA, rtol=1e-14
    )
    np.testing.assert_array_equal(extents[~visible], 0.0)  # never drawn


def test_a_gaussian_on_the_axis_projects_to_the_pinhole_closed_form() -> None:
    # An isotropic Gaussian of size s at depth z on the optical axis: a circle of variance
    # (f s / z)^2 + the low-pass, centred on the principal point.
    focal, size, depth = 200.0, 0.05, 4.0
    K = np.array([[focal, 0, 80.0], [0, focal, 60.0], [0, 0, 1]])
    screen = project_gaussians(
        np.array([[0.0, 0.0, depth]]), covariances(np.array([[1.0, 0, 0, 0]]), np.full((1, 3), size)),
        np.array([1.0]), np.eye(4), K, 160, 120,
    )  # fmt: skip
    variance = (focal * size / depth) ** 2 + LOW_PASS
    np.testing.assert_allclose(screen.means2d[0], [80.0, 60.0], atol=1e-12)
    np.testing.assert_allclose(screen.conics[0], [1 / variance, 0.0, 1 / variance], rtol=1e-14, atol=1e-17)
    np.testing.assert_allclose(screen.half_extents[0], math.sqrt(2 * math.log(255) * variance), rtol=1e-14)
    assert screen.depths[0] == depth


def _ours_and_engine(seed: int, scales_of, antialiased: bool = False):
    """(opacities, this module's projection, the engine's) of 200 random Gaussians with the scales
    `scales_of(rng, count)` gives, seen by the test camera."""
    torch = pytest.importorskip("torch")
    from lca_blender.render.projection import project_gaussians as engine_projection

    rng = np.random.default_rng(seed)
    count, width, height = 200, 160, 120
    means = rng.uniform(-1.5, 1.5, size=(count, 3))
    quats = rng.normal(size=(count, 4))
    scales = scales_of(rng, count)
    opacities = rng.uniform(0.01, 1.0, count)
    viewmat, K = opencv_camera(*_blender_camera(), width, height)
    triangles = covariances(quats, scales)
    ours = project_gaussians(means, triangles, opacities, viewmat, K, width, height, antialiased=antialiased)
    engine = engine_projection(
        *(torch.from_numpy(array) for array in (means, quats, scales, opacities, viewmat[None], K[None])),
        width, height, 0.01, 100.0,
    )  # fmt: skip
    return opacities, ours, engine


def test_projection_matches_the_engine() -> None:
    _, ours, engine = _ours_and_engine(1, lambda rng, count: np.exp(rng.uniform(-5, -2, size=(count, 3))))
    # Both in float64, the same formulas in a different order: ~1e-15 relative. The conic inverts a
    # 2 x 2 covariance whose condition number here is at most ~1e4 (thin Gaussians, 0.3 px^2
    # low-pass): ~1e-12 relative. The bounds leave three orders of magnitude over that.
    np.testing.assert_allclose(ours.means2d, engine.means2d[0].numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.conics, engine.conics[0].numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.depths, engine.depths[0].numpy(), rtol=1e-14)
    np.testing.assert_allclose(ours.half_extents, engine.half_extents[0].numpy(), rtol=1e-12)


def _wide_tiny_and_random(rng: np.random.Generator, count: int) -> np.ndarray:
    scales = np.exp(rng.uniform(-6, -1, size=(count, 3)))
    scales[:40] = np.exp(rng.uniform(-1.5, -0.5, size=(40, 1)))  # round and wide
    scales[40:80] = np.exp(rng.uniform(-9, -8, size=(40, 1)))  # round and tiny
    return scales


def test_antialiased_opacities_match_the_engine_and_spare_large_gaussians() -> None:
    opacities, ours, engine = _ours_and_engine(2, _wide_tiny_and_random, antialiased=True)
    np.testing.assert_allclose(ours.opacities, opacities * engine.compensation[0].numpy(), rtol=1e-9)
    # The factor from the conic alone: det(Sigma + 0.3 I) = 1 / det(conic), det Sigma = the same
    # matrix less 0.3 on its diagonal.
    a, b, c = ours.conics.T
    determinant = 1.0 / (a * c - b * b)
    xx, xy, yy = c * determinant - LOW_PASS, -b * determinant, a * determinant - LOW_PASS
    factor = np.sqrt((xx * yy - xy * xy) / determinant)
    np.testing.assert_allclose(ours.opacities, opacities * factor, rtol=1e-6)
    assert (ours.opacities <= opacities).all()
    # Gaussians over 5 px across both ways keep their opacity (within 1 %); those under a fifth of
    # a pixel both ways keep under 15 % of it (factor <= 0.05 / 0.35 per the eigenvalues).
    half_trace, spread = (xx + yy) / 2, np.sqrt(((xx - yy) / 2) ** 2 + xy * xy)
    smallest, largest = half_trace - spread, half_trace + spread
    wide, tiny = smallest > 30, largest < 0.05
    assert wide.sum() > 5 and tiny.sum() > 5
    np.testing.assert_allclose(ours.opacities[wide], opacities[wide], rtol=0.01)
    assert (ours.opacities[tiny] < 0.15 * opacities[tiny]).all()
