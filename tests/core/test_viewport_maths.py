"""The viewport's numpy helpers: back-to-front order and its cache, quads, Blender's lights, the buffer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lca_blender.addon.viewport_maths import (
    BlenderLight,
    SortCache,
    back_to_front,
    lighting_from_blender,
    per_corner,
    quad_triangles,
    shader_light_rows,
)
from lca_blender.maths.lights import AmbientSH, Lighting, PointLight, SunLight
from lca_blender.maths.shading import pack_lighting

# Blender's view matrix of a camera at y = -4 looking along +Y (its local -Z), Z up.
VIEW = np.linalg.inv(np.array([[1.0, 0, 0, 0.1], [0, 0, -1, -4.0], [0, 1, 0, 0.2], [0, 0, 0, 1]]))


def test_back_to_front_sorts_by_distance_along_the_view_axis() -> None:
    means = np.array([[0, 1.0, 0], [0, -2.0, 0], [0, 3.0, 0], [0, 0.0, 0]])
    np.testing.assert_array_equal(back_to_front(means, VIEW), [2, 0, 3, 1])
    # Along the axis, not to the eye: far off to the side but nearer along Y is drawn later.
    sideways = np.array([[0, 2.0, 0], [30.0, 1.0, 0]])
    np.testing.assert_array_equal(back_to_front(sideways, VIEW), [0, 1])
    # Equal depths keep their stored order (a stable sort: no flicker between redraws).
    ties = np.array([[0.5, 1.0, 0], [-0.5, 1.0, 0.3], [0.0, 1.0, -0.2], [0, 2.0, 0]])
    np.testing.assert_array_equal(back_to_front(ties, VIEW), [3, 0, 1, 2])


def test_the_sort_cache_sorts_again_only_for_a_new_view_or_version() -> None:
    means = np.random.default_rng(0).uniform(-1, 1, (50, 3))
    cache = SortCache()
    first, sorted_now = cache.order_for(means, VIEW, 1)
    assert sorted_now and cache.sort_count == 1
    again, sorted_now = cache.order_for(means, VIEW, 1)
    assert not sorted_now and again is first and cache.sort_count == 1
    cache.order_for(means, VIEW, 2)
    moved = VIEW.copy()
    moved[0, 3] += 0.1
    cache.order_for(means, moved, 2)
    assert cache.sort_count == 3
    np.testing.assert_array_equal(cache.order, back_to_front(means, moved))


def test_quads_hold_four_corners_per_gaussian_in_draw_order() -> None:
    np.testing.assert_array_equal(
        quad_triangles(np.array([1, 0])), [[[4, 5, 6], [4, 6, 7]], [[0, 1, 2], [0, 2, 3]]]
    )
    assert quad_triangles(np.array([2])).dtype == np.uint32
    corners = per_corner(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert corners.dtype == np.float32
    np.testing.assert_array_equal(corners, [[1, 2]] * 4 + [[3, 4]] * 4)


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
    # The buffer is float32: the packed float64 values to float32's half-ulp (6e-8 relative).
    np.testing.assert_allclose(rows[:9, :3], packed.ambient_sh, rtol=1e-7)
    assert rows[9, 0] == 2
    np.testing.assert_allclose(rows[10, :3], 0.0)  # a sun has no position
    assert rows[10, 3] == 0  # the sun's type
    np.testing.assert_allclose(rows[11, :3], packed.sun_directions[0])
    np.testing.assert_allclose(rows[12, :3], packed.sun_irradiance[0], rtol=1e-7)
    assert rows[14, 3] == 1  # the point light's type
    np.testing.assert_allclose(rows[14, :3], [0.0, 0.0, 2.0])
    np.testing.assert_allclose(rows[16, :3], packed.point_intensity[0], rtol=1e-7)
    assert rows[15, 3] == pytest.approx(0.09, rel=1e-7)  # radius^2
    assert math.isclose(rows[14, 2], 2.0)
    np.testing.assert_array_equal(rows[18:], 0.0)  # no third light
