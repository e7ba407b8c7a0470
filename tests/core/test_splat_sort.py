"""The viewport's numpy splat maths against the engine: camera conversion, EWA projection, order, lights."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lca_blender.addon.viewport_maths import (
    BlenderLight,
    SortCache,
    back_to_front,
    lighting_from_blender,
    quad_triangles,
    shader_light_rows,
)
from lca_blender.maths.colour import linear_to_srgb, srgb_to_linear
from lca_blender.maths.lights import AmbientSH, Lighting, PointLight, SunLight
from lca_blender.maths.projection import covariances, opencv_camera, project_gaussians
from lca_blender.maths.shading import pack_lighting

torch = pytest.importorskip("torch")


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
    np.testing.assert_allclose(pixels[:, :2] / pixels[:, 2:], expected, atol=1e-9)


def test_projection_matches_the_engine() -> None:
    from lca_blender.render.projection import project_gaussians as engine_projection

    rng = np.random.default_rng(1)
    count, width, height = 200, 160, 120
    means = rng.uniform(-1.5, 1.5, size=(count, 3))
    quats = rng.normal(size=(count, 4))
    scales = np.exp(rng.uniform(-5, -2, size=(count, 3)))
    opacities = rng.uniform(0.01, 1.0, count)
    viewmat, K = opencv_camera(*_blender_camera(), width, height)
    ours = project_gaussians(means, covariances(quats, scales), opacities, viewmat, K, width, height)
    engine = engine_projection(
        *(torch.from_numpy(array) for array in (means, quats, scales, opacities, viewmat[None], K[None])),
        width, height, 0.01, 100.0,
    )  # fmt: skip
    np.testing.assert_allclose(ours.means2d, engine.means2d[0].numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.conics, engine.conics[0].numpy(), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.depths, engine.depths[0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.half_extents, engine.half_extents[0].numpy(), rtol=1e-7)


def test_back_to_front_and_the_sort_cache() -> None:
    view, _ = _blender_camera()
    means = np.array([[0, 1.0, 0], [0, -2.0, 0], [0, 3.0, 0], [0, 0.0, 0]])  # camera on -Y looking +Y
    np.testing.assert_array_equal(back_to_front(means, view), [2, 0, 3, 1])
    cache = SortCache()
    cache.order_for(means, view, 1)
    cache.order_for(means, view, 1)
    assert cache.sort_count == 1
    cache.order_for(means, view, 2)
    moved = view.copy()
    moved[0, 3] += 0.1
    cache.order_for(means, moved, 2)
    assert cache.sort_count == 3
    np.testing.assert_array_equal(quad_triangles(np.array([1, 0]))[0], [[4, 5, 6], [4, 6, 7]])


def test_srgb_round_trip() -> None:
    values = np.linspace(-0.2, 1.5, 101)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(values)), values, atol=1e-12)
    assert srgb_to_linear(np.array(0.5)) == pytest.approx(0.21404, abs=1e-5)


def test_blender_lights_in_blender_units() -> None:
    sun_matrix = np.eye(4)  # a sun with no rotation shines straight down (-Z)
    point_matrix = np.eye(4)
    point_matrix[:3, 3] = (1, 2, 3)
    area_matrix = np.diag([2.0, 1.0, 1.0, 1.0])  # X scale 2 stretches a square into a rectangle
    lighting = lighting_from_blender(
        [
            BlenderLight("SUN", sun_matrix, (1, 1, 1), 3.0),
            BlenderLight("POINT", point_matrix, (1, 0.5, 0.5), 100.0, radius=0.1),
            BlenderLight("AREA", area_matrix, (1, 1, 1), 50.0, shape="SQUARE", size=0.5),
        ],
        (0.1, 0.2, 0.3),
        2.0,
    )
    sun, point, area = lighting.lights
    assert sun == SunLight((0.0, 0.0, -1.0), (1.0, 1.0, 1.0), 3.0)
    assert point == PointLight((1.0, 2.0, 3.0), (1.0, 0.5, 0.5), 100.0, 0.1)
    assert (area.shape, area.size_x, area.size_y) == ("RECTANGLE", 1.0, 0.5)
    assert lighting.ambient == AmbientSH.uniform((0.1, 0.2, 0.3), 2.0)


def test_shader_light_rows_hold_the_packed_lights() -> None:
    lighting = Lighting(
        AmbientSH.uniform((0.2, 0.2, 0.2)),
        (SunLight((0, 0, -1), (1, 1, 1), 2.0), PointLight((0, 0, 2), (1, 1, 1), 40.0, 0.3)),
    )
    rows = shader_light_rows(lighting)
    packed = pack_lighting(lighting)
    np.testing.assert_allclose(rows[:9, :3], packed.ambient_sh, rtol=1e-6)
    assert rows[9, 0] == 2
    np.testing.assert_allclose(rows[11, :3], packed.sun_directions[0])
    np.testing.assert_allclose(rows[12, :3], packed.sun_irradiance[0])
    assert rows[14, 3] == 1  # the point light's type
    np.testing.assert_allclose(rows[16, :3], packed.point_intensity[0], rtol=1e-6)
    assert rows[15, 3] == pytest.approx(0.09)
    assert math.isclose(rows[14, 2], 2.0)
