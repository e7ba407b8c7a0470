"""The synthetic subject's outfit: its colours drawn from the seed, its albedo on the body, the
texture baked into the body's UV layout, and reading that texture back at surface points.

The outfit is a diffuse material only (albedo, no specular, no subsurface), so the build's
albedo/lighting split is exact up to shadows and interreflection.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..avatar import Rig
from ..maths.colour import linear_to_srgb, srgb_to_linear

_SKIN_TONES = np.array([[0.62, 0.43, 0.34], [0.50, 0.31, 0.21], [0.33, 0.19, 0.12], [0.16, 0.09, 0.06]])
_HAIR_COLOURS = np.array([[0.02, 0.015, 0.012], [0.09, 0.045, 0.02], [0.38, 0.26, 0.12], [0.30, 0.08, 0.03]])


def random_colour(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """[3] a saturated linear colour whose brightest channel lies in [low, high]."""
    hue = rng.uniform(0, 1)
    channels = np.clip(np.abs(((hue * 6 + np.array([0.0, 4.0, 2.0])) % 6) - 3) - 1, 0, 1)
    saturation = rng.uniform(0.45, 0.9)
    return (1 - saturation + saturation * channels) * rng.uniform(low, high)


def outfit_description(rng: np.random.Generator) -> dict[str, Any]:
    """The outfit's colours and patterns, drawn from the seed (recorded in gt.json)."""
    shirt = random_colour(rng, 0.25, 0.6)
    return {
        "skin": (_SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.1)).tolist(),
        "hair": (_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] * rng.uniform(0.9, 1.1)).tolist(),
        "shirt": shirt.tolist(),
        # The pattern's second colour: part of the way to a contrasting one, as printed fabric is.
        "shirt_second": (shirt + rng.uniform(0.35, 0.6) * (random_colour(rng, 0.1, 0.7) - shirt)).tolist(),
        "shirt_pattern": ["stripes", "checks", "dots"][int(rng.integers(3))],
        "shirt_period_m": float(rng.uniform(0.04, 0.08)),
        "long_sleeves": bool(rng.random() < 0.5),
        "print": random_colour(rng, 0.5, 0.85).tolist(),
        "trousers": random_colour(rng, 0.04, 0.2).tolist(),
        "belt": (np.array([0.05, 0.035, 0.02]) * rng.uniform(0.7, 1.5)).tolist(),
        "shoes": random_colour(rng, 0.02, 0.5).tolist(),
        "soles": [0.75, 0.75, 0.72],
    }


PATTERNS = ("stripes", "checks", "dots", "plaid", "plain")


def pattern_mask(points: np.ndarray, pattern: str, period: float) -> np.ndarray:
    """[N] where a two-colour fabric pattern takes its second colour, at points [N, 3] (metres):
    solid texturing, so the pattern never shows a UV seam."""
    x, y, z = points.T
    if pattern == "stripes":
        return np.sin(2 * np.pi * z / period) > 0.3
    if pattern == "checks":
        return (np.floor(x / period) + np.floor(y / period) + np.floor(z / period)) % 2 == 0
    if pattern == "dots":
        lattice = (points / period) - np.round(points / period)
        return np.linalg.norm(lattice, axis=1) < 0.28
    if pattern == "plaid":  # two crossing sets of bands, read round the body and down it
        across = np.sin(2 * np.pi * (x + y) / period) > 0.5
        down = np.sin(2 * np.pi * z / period) > 0.5
        return across ^ down
    if pattern == "plain":
        return np.zeros(len(points), bool)
    raise ValueError(f"Unknown pattern '{pattern}'. Use one of: {', '.join(PATTERNS)}.")


def dominant_joints(rig: Rig) -> np.ndarray:
    """[V] the joint with the largest skin weight of each vertex."""
    strongest = np.argmax(rig.skin_weights, axis=1)
    return rig.skin_indices[np.arange(rig.vertex_count), strongest]


def outfit_albedo_at(
    rig: Rig, outfit: dict[str, Any], triangle_ids: np.ndarray, barycentrics: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """[N, 3] linear albedo of the outfit at surface points of the rest mesh (solid texturing:
    patterns are functions of the rest position, so UV seams never show).

    triangle_ids: [N]; barycentrics: [N, 3]; noise: [N] fabric grain in about [-1, 1].
    """
    corners = rig.triangles[triangle_ids]
    points = np.einsum("nk,nkc->nc", barycentrics, rig.vertices[corners])
    nearest = corners[np.arange(len(corners)), np.argmax(barycentrics, axis=1)]
    names = np.asarray(rig.joint_names, dtype=object)[dominant_joints(rig)[nearest]]
    x, y, z = points.T

    def part(*fragments: str) -> np.ndarray:
        return np.array([any(fragment in name for fragment in fragments) for name in names], dtype=bool)

    def colour(key: str) -> np.ndarray:
        return np.asarray(outfit[key], np.float64)

    albedo = np.tile(colour("skin"), (len(points), 1))
    heads = rig.bone_heads.astype(np.float64)
    waist = heads[rig.joint_index("root"), 2] + 0.07
    chest = heads[rig.joint_index("spine02"), 2]
    sleeves = ("upperarm", "lowerarm") if outfit["long_sleeves"] else ("upperarm01",)
    shirt = part("spine", "clavicle", "shoulder", "pelvis", "root", *sleeves) & (z >= waist)
    legs = part("upperleg", "lowerleg") | (part("spine", "pelvis", "root") & (z < waist))
    if "bare_legs_below_m" in outfit:  # under a skirt or a dress: shorts, then bare legs
        legs &= z >= outfit["bare_legs_below_m"]

    second = pattern_mask(points, outfit["shirt_pattern"], outfit["shirt_period_m"])
    albedo[shirt] = colour("shirt")
    albedo[shirt & second] = colour("shirt_second")
    # A round print with a ring on the chest, front only (the body faces -Y).
    chest_centre = np.array([0.0, heads[rig.joint_index("spine02"), 1] - 0.15, chest + 0.02])
    radial = np.hypot(x - chest_centre[0], z - chest_centre[2])
    front = y < chest_centre[1] + 0.08
    print_mark = shirt & front & ((radial < 0.045) | ((radial > 0.06) & (radial < 0.07)))
    albedo[print_mark] = colour("print")

    albedo[legs] = colour("trousers")
    # Seams down the outside of each leg and a twill of fine diagonal lines.
    twill = np.sin(2 * np.pi * (z + 0.5 * np.abs(x)) / 0.025) > 0.6
    albedo[legs & twill] *= 1.15
    belt = (part("spine", "pelvis", "root") | part("upperleg")) & (np.abs(z - waist) < 0.025)
    albedo[belt] = colour("belt")
    feet = part("foot", "toe")
    albedo[feet] = colour("shoes")
    albedo[feet & (z < 0.025)] = colour("soles")

    # Hair on the scalp: above a hairline over the eyes, lower at the back of the head.
    eyes = [heads[rig.joint_index(name)] for name in ("eye.L", "eye.R") if name in rig.joint_names]
    eye_centre = np.mean(eyes, axis=0) if eyes else heads[rig.joint_index("head")] + [0, -0.08, 0.08]
    head = part("head", "neck02", "neck03")
    behind = (y - eye_centre[1]) / 0.12  # 0 at the eyes, 1 about at the back of the skull
    hairline = eye_centre[2] + 0.045 - 0.13 * np.clip(behind, 0, 1)
    albedo[head & (z > hairline)] = colour("hair")
    eyeballs = part("eye.")
    if eyeballs.any():
        centres = heads[[rig.joint_index(name) for name in names[eyeballs]]]
        offsets = points[eyeballs] - centres
        radius = np.linalg.norm(offsets, axis=1)
        iris = -offsets[:, 1] > 0.82 * radius
        pupil = -offsets[:, 1] > 0.96 * radius
        albedo[eyeballs] = np.where(iris[:, None], [0.12, 0.07, 0.03], [0.75, 0.74, 0.72])
        albedo[np.flatnonzero(eyeballs)[pupil]] = [0.01, 0.01, 0.01]
    grain = 1.0 + 0.06 * noise[:, None] * (shirt | legs)[:, None] + 0.02 * noise[:, None]
    return np.clip(albedo * grain, 0.0, 1.0)


def covered_texels(
    corners_uv: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The texels of an [S, S] texture that UV triangles (`corners_uv` [F, 3, 2]) cover: rows [T],
    columns [T], the triangle of each [T] and the barycentrics of its centre in that triangle [T, 3]."""
    import cv2

    corners_uv = np.asarray(corners_uv, np.float64)
    # Pixel centres at integer coordinates; 4 bits of sub-pixel precision for OpenCV.
    pixel = np.stack([corners_uv[..., 0] * size - 0.5, (1 - corners_uv[..., 1]) * size - 0.5], axis=-1)
    ids = np.zeros((size, size), np.int32)
    fixed = np.round(pixel * 16).astype(np.int32)
    for triangle, polygon in enumerate(fixed):
        cv2.fillConvexPoly(ids, polygon, triangle + 1, lineType=cv2.LINE_8, shift=4)
    rows, columns = np.nonzero(ids)
    triangle_ids = ids[rows, columns] - 1
    a, b, c = (pixel[triangle_ids, k] for k in range(3))
    point = np.stack([columns, rows], axis=1).astype(np.float64)
    v0, v1, v2 = b - a, c - a, point - a
    denominator = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    denominator = np.where(np.abs(denominator) < 1e-12, 1e-12, denominator)
    weight1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / denominator
    weight2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / denominator
    barycentrics = np.clip(np.stack([1 - weight1 - weight2, weight1, weight2], axis=1), 0, 1)
    barycentrics /= barycentrics.sum(1, keepdims=True)
    return rows, columns, triangle_ids, barycentrics


def bleed(texture: np.ndarray, covered: np.ndarray, texels: int = 4) -> np.ndarray:
    """`texture` [S, S, 3] with its colours spread `texels` past the covered islands' borders, so
    bilinear lookups at seams stay clean."""
    import cv2

    filled, known = texture.copy(), covered.copy()
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(texels):
        grown = cv2.dilate(known.astype(np.uint8), kernel).astype(bool) & ~known
        total = cv2.blur(filled * known[..., None], (3, 3))
        weight = cv2.blur(known.astype(np.float64), (3, 3))
        filled[grown] = total[grown] / weight[grown][:, None]
        known |= grown
    return filled


def bake_outfit_texture(
    rig: Rig, outfit: dict[str, Any], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The outfit baked into the rig's UV layout: sRGB texture [S, S, 3] uint8 (row 0 at the top,
    as image files store it; V = 1 at the top) and the covered-texel mask [S, S]."""
    rows, columns, triangle_ids, barycentrics = covered_texels(rig.uvs[rig.triangle_uvs], size)
    noise = rng.uniform(-1, 1, len(rows))
    albedo = outfit_albedo_at(rig, outfit, triangle_ids, barycentrics, noise)
    texture = np.zeros((size, size, 3), np.float64)
    texture[rows, columns] = linear_to_srgb(albedo)  # outfit_albedo_at clips to [0, 1]
    covered = np.zeros((size, size), bool)
    covered[rows, columns] = True
    return (np.clip(bleed(texture, covered), 0, 1) * 255 + 0.5).astype(np.uint8), covered


def sample_texture(
    rig: Rig, texture: np.ndarray, triangle_ids: np.ndarray, barycentrics: np.ndarray
) -> np.ndarray:
    """[N, 3] linear albedo read bilinearly from an sRGB `texture` [S, S, 3] uint8 at surface points
    (`triangle_ids` [N], `barycentrics` [N, 3])."""
    uv = np.einsum("nk,nkc->nc", barycentrics, rig.uvs[rig.triangle_uvs[triangle_ids]].astype(np.float64))
    size = texture.shape[0]
    column = np.clip(uv[:, 0] * size - 0.5, 0, size - 1.001)
    row = np.clip((1 - uv[:, 1]) * size - 0.5, 0, size - 1.001)
    c0, r0 = np.floor(column).astype(int), np.floor(row).astype(int)
    fc, fr = (column - c0)[:, None], (row - r0)[:, None]
    srgb = texture.astype(np.float64) / 255
    value = (
        srgb[r0, c0] * (1 - fc) * (1 - fr)
        + srgb[r0, c0 + 1] * fc * (1 - fr)
        + srgb[r0 + 1, c0] * (1 - fc) * fr
        + srgb[r0 + 1, c0 + 1] * fc * fr
    )
    return srgb_to_linear(np.clip(value, 0.0, 1.0))
