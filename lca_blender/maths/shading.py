"""The relighting model in numpy: Gaussians' normals, and their colour "as captured" or relit.

Blender loads this module (numpy only). `shading_torch.py` is its differentiable twin and the
viewport's GLSL follows the same formulas; tests hold them to each other.

Relit colour (linear, scene-referred radiance towards the viewer) of a Gaussian at x with unit
normal n, unit direction to the viewer v, albedo a, roughness r and specular s:

    colour = a * (E_ambient(n) + sum_k E_k) / pi  +  sum_k f_spec(n, l_k, v) * E_k

- Diffuse is Lambertian (BRDF a / pi); diffuse is not reduced by the Fresnel term (with
  F0 <= 0.08 the energy added is at most 8 %).
- E_ambient(n) = max(0, sum_lm A_l L_lm Y_lm(n)): the irradiance of the L2 spherical-harmonic
  world (`lights.AmbientSH`), with the clamped-cosine convolution A_0 = pi, A_1 = 2 pi / 3,
  A_2 = pi / 4 (Ramamoorthi and Hanrahan 2001; the same as their c1..c5 form). For the worst case,
  a single directional light, the L2 truncation (the clamped cosine's l >= 4 terms) errs by at
  most 3/32 of the peak irradiance (at the horizon) and about 3 % RMS over the sphere; smooth
  worlds do far better. The ambient adds no specular.
- E_k is light k's irradiance, an RGB colour, with l_k the unit direction towards it and
  cos = max(0, n . l_k) (units and sources in `lights.py`):
    sun    E = S cos                                          S = colour * strength (W/m^2)
    point  E = I cos / max(d^2, radius^2)                     I = colour * power / (4 pi)  (W/sr)
    spot   E = I cos / max(d^2, radius^2) * smoothstep(t),    t = (cos_axis - cos(size/2)) /
                                                                  ((1 - cos(size/2)) * blend)
    area   E = I max(0, cos_e) cos / (d^2 + A / pi)           I = colour * power / pi
  with d the distance to the light, cos_axis the cosine between the spot's axis and the direction
  from the light to x, and cos_e the same for the area light's facing.
- f_spec is the GGX microfacet BRDF with the height-correlated Smith visibility and Schlick's
  Fresnel, the model of Blender's Principled BSDF:
      f_spec = D F V,  D = alpha^2 / (pi ((n.h)^2 (alpha^2 - 1) + 1)^2),
      V = G / (4 (n.l)(n.v)) = 0.5 / ((n.l) sqrt((n.v)^2 (1 - alpha^2) + alpha^2)
                                      + (n.v) sqrt((n.l)^2 (1 - alpha^2) + alpha^2)),
      F = F0 + (F90 - F0) (1 - v.h)^5,  F0 = 0.08 s,  F90 = min(1, 50 F0),  alpha = max(r^2, 0.001),
  h the unit half vector of l and v. F0 = 0.08 s is Blender's Principled "Specular" (4.x: "IOR
  Level") mapping: s = 0.5 gives F0 = 0.04, a dielectric of IOR 1.5, and s = 0 removes all
  reflection, as in Blender; F90 (Karis 2013, "Real Shading in Unreal Engine 4") fades the grazing
  reflection out with F0 below 2 %, which no real material has. Lights act as points for the
  lobe (their size only softens the irradiance near them). The lobe is white, and zero where the
  light or the viewer is below the Gaussian's plane. Its directional albedo is at most 1 (tested).

"As captured" colour is the 3DGS one: 0.5 + sum_lm sh_lm Y'_lm(-v), clamped at 0, with the 3DGS
basis Y' (the real SH with the sign flips of the reference implementation) evaluated along the
ray from the camera to the Gaussian; 3DGS colours are display-referred (sRGB-encoded), not linear.

A Gaussian's normal is its rotation's axis of smallest scale: the avatar's Gaussians are thin
discs lying on the skin, so that axis is the surface normal (the triangle frame's normal turned
by the Gaussian's own rotation, see `deform.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from ..avatar import GaussianAvatar, Splats
from .deform import component_rows
from .lights import AreaLight, Lighting, PointLight, SpotLight, SunLight
from .rotations import quaternion_to_matrix
from .sh import degree_of, irradiance_basis, sh_basis

# The floor of GGX's alpha (roughness squared): a narrower lobe lit by a point light is an invisible spike.
MIN_GGX_ALPHA = 1e-3
_TINY = 1e-12  # guards divisions by lengths and squared distances
_CLAMPED_COSINE = np.array([math.pi] + [2 * math.pi / 3] * 3 + [math.pi / 4] * 5)  # A_l per coefficient


@dataclass(frozen=True)
class LightArrays:
    """A Lighting packed per light type in radiometric units: what the shaders read.

    Unit conversions happen once, here; the twins and the GLSL start from these arrays.
    """

    ambient_sh: np.ndarray  # [9, 3] world radiance, L2 SH coefficients L_lm
    sun_directions: np.ndarray  # [S, 3] unit, the way the light travels
    sun_irradiance: np.ndarray  # [S, 3] colour * strength, W/m^2
    point_positions: np.ndarray  # [P, 3]
    point_intensity: np.ndarray  # [P, 3] colour * power / (4 pi), W/sr
    point_radii: np.ndarray  # [P]
    spot_positions: np.ndarray  # [Q, 3]
    spot_directions: np.ndarray  # [Q, 3] unit cone axes
    spot_intensity: np.ndarray  # [Q, 3] colour * power / (4 pi), W/sr
    spot_radii: np.ndarray  # [Q]
    spot_cos_half_angles: np.ndarray  # [Q] cos(spot_size / 2)
    spot_blends: np.ndarray  # [Q]
    area_positions: np.ndarray  # [A, 3]
    area_directions: np.ndarray  # [A, 3] unit facings
    area_intensity: np.ndarray  # [A, 3] colour * power / pi, W/sr along the facing
    area_sizes: np.ndarray  # [A] emitting areas, m^2

    def astype(self, dtype: np.dtype) -> LightArrays:
        return LightArrays(**{item.name: getattr(self, item.name).astype(dtype) for item in fields(self)})


def pack_lighting(lighting: Lighting) -> LightArrays:
    """The float64 arrays of a Lighting (see `LightArrays`)."""

    def rows(values: list, width: int = 3) -> np.ndarray:
        return np.array(values, dtype=np.float64).reshape(-1, width)

    def unit(vectors: list) -> np.ndarray:
        array = rows(vectors)
        return array / np.linalg.norm(array, axis=1, keepdims=True)

    def of_type(kind: type) -> list:
        return [light for light in lighting.lights if isinstance(light, kind)]

    suns, points, spots, areas = (
        of_type(SunLight),
        of_type(PointLight),
        of_type(SpotLight),
        of_type(AreaLight),
    )
    return LightArrays(
        ambient_sh=lighting.ambient.as_array(),
        sun_directions=unit([sun.direction for sun in suns]),
        sun_irradiance=rows([np.multiply(sun.color, sun.strength_w_m2) for sun in suns]),
        point_positions=rows([point.position for point in points]),
        point_intensity=rows([np.multiply(point.color, point.power_w / (4 * math.pi)) for point in points]),
        point_radii=rows([point.radius for point in points], 1)[:, 0],
        spot_positions=rows([spot.position for spot in spots]),
        spot_directions=unit([spot.direction for spot in spots]),
        spot_intensity=rows([np.multiply(spot.color, spot.power_w / (4 * math.pi)) for spot in spots]),
        spot_radii=rows([spot.radius for spot in spots], 1)[:, 0],
        spot_cos_half_angles=rows([math.cos(spot.spot_size_rad / 2) for spot in spots], 1)[:, 0],
        spot_blends=rows([spot.spot_blend for spot in spots], 1)[:, 0],
        area_positions=rows([area.position for area in areas]),
        area_directions=unit([area.direction for area in areas]),
        area_intensity=rows([np.multiply(area.color, area.power_w / math.pi) for area in areas]),
        area_sizes=rows([area.area_m2 for area in areas], 1)[:, 0],
    )


def ambient_irradiance(normals: np.ndarray, ambient_sh: np.ndarray) -> np.ndarray:
    """[N, 3] irradiance E_ambient at unit `normals` [N, 3] from the world radiance `ambient_sh` [9, 3]."""
    weights = irradiance_basis(normals) * _CLAMPED_COSINE.astype(normals.dtype)
    return np.maximum(weights @ ambient_sh.astype(normals.dtype), 0.0)


@dataclass(frozen=True)
class DirectLighting:
    """What each light sends to each Gaussian: K = all suns, points, spots and areas, in that order."""

    directions: np.ndarray  # [N, K, 3] unit, from the Gaussian towards the light
    irradiance: np.ndarray  # [N, K, 3] E_k (cosine and falloff included), W/m^2


def direct_lighting(positions: np.ndarray, normals: np.ndarray, lights: LightArrays) -> DirectLighting:
    """The irradiance of every light at every Gaussian (formulas in the module docstring).

    positions: [N, 3] metres; normals: [N, 3] unit.
    """
    lights = lights.astype(positions.dtype)
    count = positions.shape[0]
    directions, irradiance = [], []

    def add(towards: np.ndarray, color: np.ndarray, falloff: np.ndarray) -> None:
        cosine = np.maximum(np.einsum("nkc,nc->nk", towards, normals), 0.0)
        directions.append(towards)
        irradiance.append(color * (cosine * falloff)[..., None])

    suns = lights.sun_directions
    add(
        np.broadcast_to(-suns, (count, *suns.shape)),
        lights.sun_irradiance,
        np.ones((count, len(suns)), suns.dtype),
    )

    towards, distance_squared = _towards(positions, lights.point_positions)
    add(
        towards, lights.point_intensity, 1 / np.maximum(distance_squared, _radius_squared(lights.point_radii))
    )

    towards, distance_squared = _towards(positions, lights.spot_positions)
    axis_cosine = -np.einsum("nkc,kc->nk", towards, lights.spot_directions)
    cos_half = lights.spot_cos_half_angles
    edge_width = np.maximum((1 - cos_half) * lights.spot_blends, _TINY)
    cone = _smoothstep((axis_cosine - cos_half) / edge_width)
    add(
        towards,
        lights.spot_intensity,
        cone / np.maximum(distance_squared, _radius_squared(lights.spot_radii)),
    )

    towards, distance_squared = _towards(positions, lights.area_positions)
    facing = np.maximum(-np.einsum("nkc,kc->nk", towards, lights.area_directions), 0.0)
    add(towards, lights.area_intensity, facing / (distance_squared + lights.area_sizes / math.pi))

    return DirectLighting(np.concatenate(directions, axis=1), np.concatenate(irradiance, axis=1))


def _towards(positions: np.ndarray, light_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit directions [N, K, 3] from the Gaussians to the lights and squared distances [N, K]."""
    offsets = light_positions[None, :, :] - positions[:, None, :]
    distance_squared = np.einsum("nkc,nkc->nk", offsets, offsets)
    return offsets / np.sqrt(np.maximum(distance_squared, _TINY))[..., None], distance_squared


def _radius_squared(radii: np.ndarray) -> np.ndarray:
    return np.maximum(radii * radii, _TINY)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def specular_brdf(
    normals: np.ndarray,
    light_dirs: np.ndarray,
    view_dirs: np.ndarray,
    roughness: np.ndarray,
    f0: np.ndarray,
) -> np.ndarray:
    """The GGX BRDF value f_spec = D F V (module docstring), broadcasting over leading axes.

    normals, light_dirs, view_dirs: [..., 3] unit; roughness, f0: [...]. Returns [...], per steradian.
    """
    alpha = np.maximum(roughness * roughness, MIN_GGX_ALPHA)
    alpha2 = alpha * alpha
    n_dot_l = np.sum(normals * light_dirs, axis=-1)
    n_dot_v = np.sum(normals * view_dirs, axis=-1)
    half = light_dirs + view_dirs
    half = half / np.maximum(np.linalg.norm(half, axis=-1, keepdims=True), _TINY)
    n_dot_h = np.sum(normals * half, axis=-1)
    v_dot_h = np.clip(np.sum(view_dirs * half, axis=-1), 0.0, 1.0)
    # 1 - (n.h)^2 as |n x h|^2: no cancellation near the peak of a sharp lobe (as Filament does).
    sin2_h = np.sum(np.cross(normals, half) ** 2, axis=-1)
    distribution = alpha2 / (math.pi * (sin2_h + n_dot_h * n_dot_h * alpha2) ** 2)
    fresnel = f0 + (np.minimum(50 * f0, 1.0) - f0) * (1 - v_dot_h) ** 5
    lit, seen = np.maximum(n_dot_l, 0.0), np.maximum(n_dot_v, 0.0)
    visibility = 0.5 / np.maximum(
        lit * np.sqrt(seen * seen * (1 - alpha2) + alpha2)
        + seen * np.sqrt(lit * lit * (1 - alpha2) + alpha2),
        _TINY,
    )
    return np.where((n_dot_l > 0) & (n_dot_v > 0), distribution * fresnel * visibility, 0.0)


def relight(
    positions: np.ndarray,
    normals: np.ndarray,
    view_dirs: np.ndarray,
    albedo: np.ndarray,
    roughness: np.ndarray,
    specular: np.ndarray,
    lighting: Lighting,
) -> np.ndarray:
    """[N, 3] relit linear colours of Gaussians (module docstring).

    positions: [N, 3] metres; normals: [N, 3] unit (facing the viewer, see `gaussian_normals`);
    view_dirs: [N, 3] unit, from each Gaussian towards the eye (see `view_directions`);
    albedo: [N, 3] linear in [0, 1]; roughness, specular: [N] in [0, 1].
    Computes in the dtype of `positions` (float32 or float64).
    """
    dtype = np.result_type(np.asarray(positions).dtype, np.float32)
    positions, normals, view_dirs = (np.asarray(array, dtype) for array in (positions, normals, view_dirs))
    albedo, roughness, specular = (np.asarray(array, dtype) for array in (albedo, roughness, specular))
    lights = pack_lighting(lighting)
    direct = direct_lighting(positions, normals, lights)
    irradiance = ambient_irradiance(normals, lights.ambient_sh) + direct.irradiance.sum(axis=1)
    lobe = specular_brdf(
        normals[:, None, :],
        direct.directions,
        view_dirs[:, None, :],
        roughness[:, None],
        0.08 * specular[:, None],
    )
    return albedo * irradiance / math.pi + np.einsum("nk,nkc->nc", lobe, direct.irradiance)


def view_directions(positions: np.ndarray, camera_position: np.ndarray) -> np.ndarray:
    """[N, 3] unit directions from `positions` [N, 3] towards a camera at `camera_position` [3]."""
    offsets = np.asarray(camera_position, positions.dtype)[None, :] - positions
    return offsets / np.maximum(np.linalg.norm(offsets, axis=1, keepdims=True), _TINY)


def gaussian_normals(
    rotations: np.ndarray, scales: np.ndarray, view_dirs: np.ndarray | None = None
) -> np.ndarray:
    """[N, 3] unit normals: each Gaussian's axis of smallest scale, turned towards the viewer when
    `view_dirs` [N, 3] (towards the eye) is given.

    rotations: [N, 4] quaternions (w, x, y, z); scales: [N, 3] (or log-scales: only their order matters).
    """
    matrices = quaternion_to_matrix(np.asarray(rotations))
    thinnest = np.argmin(scales, axis=1)
    normals = np.take_along_axis(matrices, thinnest[:, None, None], axis=2)[:, :, 0]
    if view_dirs is not None:
        normals = np.where(np.sum(normals * view_dirs, axis=1, keepdims=True) < 0, -normals, normals)
    return normals


def captured_colors(sh: np.ndarray, view_dirs: np.ndarray) -> np.ndarray:
    """[N, 3] the "as captured" 3DGS colours of `sh` [N, B, 3] seen along `view_dirs` [N, 3]
    (unit, from each Gaussian towards the eye); display-referred, as 3DGS viewers show them."""
    basis = sh_basis(-view_dirs, degree_of(sh.shape[1]))
    return np.maximum(np.einsum("nb,nbc->nc", basis, sh) + 0.5, 0.0)


def outward_signs(avatar: GaussianAvatar) -> np.ndarray:
    """[N] float32 +1 or -1: the sign that turns each Gaussian's thin axis out of the skin.

    A disc's thin axis is only defined up to sign. In the triangle frame the frame's normal is +Z,
    and posing turns both together, so the sign of the thin axis's Z in the bound (rest) rotation
    holds in every pose. Facing the skin's outside rather than the viewer keeps the far side of
    the body dark under a light in front of it. Only the needed row of each rotation matrix is
    formed: the viewport calls this for every Gaussian at import.
    """
    w, x, y, z = component_rows(avatar.rotations)
    # Row 2 of the rotation matrix of q / |q|: the Z of its X, Y and Z axes, each times |q|^2
    # (which leaves the signs alone).
    squared_norm = w * w + x * x + y * y + z * z
    z_of_axes = (2 * (x * z - w * y), 2 * (y * z + w * x), squared_norm - 2 * (x * x + y * y))
    thinnest = np.argmin(avatar.log_scales, axis=1)
    normal_components = np.choose(thinnest, z_of_axes)
    return np.where(normal_components < 0, -1.0, 1.0).astype(np.float32)


def skin_normals(avatar: GaussianAvatar, splats: Splats) -> np.ndarray:
    """[N, 3] the normals of an avatar's posed Gaussians `splats`, pointing out of the skin."""
    return gaussian_normals(splats.rotations, splats.scales) * outward_signs(avatar)[:, None]


def relight_splats(
    avatar: GaussianAvatar,
    splats: Splats,
    lighting: Lighting,
    camera_position: np.ndarray,
    normals: np.ndarray | None = None,
) -> np.ndarray:
    """[N, 3] relit linear colours of an avatar's posed Gaussians `splats` (from `deform.pose_avatar`)
    seen from a perspective camera at `camera_position` [3], with normals out of the skin
    (`skin_normals`, computed here unless given: they do not depend on the camera)."""
    view_dirs = view_directions(splats.means, camera_position)
    normals = skin_normals(avatar, splats) if normals is None else normals
    return relight(
        splats.means, normals, view_dirs, avatar.albedo, avatar.roughness, avatar.specular, lighting
    )
