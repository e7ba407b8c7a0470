"""The relighting model against closed forms, its torch twin, and the lights' JSON and spec forms."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_sh import grid_sphere

from lca_blender.errors import AvatarError
from lca_blender.maths import sh, shading
from lca_blender.maths.lights import (
    AmbientSH,
    AreaLight,
    Lighting,
    LightingError,
    PointLight,
    SpotLight,
    SunLight,
    lighting_from_json,
    lighting_from_specs,
    lighting_to_json,
    parse_light_spec,
    read_lighting_file,
)
from lca_blender.maths.rotations import axis_angle_to_quaternion, quaternion_to_matrix

REPO_ROOT = Path(__file__).resolve().parents[2]

LIGHTS = {
    "sun": SunLight(direction=(0.3, 0.5, -1.0), color=(1.0, 0.9, 0.8), strength_w_m2=3.0),
    "point": PointLight(position=(0.5, -2.0, 1.5), color=(0.9, 0.95, 1.0), power_w=400.0, radius=0.1),
    "spot": SpotLight(
        position=(0.0, -2.0, 0.5),
        direction=(0.0, 1.0, -0.2),
        color=(1.0, 0.8, 0.6),
        power_w=900.0,
        spot_size_rad=math.radians(70),
        spot_blend=0.4,
        radius=0.05,
    ),
    "area": AreaLight(
        position=(-1.5, -1.5, 1.0),
        direction=(1.0, 1.0, -0.5),
        color=(0.7, 0.8, 1.0),
        power_w=250.0,
        size_x=0.8,
        size_y=0.4,
        shape="RECTANGLE",
    ),
}


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _sphere_points(count: int, seed: int = 0) -> np.ndarray:
    return _unit(np.random.default_rng(seed).standard_normal((count, 3)))


def _random_scene(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    positions = rng.uniform(-0.5, 0.5, (count, 3))
    normals = _unit(rng.standard_normal((count, 3)))
    view_dirs = shading.view_directions(positions, np.array([0.3, -4.0, 0.8]))
    normals = np.where(np.sum(normals * view_dirs, 1, keepdims=True) < 0, -normals, normals)
    return {
        "positions": positions,
        "normals": normals,
        "view_dirs": view_dirs,
        "albedo": rng.uniform(0, 1, (count, 3)),
        "roughness": rng.uniform(0, 1, count),
        "specular": rng.uniform(0, 1, count),
    }


# Closed forms -------------------------------------------------------------------------------------


def test_lambertian_sphere_under_a_sun_from_above() -> None:
    normals = _sphere_points(2000)
    albedo = np.array([0.8, 0.5, 0.2])
    strength = 3.0
    lighting = Lighting(lights=(SunLight(direction=(0, 0, -1), strength_w_m2=strength),))
    colors = shading.relight(
        normals,
        normals,
        normals,
        np.tile(albedo, (len(normals), 1)),
        np.full(len(normals), 0.5),
        np.zeros(len(normals)),
        lighting,
    )
    expected = albedo * strength * np.maximum(normals[:, 2:3], 0) / math.pi
    np.testing.assert_allclose(colors, expected, rtol=0, atol=1e-12)


def test_point_light_falls_off_with_the_inverse_square_of_distance() -> None:
    power, albedo = 100.0, 0.6
    lighting = Lighting(lights=(PointLight(position=(0, 0, 0), power_w=power),))
    distances = np.array([1.0, 2.0, 0.5, 3.0])
    positions = np.stack([np.zeros(4), np.zeros(4), distances], 1)
    normals = np.tile([0.0, 0.0, -1.0], (4, 1))  # facing the light
    colors = shading.relight(
        positions, normals, normals, np.full((4, 3), albedo), np.full(4, 0.5), np.zeros(4), lighting
    )[:, 0]
    assert colors[0] / colors[1] == pytest.approx(4.0, rel=1e-12)
    # Cycles: intensity P / (4 pi) W/sr, then the Lambert BRDF's 1 / pi.
    np.testing.assert_allclose(colors, albedo * power / (4 * math.pi * distances**2) / math.pi, rtol=1e-12)


def test_point_light_radius_holds_the_irradiance_inside_the_sphere() -> None:
    lighting = Lighting(lights=(PointLight(position=(0, 0, 0), power_w=100.0, radius=0.5),))
    positions = np.array([[0, 0, 0.25], [0, 0, 0.5], [0, 0, 1.0]])
    normals = np.tile([0.0, 0.0, -1.0], (3, 1))
    irradiance = shading.direct_lighting(positions, normals, shading.pack_lighting(lighting)).irradiance
    expected = 100.0 / (4 * math.pi) / np.array([0.25, 0.25, 1.0])
    np.testing.assert_allclose(irradiance[:, 0, 0], expected, rtol=1e-12)


def _spot_attenuation(angles: np.ndarray, spot: SpotLight) -> np.ndarray:
    """Spot irradiance at unit distance, facing the light, divided by the unattenuated point light's."""
    positions = np.stack([np.sin(angles), np.zeros_like(angles), -np.cos(angles)], 1)
    lights = shading.pack_lighting(Lighting(lights=(spot,)))
    irradiance = shading.direct_lighting(positions, -positions, lights).irradiance[:, 0, 0]
    return irradiance / (spot.power_w / (4 * math.pi))


def test_spot_is_full_inside_its_cone_zero_outside_and_smooth_and_monotone_between() -> None:
    size, blend = math.radians(60), 0.3
    spot = SpotLight(
        position=(0, 0, 0), direction=(0, 0, -1), power_w=50.0, spot_size_rad=size, spot_blend=blend
    )
    cos_half = math.cos(size / 2)
    inner = math.acos(cos_half + (1 - cos_half) * blend)  # where the blend starts
    np.testing.assert_allclose(_spot_attenuation(np.linspace(0, inner - 1e-6, 50), spot), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(_spot_attenuation(np.linspace(size / 2, math.pi / 2, 50), spot), 0.0)

    angles = np.linspace(inner, size / 2, 2001)
    edge = _spot_attenuation(angles, spot)
    assert np.all(np.diff(edge) <= 1e-15) and edge[0] == pytest.approx(1) and edge[-1] == pytest.approx(0)
    assert np.abs(np.diff(edge)).max() < 5e-3  # no jumps
    # Cycles' spot_light_attenuation at the middle of the blend (in cosine): smoothstep(0.5) = 0.5.
    middle = math.acos(cos_half + 0.5 * (1 - cos_half) * blend)
    assert _spot_attenuation(np.array([middle]), spot)[0] == pytest.approx(0.5, abs=1e-12)


def test_spot_without_blend_has_a_hard_edge() -> None:
    size = math.radians(40)
    spot = SpotLight(position=(0, 0, 0), direction=(0, 0, -1), spot_size_rad=size, spot_blend=0.0)
    values = _spot_attenuation(np.array([size / 2 - 1e-4, size / 2 + 1e-4]), spot)
    np.testing.assert_array_equal(values, [1.0, 0.0])


def test_area_light_is_exact_on_the_axis_of_a_disc_and_dark_behind() -> None:
    power, diameter = 80.0, 0.6
    disc = AreaLight(
        position=(0, 0, 0),
        direction=(0, 0, -1),
        power_w=power,
        size_x=diameter,
        size_y=diameter,
        shape="DISK",
    )
    lights = shading.pack_lighting(Lighting(lights=(disc,)))
    depths = np.array([0.1, 0.5, 2.0])
    positions = np.stack([np.zeros(3), np.zeros(3), -depths], 1)
    irradiance = shading.direct_lighting(positions, np.tile([0.0, 0, 1], (3, 1)), lights).irradiance[:, 0, 0]
    # A Lambertian disc of radius R and radiance P / (pi A) gives pi L R^2 / (d^2 + R^2) on its axis.
    radius = diameter / 2
    radiance = power / (math.pi * math.pi * radius**2)
    np.testing.assert_allclose(
        irradiance, math.pi * radiance * radius**2 / (depths**2 + radius**2), rtol=1e-12
    )

    behind = shading.direct_lighting(np.array([[0, 0, 1.0]]), np.array([[0, 0, -1.0]]), lights).irradiance
    np.testing.assert_array_equal(behind, 0.0)


def test_area_light_emits_with_the_cosine_of_its_facing() -> None:
    panel = AreaLight(position=(0, 0, 0), direction=(0, 0, -1), power_w=10.0, size_x=0.01, size_y=0.01)
    angle = math.radians(60)
    positions = 100.0 * np.array([[0, 0, -1.0], [math.sin(angle), 0, -math.cos(angle)]])
    normals = -_unit(positions)  # both face the panel
    irradiance = shading.direct_lighting(positions, normals, shading.pack_lighting(Lighting(lights=(panel,))))
    ratio = irradiance.irradiance[1, 0, 0] / irradiance.irradiance[0, 0, 0]
    assert ratio == pytest.approx(math.cos(angle), rel=1e-9)


@pytest.mark.parametrize("color", [(1.0, 1.0, 1.0), (0.2, 0.5, 0.9)])
def test_uniform_ambient_lights_every_normal_alike(color: tuple[float, float, float]) -> None:
    normals = _sphere_points(500)
    albedo = np.random.default_rng(1).uniform(0, 1, (500, 3))
    lighting = Lighting(ambient=AmbientSH.uniform(color, strength=1.0))
    colors = shading.relight(normals, normals, normals, albedo, np.full(500, 0.5), np.zeros(500), lighting)
    np.testing.assert_allclose(colors, albedo * np.array(color), rtol=1e-12)


def test_sh_irradiance_of_a_directional_light_is_the_clamped_cosine_up_to_l2_truncation() -> None:
    light_direction = _unit(np.array([0.3, -0.4, 0.8]))
    strength = 2.0
    # A directional light of irradiance S is the radiance S * delta(w - w_l): L_lm = S Y_lm(w_l).
    coefficients = strength * np.repeat(sh.irradiance_basis(light_direction)[:, None], 3, axis=1)
    normals = _sphere_points(4000)
    irradiance = shading.ambient_irradiance(normals, coefficients)[:, 0]
    cosine = normals @ light_direction
    exact = strength * np.maximum(cosine, 0)

    # The truncated series: sum over l <= 2 of A_l (2l + 1) / (4 pi) P_l(cos), clamped at zero.
    legendre = [np.ones_like(cosine), cosine, 0.5 * (3 * cosine**2 - 1)]
    a_l = [math.pi, 2 * math.pi / 3, math.pi / 4]
    series = strength * sum(
        a * (2 * degree + 1) / (4 * math.pi) * p
        for degree, (a, p) in enumerate(zip(a_l, legendre, strict=True))
    )
    np.testing.assert_allclose(irradiance, np.maximum(series, 0), atol=1e-12)
    # The known L2 error: at most 3/32 of the peak (at the horizon, where the series gives
    # 1/4 - 5/32 instead of 0), about 3 % RMS.
    error = np.abs(irradiance - exact)
    assert error.max() <= 3 / 32 * strength + 1e-12
    assert error.max() > 0.95 * 3 / 32 * strength
    assert np.sqrt(np.mean(error**2)) < 0.035 * strength


def test_sh_irradiance_matches_ramamoorthi_hanrahans_quadratic_form() -> None:
    coefficients = np.random.default_rng(3).standard_normal((9, 3))
    coefficients[0] += 10  # keep the irradiance positive so the clamp stays out of the way
    normals = _sphere_points(300)
    x, y, z = normals.T
    c1, c2, c3, c4, c5 = 0.429043, 0.511664, 0.743125, 0.886227, 0.247708
    l00, l1m1, l10, l11, l2m2, l2m1, l20, l21, l22 = coefficients
    expected = (
        c1 * l22 * (x * x - y * y)[:, None]
        + c3 * l20 * (z * z)[:, None]
        + c4 * l00
        - c5 * l20
        + 2 * c1 * (l2m2 * (x * y)[:, None] + l21 * (x * z)[:, None] + l2m1 * (y * z)[:, None])
        + 2 * c2 * (l11 * x[:, None] + l1m1 * y[:, None] + l10 * z[:, None])
    )
    np.testing.assert_allclose(shading.ambient_irradiance(normals, coefficients), expected, rtol=2e-6)


@pytest.mark.parametrize("roughness", [0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("view_angle", [0.0, 0.8, 1.4])
def test_specular_lobe_reflects_at_most_the_light_it_receives(roughness: float, view_angle: float) -> None:
    directions, solid_angles = grid_sphere(1200)
    upper = directions[:, 2] > 0
    directions, solid_angles = directions[upper], solid_angles[upper]
    view = np.array([math.sin(view_angle), 0.0, math.cos(view_angle)])
    lobe = shading.specular_brdf(np.array([0.0, 0, 1]), directions, view, np.array(roughness), np.array(1.0))
    directional_albedo = np.sum(lobe * directions[:, 2] * solid_angles)
    assert directional_albedo <= 1.0
    if roughness == 1.0 and view_angle == 0.0:
        # alpha = 1: D = 1/pi, V = 1 / (2 (1 + n.l)), so the integral is 1 - ln 2.
        assert directional_albedo == pytest.approx(1 - math.log(2), rel=1e-3)
    if roughness == 0.3 and view_angle == 0.0:
        assert directional_albedo > 0.97  # a smooth lobe loses little to masking


def test_specular_follows_blenders_f0_and_vanishes_without_specular() -> None:
    # Looking straight down at a mirror-ish surface lit from the viewer: F = F0 = 0.08 * specular.
    normal, view = np.array([0.0, 0, 1]), np.array([0.0, 0, 1])
    lobe = shading.specular_brdf(normal, view, view, np.array(0.5), np.array(0.04))
    alpha = 0.25  # roughness squared; at n = l = v, D = 1 / (pi alpha^2) and V = 1/4
    assert lobe == pytest.approx(0.04 / (math.pi * alpha**2) / 4, rel=1e-12)

    scene = _random_scene(200)
    lighting = Lighting(lights=tuple(LIGHTS.values()))
    matte = shading.relight(**(scene | {"specular": np.zeros(200)}), lighting=lighting)
    irradiance = shading.direct_lighting(
        scene["positions"], scene["normals"], shading.pack_lighting(lighting)
    )
    np.testing.assert_allclose(matte, scene["albedo"] * irradiance.irradiance.sum(1) / math.pi, rtol=1e-12)
    glossy = shading.relight(**scene, lighting=lighting)
    assert np.all(glossy >= matte) and np.any(glossy > matte)


# Normals and the captured look -------------------------------------------------------------------


def test_gaussian_normal_of_a_rotated_disc_is_its_rotated_thin_axis() -> None:
    rotations = axis_angle_to_quaternion(np.array([[0.3, -1.2, 0.5], [2.0, 0.1, -0.4], [0.0, 0.0, 0.0]]))
    matrices = quaternion_to_matrix(rotations)
    flat_on_z = np.array([[0.02, 0.03, 0.001]] * 3)
    np.testing.assert_allclose(shading.gaussian_normals(rotations, flat_on_z), matrices[:, :, 2], atol=1e-12)
    flat_on_x = np.array([[0.0005, 0.02, 0.01]] * 3)
    np.testing.assert_allclose(shading.gaussian_normals(rotations, flat_on_x), matrices[:, :, 0], atol=1e-12)

    towards_viewer = -matrices[:, :, 2]
    flipped = shading.gaussian_normals(rotations, flat_on_z, towards_viewer)
    np.testing.assert_allclose(flipped, -matrices[:, :, 2], atol=1e-12)


def test_captured_colour_of_the_sample_avatar_is_its_display_albedo(tube_rig) -> None:
    from lca_blender.maths.colour import linear_to_srgb
    from lca_blender.reconstruct.sample import sample_avatar

    avatar = sample_avatar(tube_rig, 200, sh_degree=0, seed=4)
    view_dirs = _sphere_points(200)
    colors = shading.captured_colors(avatar.sh, view_dirs.astype(np.float32))
    np.testing.assert_allclose(colors, linear_to_srgb(avatar.albedo), atol=1e-5)


def test_captured_colour_follows_the_3dgs_reference_basis() -> None:
    # One degree-1 coefficient per channel; 3DGS: colour = 0.5 + C0 dc - C1 y sh1 + C1 z sh2 - C1 x sh3,
    # evaluated along the ray from the camera, i.e. -view_dirs.
    sh = np.zeros((1, 4, 3))
    sh[0, 1, 0], sh[0, 2, 1], sh[0, 3, 2] = 0.5, 0.5, 0.5
    view = _unit(np.array([[0.2, -0.9, 0.3]]))
    x, y, z = -view[0]
    c1 = 0.4886025119029199
    expected = 0.5 + np.array([-c1 * y * 0.5, c1 * z * 0.5, -c1 * x * 0.5])
    np.testing.assert_allclose(shading.captured_colors(sh, view)[0], np.maximum(expected, 0), atol=1e-12)


def test_relit_splats_of_a_posed_avatar_under_a_white_world_are_its_albedo(tube_avatar) -> None:
    from lca_blender.maths.deform import pose_avatar

    tube_avatar.specular[:] = 0.0
    splats = pose_avatar(tube_avatar)
    lighting = Lighting(ambient=AmbientSH.uniform((1.0, 1.0, 1.0), 1.0))
    colors = shading.relight_splats(tube_avatar, splats, lighting, np.array([0.0, -3.0, 0.5]))
    np.testing.assert_allclose(colors, tube_avatar.albedo, rtol=1e-5)


def test_relit_avatar_is_dark_on_the_side_away_from_the_sun(tube_rig) -> None:
    from lca_blender.maths.deform import pose_avatar
    from lca_blender.reconstruct.sample import sample_avatar

    avatar = sample_avatar(tube_rig, 3000, sh_degree=0)  # discs lying on the skin
    splats = pose_avatar(avatar)
    camera = np.array([0.0, -3.0, 0.45])
    sun = Lighting(lights=(SunLight(direction=(0, 1, 0), strength_w_m2=3.0),))  # shining towards +Y
    colors = shading.relight_splats(avatar, splats, sun, camera)
    axis_offsets = splats.means[:, 1]  # the tube runs up Z round the origin
    front, back = colors[axis_offsets < -0.03].mean(), colors[axis_offsets > 0.03].mean()
    assert front > 0.1 and back == pytest.approx(0.0, abs=1e-6)


# The torch twin ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ambient", *LIGHTS, "all"])
def test_numpy_and_torch_twins_agree(kind: str) -> None:
    torch = pytest.importorskip("torch")
    from lca_blender.maths import shading_torch

    ambient = AmbientSH(np.random.default_rng(5).normal(0.5, 0.3, (9, 3)))
    lights = (
        tuple(LIGHTS.values()) if kind == "all" else tuple(LIGHTS[kind] for _ in range(2) if kind in LIGHTS)
    )
    lighting = Lighting(ambient if kind in ("ambient", "all") else AmbientSH(), lights)
    scene = _random_scene(3000, seed=7)
    expected = shading.relight(**scene, lighting=lighting)
    assert np.abs(expected).max() > 0.05  # the scene is actually lit

    # float32 against the float64 reference: the GGX peak is written without cancellation, so
    # the error is some tens of float32 roundings (6e-8) of values of order 1 (measured over 10
    # scenes and every kind of light: 3.7e-6 relative to 1 + |value|).
    for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 3e-5)):
        tensors = {name: torch.as_tensor(value, dtype=dtype) for name, value in scene.items()}
        lighting_tensors = shading_torch.LightingTensors.from_lighting(lighting, dtype=dtype)
        found = shading_torch.relight(**tensors, lighting=lighting_tensors)
        np.testing.assert_allclose(found.numpy(), expected, rtol=tolerance, atol=tolerance)
    single = shading.relight(
        **{name: value.astype(np.float32) for name, value in scene.items()}, lighting=lighting
    )
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, expected, rtol=3e-5, atol=3e-5)  # as above (measured 2.9e-6)


def test_torch_twins_of_normals_and_captured_colours_agree() -> None:
    torch = pytest.importorskip("torch")
    from lca_blender.maths import shading_torch

    rng = np.random.default_rng(8)
    rotations = _unit(rng.standard_normal((500, 4)))
    scales = rng.uniform(0.001, 0.1, (500, 3))
    view_dirs = _sphere_points(500, seed=9)
    sh = rng.standard_normal((500, 16, 3))
    expected_normals = shading.gaussian_normals(rotations, scales, view_dirs)
    found_normals = shading_torch.gaussian_normals(*map(torch.as_tensor, (rotations, scales, view_dirs)))
    np.testing.assert_allclose(found_normals.numpy(), expected_normals, atol=1e-12)
    for count in (1, 4, 9, 16):
        expected = shading.captured_colors(sh[:, :count], view_dirs)
        found = shading_torch.captured_colors(torch.as_tensor(sh[:, :count]), torch.as_tensor(view_dirs))
        np.testing.assert_allclose(found.numpy(), expected, atol=1e-12)


def test_gradients_reach_albedo_material_and_lighting() -> None:
    torch = pytest.importorskip("torch")
    from lca_blender.maths import shading_torch

    scene = {name: torch.as_tensor(value) for name, value in _random_scene(6, seed=11).items()}
    lighting = shading_torch.LightingTensors.from_lighting(
        Lighting(AmbientSH.uniform((0.3, 0.3, 0.4)), tuple(LIGHTS.values())), dtype=torch.float64
    )
    geometry = {name: scene[name] for name in ("positions", "normals", "view_dirs")}

    def render(albedo, roughness, specular, ambient_sh, sun_irradiance, point_intensity, spot_intensity):
        lights = shading_torch.LightingTensors(
            **(
                vars(lighting)
                | {
                    "ambient_sh": ambient_sh,
                    "sun_irradiance": sun_irradiance,
                    "point_intensity": point_intensity,
                    "spot_intensity": spot_intensity,
                }
            )
        )
        return shading_torch.relight(
            **geometry, albedo=albedo, roughness=roughness, specular=specular, lighting=lights
        )

    inputs = tuple(
        tensor.detach().clone().requires_grad_(True)
        for tensor in (
            scene["albedo"],
            scene["roughness"].clamp(0.2, 0.9),
            scene["specular"],
            lighting.ambient_sh + 0.1,
            lighting.sun_irradiance,
            lighting.point_intensity,
            lighting.spot_intensity,
        )
    )
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6)
    render(*inputs).sum().backward()
    for tensor in inputs:
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


# Lights: JSON, specs, errors ---------------------------------------------------------------------


def _lighting() -> Lighting:
    disc = AreaLight(
        position=(0, 1, 2), direction=(0, -1, 0), power_w=30.0, size_x=0.3, size_y=0.3, shape="DISK"
    )
    coefficients = np.random.default_rng(2).normal(0.2, 0.1, (9, 3))
    return Lighting(AmbientSH(coefficients), (*LIGHTS.values(), disc))


def test_lighting_json_round_trip_is_lossless(tmp_path: Path) -> None:
    lighting = _lighting()
    text = json.dumps(lighting_to_json(lighting))
    assert lighting_from_json(json.loads(text)) == lighting
    path = tmp_path / "scene.json"
    path.write_text(text, encoding="utf-8")
    assert read_lighting_file(path) == lighting


def test_json_light_settings_use_blender_names_units_and_defaults() -> None:
    lighting = lighting_from_json(
        {
            "ambient": {"color": [0.1, 0.2, 0.3], "strength": 2.0},
            "lights": [
                {
                    "type": "spot",
                    "position": [0, 0, 3],
                    "direction": [0, 0, -1],
                    "power": 500,
                    "spot_size_deg": 30,
                },
                {"type": "area", "position": [0, 0, 3], "direction": [0, 0, -1], "power": 5, "size": 2},
            ],
        }
    )
    spot, area = lighting.lights
    assert spot.spot_size_rad == pytest.approx(math.radians(30))
    assert (spot.spot_blend, spot.radius, spot.color) == (0.15, 0.0, (1.0, 1.0, 1.0))
    assert (area.shape, area.size_x, area.size_y, area.area_m2) == ("SQUARE", 2.0, 2.0, 4.0)
    ellipse = AreaLight(position=(0, 0, 0), direction=(0, 0, 1), size_x=2.0, size_y=1.0, shape="ellipse")
    assert ellipse.area_m2 == pytest.approx(math.pi / 2)
    np.testing.assert_allclose(
        lighting.ambient.as_array()[0], 2 * math.sqrt(math.pi) * 2.0 * np.array([0.1, 0.2, 0.3])
    )


def test_light_specs_parse_to_the_same_lights_as_json() -> None:
    lighting = lighting_from_specs(
        [
            "sun:direction=0.3,0.5,-1;color=1,0.9,0.8;strength=3",
            "point: position = 0.5,-2,1.5 ; color=0.9,0.95,1 ; power=400 ; radius=0.1",
            f"spot:position=0,-2,0.5;direction=0,1,-0.2;color=1,0.8,0.6;power=900;spot_size={math.radians(70)!r};"
            "spot_blend=0.4;radius=0.05",
            "area:position=-1.5,-1.5,1;direction=1,1,-0.5;color=0.7,0.8,1;power=250;shape=rectangle;size=0.8;size_y=0.4",
            "ambient:color=0.1,0.1,0.1;strength=0.5",
        ]
    )
    assert lighting.lights == tuple(LIGHTS.values())
    assert lighting.ambient == AmbientSH.uniform((0.1, 0.1, 0.1), 0.5)
    assert parse_light_spec(
        "spot:position=0,0,0;direction=0,0,-1;power=10;spot_size_deg=90"
    ).spot_size_rad == (pytest.approx(math.pi / 2))


@pytest.mark.parametrize(
    "spec",
    [
        "sun",  # no settings at all
        "laser:position=0,0,0;power=1",  # unknown type
        "sun:direction=0,0,-1",  # strength missing
        "sun:direction=0,0,0;strength=1",  # no direction
        "sun:direction=0,0,-1;strength=-2",  # negative strength
        "point:position=0,0;power=100",  # two coordinates
        "point:position=0,0,1;power=lots",  # not a number
        "point:position=0,0,1;power=100;powr=3",  # typo in a key
        "point:position=0,0,1;power=100;power=200",  # key given twice
        "point:position=0,0,1;power=100;radius",  # not KEY=VALUE
        "point:position=0,0,1;power=nan",  # not finite
        "spot:position=0,0,1;direction=0,0,-1;power=10;spot_blend=1.5",  # blend above 1
        "spot:position=0,0,1;direction=0,0,-1;power=10;spot_size_deg=270",  # wider than 180 degrees
        "spot:position=0,0,1;direction=0,0,-1;power=10;spot_size=1;spot_size_deg=40",  # both sizes
        "area:position=0,0,1;direction=0,0,-1;power=10;size=0",  # zero size
        "area:position=0,0,1;direction=0,0,-1;power=10;shape=hexagon;size=1",  # unknown shape
        "area:position=0,0,1;direction=0,0,-1;power=10;size=1;size_y=2",  # a square with two sizes
        "area:position=0,0,1;direction=0,0,-1;power=10;shape=rectangle;size=1",  # size_y missing
        "ambient:color=1,1,1;strength=1;sh=1",  # both forms
        "sun:color=1,1;direction=0,0,-1;strength=1",  # two colour channels
    ],
)
def test_malformed_light_specs_are_refused_with_a_message(spec: str) -> None:
    with pytest.raises(AvatarError) as raised:
        parse_light_spec(spec)
    assert isinstance(raised.value, LightingError)
    assert spec in str(raised.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object"),
        ({"version": 2}, "version 2"),
        ({"lights": {"type": "sun"}}, "must be a list"),
        ({"lights": ["sun"]}, "Light 1"),
        ({"lights": [{"type": "sun", "direction": [0, 0, -1], "strength": True}]}, "Light 1 (sun)"),
        ({"lights": [{"type": "point", "position": [0, 0, "1"], "power": 1}]}, "'position'"),
        ({"ambient": {"sh": [[0, 0, 0]] * 8}}, "9 rows"),
        ({"ambient": [1, 1, 1]}, "Ambient"),
        ({"light": []}, "Unknown lighting setting 'light'"),
        ({"lights": [{"type": "sun", "direction": [0, 0, -1], "strength": 1}] * 65}, "At most 64"),
    ],
)
def test_malformed_lighting_json_is_refused_with_a_message(data, message: str) -> None:
    with pytest.raises(LightingError, match=None) as raised:
        lighting_from_json(data)
    assert message in str(raised.value)


def test_lighting_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scene.json"
    path.write_text(
        '{"lights": [{"type": "sun", "direction": [0, 0, -1], "strength": NaN}]}', encoding="utf-8"
    )
    with pytest.raises(LightingError, match="not valid JSON"):
        read_lighting_file(path)
    with pytest.raises(LightingError, match="Cannot read"):
        read_lighting_file(tmp_path / "missing.json")


@pytest.mark.parametrize("module", ["lca_blender.maths.lights", "lca_blender.maths.shading"])
def test_blender_side_shading_modules_need_no_torch(module: str) -> None:
    probe = f"import sys, {module}; print(sorted(m for m in ('torch', 'bpy') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
