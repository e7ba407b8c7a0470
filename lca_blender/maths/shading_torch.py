"""The relighting model in torch, differentiable: the twin of `shading.py` (same maths, tested for parity).

The fitting engine estimates albedo, roughness, specular and the photos' lighting jointly through
these functions; Blender never imports this module. Formulas and units: `shading.py`, `lights.py`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .lights import Lighting
from .rotations_torch import quaternion_to_matrix
from .sh_torch import irradiance_basis, sh_to_color
from .shading import _CLAMPED_COSINE, _TINY, MIN_GGX_ALPHA, pack_lighting


@dataclass(frozen=True)
class LightingTensors:
    """`shading.LightArrays` as tensors: what the fitting engine optimises (set requires_grad on
    the fields to estimate, e.g. `ambient_sh` and `sun_irradiance`)."""

    ambient_sh: torch.Tensor  # [9, 3] world radiance, L2 SH coefficients L_lm
    sun_directions: torch.Tensor  # [S, 3] unit, the way the light travels
    sun_irradiance: torch.Tensor  # [S, 3] colour * strength, W/m^2
    point_positions: torch.Tensor  # [P, 3]
    point_intensity: torch.Tensor  # [P, 3] colour * power / (4 pi), W/sr
    point_radii: torch.Tensor  # [P]
    spot_positions: torch.Tensor  # [Q, 3]
    spot_directions: torch.Tensor  # [Q, 3] unit cone axes
    spot_intensity: torch.Tensor  # [Q, 3] colour * power / (4 pi), W/sr
    spot_radii: torch.Tensor  # [Q]
    spot_cos_half_angles: torch.Tensor  # [Q] cos(spot_size / 2)
    spot_blends: torch.Tensor  # [Q]
    area_positions: torch.Tensor  # [A, 3]
    area_directions: torch.Tensor  # [A, 3] unit facings
    area_intensity: torch.Tensor  # [A, 3] colour * power / pi, W/sr along the facing
    area_sizes: torch.Tensor  # [A] emitting areas, m^2

    @classmethod
    def from_lighting(
        cls, lighting: Lighting, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> LightingTensors:
        arrays = pack_lighting(lighting)
        return cls(
            **{
                item.name: torch.tensor(getattr(arrays, item.name), device=device, dtype=dtype)
                for item in dataclasses.fields(arrays)
            }
        )


def ambient_irradiance(normals: torch.Tensor, ambient_sh: torch.Tensor) -> torch.Tensor:
    """[N, 3] irradiance E_ambient at unit `normals` [N, 3] from the world radiance `ambient_sh` [9, 3]."""
    weights = irradiance_basis(normals) * torch.as_tensor(
        _CLAMPED_COSINE, dtype=normals.dtype, device=normals.device
    )
    return (weights @ ambient_sh).clamp_min(0.0)


@dataclass(frozen=True)
class DirectLighting:
    """What each light sends to each Gaussian: K = all suns, points, spots and areas, in that order."""

    directions: torch.Tensor  # [N, K, 3] unit, from the Gaussian towards the light
    irradiance: torch.Tensor  # [N, K, 3] E_k (cosine and falloff included), W/m^2


def direct_lighting(
    positions: torch.Tensor, normals: torch.Tensor, lights: LightingTensors
) -> DirectLighting:
    """The irradiance of every light at every Gaussian. positions: [N, 3] metres; normals: [N, 3] unit."""
    count = positions.shape[0]
    directions, irradiance = [], []

    def add(towards: torch.Tensor, color: torch.Tensor, falloff: torch.Tensor) -> None:
        cosine = torch.einsum("nkc,nc->nk", towards, normals).clamp_min(0.0)
        directions.append(towards)
        irradiance.append(color * (cosine * falloff)[..., None])

    suns = lights.sun_directions
    add((-suns).expand(count, *suns.shape), lights.sun_irradiance, positions.new_ones((count, suns.shape[0])))

    towards, distance_squared = _towards(positions, lights.point_positions)
    add(
        towards,
        lights.point_intensity,
        1 / torch.maximum(distance_squared, _radius_squared(lights.point_radii)),
    )

    towards, distance_squared = _towards(positions, lights.spot_positions)
    axis_cosine = -torch.einsum("nkc,kc->nk", towards, lights.spot_directions)
    cos_half = lights.spot_cos_half_angles
    edge_width = ((1 - cos_half) * lights.spot_blends).clamp_min(_TINY)
    cone = _smoothstep((axis_cosine - cos_half) / edge_width)
    add(
        towards,
        lights.spot_intensity,
        cone / torch.maximum(distance_squared, _radius_squared(lights.spot_radii)),
    )

    towards, distance_squared = _towards(positions, lights.area_positions)
    facing = (-torch.einsum("nkc,kc->nk", towards, lights.area_directions)).clamp_min(0.0)
    add(towards, lights.area_intensity, facing / (distance_squared + lights.area_sizes / math.pi))

    return DirectLighting(torch.cat(directions, dim=1), torch.cat(irradiance, dim=1))


def _towards(positions: torch.Tensor, light_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit directions [N, K, 3] from the Gaussians to the lights and squared distances [N, K]."""
    offsets = light_positions[None, :, :] - positions[:, None, :]
    distance_squared = (offsets * offsets).sum(-1)
    return offsets / distance_squared.clamp_min(_TINY).sqrt()[..., None], distance_squared


def _radius_squared(radii: torch.Tensor) -> torch.Tensor:
    return (radii * radii).clamp_min(_TINY)


def _smoothstep(t: torch.Tensor) -> torch.Tensor:
    t = t.clamp(0.0, 1.0)
    return t * t * (3 - 2 * t)


def specular_brdf(
    normals: torch.Tensor,
    light_dirs: torch.Tensor,
    view_dirs: torch.Tensor,
    roughness: torch.Tensor,
    f0: torch.Tensor,
) -> torch.Tensor:
    """The GGX BRDF value f_spec = D F V, broadcasting over leading axes.

    normals, light_dirs, view_dirs: [..., 3] unit; roughness, f0: [...]. Returns [...], per steradian.
    """
    alpha = (roughness * roughness).clamp_min(MIN_GGX_ALPHA)
    alpha2 = alpha * alpha
    n_dot_l = (normals * light_dirs).sum(-1)
    n_dot_v = (normals * view_dirs).sum(-1)
    half = light_dirs + view_dirs
    half = half / torch.linalg.vector_norm(half, dim=-1, keepdim=True).clamp_min(_TINY)
    n_dot_h = (normals * half).sum(-1)
    v_dot_h = (view_dirs * half).sum(-1).clamp(0.0, 1.0)
    sin2_h = (torch.linalg.cross(normals.expand_as(half), half, dim=-1) ** 2).sum(-1)
    distribution = alpha2 / (math.pi * (sin2_h + n_dot_h * n_dot_h * alpha2) ** 2)
    fresnel = f0 + ((50 * f0).clamp_max(1.0) - f0) * (1 - v_dot_h) ** 5
    lit, seen = n_dot_l.clamp_min(0.0), n_dot_v.clamp_min(0.0)
    visibility = 0.5 / (
        lit * torch.sqrt(seen * seen * (1 - alpha2) + alpha2)
        + seen * torch.sqrt(lit * lit * (1 - alpha2) + alpha2)
    ).clamp_min(_TINY)
    lobe = distribution * fresnel * visibility
    return torch.where((n_dot_l > 0) & (n_dot_v > 0), lobe, torch.zeros_like(lobe))


def relight(
    positions: torch.Tensor,
    normals: torch.Tensor,
    view_dirs: torch.Tensor,
    albedo: torch.Tensor,
    roughness: torch.Tensor,
    specular: torch.Tensor,
    lighting: LightingTensors,
) -> torch.Tensor:
    """[N, 3] relit linear colours of Gaussians, differentiable in every input.

    positions: [N, 3] metres; normals: [N, 3] unit; view_dirs: [N, 3] unit, towards the eye;
    albedo: [N, 3] linear; roughness, specular: [N]; lighting: on the same device and dtype.
    """
    direct = direct_lighting(positions, normals, lighting)
    irradiance = ambient_irradiance(normals, lighting.ambient_sh) + direct.irradiance.sum(dim=1)
    lobe = specular_brdf(
        normals[:, None, :],
        direct.directions,
        view_dirs[:, None, :],
        roughness[:, None],
        0.08 * specular[:, None],
    )
    return albedo * irradiance / math.pi + torch.einsum("nk,nkc->nc", lobe, direct.irradiance)


def view_directions(positions: torch.Tensor, camera_position: torch.Tensor) -> torch.Tensor:
    """[N, 3] unit directions from `positions` [N, 3] towards a camera at `camera_position` [3]."""
    offsets = camera_position[None, :] - positions
    return offsets / torch.linalg.vector_norm(offsets, dim=1, keepdim=True).clamp_min(_TINY)


def gaussian_normals(
    rotations: torch.Tensor, scales: torch.Tensor, view_dirs: torch.Tensor | None = None
) -> torch.Tensor:
    """[N, 3] unit normals: each Gaussian's axis of smallest scale, turned towards the viewer when
    `view_dirs` [N, 3] is given. rotations: [N, 4] (w, x, y, z); scales: [N, 3] (or log-scales)."""
    matrices = quaternion_to_matrix(rotations)
    thinnest = torch.argmin(scales, dim=1)
    normals = torch.gather(matrices, 2, thinnest[:, None, None].expand(-1, 3, 1))[:, :, 0]
    if view_dirs is not None:
        normals = torch.where((normals * view_dirs).sum(1, keepdim=True) < 0, -normals, normals)
    return normals


def captured_colors(sh: torch.Tensor, view_dirs: torch.Tensor) -> torch.Tensor:
    """[N, 3] the "as captured" 3DGS colours of `sh` [N, B, 3] seen along `view_dirs` [N, 3]
    (unit, towards the eye); display-referred. The renderer's own evaluator, along the ray from the
    camera (the numpy twin in `shading.py` is the copy Blender can load)."""
    return sh_to_color(sh, -view_dirs, math.isqrt(sh.shape[1]) - 1)
