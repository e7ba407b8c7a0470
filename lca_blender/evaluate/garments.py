"""Clothes and hair as real geometry for synthetic subjects: a flared skirt, a dress's skirt, a long
coat (open or closed), loose trousers, a ponytail, long hair, glasses and shoes larger than the feet.

Each garment is a simple mesh built in numpy round the rig's rest mesh, with its own UVs, a texture
baked from a solid pattern (a function of the rest position, as the body's outfit is) and dense
skin weights on the rig's joints, so linear blend skinning poses it with the body:

- Offset shells (the coat's body and sleeves, loose trousers, shoes, the hair on the scalp) copy
  part of the body mesh, pushed out along the normals, and copy its skin weights.
- Drapes (skirts, a coat's skirt, the curtain of long hair) hang from a ring round the body: at
  each height, round each direction, the cloth lies just outside the body's extent there (its
  support function), never further in than above it, plus the garment's flare. A skirt blends
  the hips' weights at its waistband into its thighs' towards the hem, the left and right
  thighs' weights mixed smoothly across the front and back, so the hem stays one surface between
  the legs in a stride (exactly what a product must do with a skirt).
- Tubes (a ponytail, the glasses' rims, bridge and temples) run along a centreline: a ponytail
  blends the head's weights into its upper back's, glasses follow the head alone.

Everything random comes from the generator the caller passes (synthetic.py keeps it apart from the
draws that existing subjects depend on).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..avatar import Rig
from ..maths.colour import linear_to_srgb
from ..maths.deform import vertex_normals
from .outfit import bleed, covered_texels, dominant_joints, pattern_mask, random_colour

GARMENTS = ("skirt", "dress", "coat", "trousers", "ponytail", "long_hair", "glasses", "shoes")
"""The garments a subject can wear (`SubjectSettings.garments`), in the order they are made."""

GARMENT_TEXTURE_SIZE = 512  # texels a side of each garment's texture
_BAND = 0.025  # half-height (m) of the slice of body a drape ring wraps round


@dataclass(frozen=True)
class Garment:
    """One garment as the renderer and the ground truth see it."""

    name: str
    vertices: np.ndarray  # [G, 3] float32 at rest
    triangles: np.ndarray  # [T, 3] int32
    corner_uvs: np.ndarray  # [T, 3, 2] float32, V = 1 at the texture's top row
    skin_weights: np.ndarray  # [G, J] float32 per joint of the rig, rows sum to 1
    texture: np.ndarray  # [S, S, 3] uint8 sRGB, row 0 at the top
    description: dict[str, Any]  # colours, pattern and sizes (gt.json's "garments")


@dataclass(frozen=True)
class _Piece:
    """Part of a garment before its UVs are packed with the other parts into one texture."""

    vertices: np.ndarray  # [G, 3] float64
    triangles: np.ndarray  # [T, 3]
    corner_uvs: np.ndarray  # [T, 3, 2] in [0, 1]
    skin_weights: np.ndarray  # [G, J]


class _Body:
    """The rig's rest mesh as garments see it: points, normals, dense weights, landmarks."""

    def __init__(self, rig: Rig):
        self.rig = rig
        self.points = rig.vertices.astype(np.float64)
        self.normals = vertex_normals(self.points, rig.triangles)
        self.weights = np.zeros((rig.vertex_count, rig.joint_count), np.float64)
        rows = np.repeat(np.arange(rig.vertex_count), rig.skin_indices.shape[1])
        np.add.at(self.weights, (rows, rig.skin_indices.ravel()), rig.skin_weights.ravel())
        self.parts = np.asarray(rig.joint_names, dtype=object)[dominant_joints(rig)]
        heads = rig.bone_heads.astype(np.float64)
        self.head = heads[rig.joint_index("head")]
        self.eyes = (heads[rig.joint_index("eye.L")], heads[rig.joint_index("eye.R")])
        self.waist = heads[rig.joint_index("root"), 2] + 0.07  # the outfit's waist (outfit.py)
        self.hip = heads[rig.joint_index("upperleg01.L"), 2]
        self.knee = heads[rig.joint_index("lowerleg01.L"), 2]
        self.ankle = heads[rig.joint_index("foot.L"), 2]
        self.shoulder = heads[rig.joint_index("shoulder01.L"), 2]
        self.centre = heads[rig.joint_index("root"), :2]

    def region(self, *fragments: str) -> np.ndarray:
        """[V] the vertices whose strongest joint's name contains one of `fragments`."""
        return np.array([any(part in name for part in fragments) for name in self.parts], bool)

    def joint_weights(self, name: str) -> np.ndarray:
        """[J] all weight on one joint."""
        weights = np.zeros(self.rig.joint_count)
        weights[self.rig.joint_index(name)] = 1.0
        return weights


def _nearest_weights(body: _Body, candidates: np.ndarray, points: np.ndarray, k: int = 6) -> np.ndarray:
    """[N, J] skin weights at `points` [N, 3]: the inverse-distance mean over the `k` nearest body
    vertices among `candidates` [V] (a mask)."""
    pool = body.points[candidates]
    pool_weights = body.weights[candidates]
    squared_pool = (pool * pool).sum(1)
    result = np.empty((len(points), body.rig.joint_count))
    for start in range(0, len(points), 512):
        chunk = points[start : start + 512]
        distances = (chunk * chunk).sum(1)[:, None] + squared_pool[None] - 2 * chunk @ pool.T
        nearest = np.argpartition(distances, k, axis=1)[:, :k]
        gaps = np.sqrt(np.maximum(np.take_along_axis(distances, nearest, axis=1), 0.0))
        inverse = 1.0 / (gaps + 1e-3)
        result[start : start + len(chunk)] = np.einsum("nk,nkj->nj", inverse, pool_weights[nearest])
        result[start : start + len(chunk)] /= inverse.sum(1, keepdims=True)
    return result


def _grid(rows: int, columns: int, closed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Triangles [T, 3] and corner UVs [T, 3, 2] of a rows x columns vertex grid (vertex r * columns
    + c), its columns closed into a ring when `closed`; U runs along a row, V down the columns."""
    spans = columns if closed else columns - 1
    row, column = (
        index.ravel() for index in np.meshgrid(np.arange(rows - 1), np.arange(spans), indexing="ij")
    )
    corners = [(row, column), (row + 1, column), (row + 1, column + 1), (row, column + 1)]
    vertex = [r * columns + c % columns for r, c in corners]
    uv = [np.stack([c / spans, 1 - r / (rows - 1)], axis=-1) for r, c in corners]
    triangles = np.concatenate(
        [np.stack([vertex[0], vertex[1], vertex[2]], 1), np.stack([vertex[0], vertex[2], vertex[3]], 1)]
    )
    corner_uvs = np.concatenate([np.stack([uv[0], uv[1], uv[2]], 1), np.stack([uv[0], uv[2], uv[3]], 1)])
    return triangles.astype(np.int32), corner_uvs


def _smoothstep(value: np.ndarray) -> np.ndarray:
    value = np.clip(value, 0.0, 1.0)
    return value * value * (3 - 2 * value)


# Drapes -------------------------------------------------------------------------------------------


def _drape(
    body: _Body,
    candidates: np.ndarray,
    levels: np.ndarray,
    angles: np.ndarray,
    ease: float,
    flare: np.ndarray,
    centre: np.ndarray,
) -> np.ndarray:
    """[R, S, 3] cloth hanging round the body: ring r at height `levels[r]` (top first), point s in
    direction `angles[s]` (radians, 0 = +X, pi/2 = +Y = the back) from `centre` [2], at the body's
    extent there plus `ease`, never further in than the ring above, plus `flare[r]`."""
    directions = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    radius = np.empty((len(levels), len(angles)))
    for ring, height in enumerate(levels):
        band = candidates & (np.abs(body.points[:, 2] - height) < _BAND)
        if not band.any():
            raise ValueError(f"No body round the drape at {height:.2f} m.")
        radius[ring] = ((body.points[band, :2] - centre) @ directions.T).max(axis=0)
    radius = np.maximum.accumulate(radius, axis=0) + ease + np.asarray(flare)[:, None]
    # A light blur round the ring: cloth bridges small dents.
    padded = np.pad(radius, ((0, 0), (1, 1)), mode="wrap" if _is_ring(angles) else "edge")
    radius = (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) / 3
    points = np.empty((len(levels), len(angles), 3))
    points[..., :2] = centre + radius[..., None] * directions
    points[..., 2] = levels[:, None]
    return points


def _is_ring(angles: np.ndarray) -> bool:
    return bool(np.isclose(angles[-1] - angles[0] + (angles[1] - angles[0]), 2 * np.pi))


def _skirt_piece(body: _Body, top: float, hem: float, flare: float, opening: float = 0.0) -> _Piece:
    """A flared skirt from `top` down to `hem` (heights), `flare` wider at the hem; with an
    `opening` (radians) the front is open (a coat). Weights: hips at the top, thighs at the hem."""
    rows = max(int((top - hem) / 0.025), 4) + 1
    levels = np.linspace(top, hem, rows)
    front = -np.pi / 2
    if opening > 0:
        angles = np.linspace(front + opening / 2, front + 2 * np.pi - opening / 2, 61)
    else:
        angles = front + np.linspace(0, 2 * np.pi, 72, endpoint=False)
    lower_body = body.region("upperleg", "pelvis", "root", "spine05", "spine04")
    fall = np.linspace(0, 1, rows) ** 1.2
    points = _drape(body, lower_body, levels, angles, 0.012, flare * fall, body.centre)
    flat = points.reshape(-1, 3)
    hips = _nearest_weights(body, body.region("root", "pelvis", "spine05", "spine04"), points[0])
    left = _nearest_weights(body, body.region("upperleg01.L", "upperleg02.L"), flat)
    right = _nearest_weights(body, body.region("upperleg01.R", "upperleg02.R"), flat)
    # Left of the body is +X: mix the thighs smoothly all across the front and the back, each
    # thigh alone only at its side, so a stride stretches the hem evenly instead of tearing it.
    half_width = 0.5 * float(np.ptp(points[0, :, 0]))
    side = _smoothstep(0.5 + flat[:, 0] / (1.8 * half_width))[:, None]
    follow = (0.9 * fall)[:, None, None]
    thighs = (side * left + (1 - side) * right).reshape(rows, len(angles), -1)
    weights = (1 - follow) * hips[None] + follow * thighs
    triangles, corner_uvs = _grid(rows, len(angles), closed=opening <= 0)
    return _Piece(flat, triangles, corner_uvs, weights.reshape(len(flat), -1))


def _hair_curtain_piece(body: _Body, length: float) -> _Piece:
    """Long hair falling behind the head onto the upper back: a drape over the back half, its
    weights the head's at the top, the upper back's towards the ends."""
    eye_height = float(np.mean([eye[2] for eye in body.eyes]))
    levels = np.linspace(eye_height + 0.02, body.shoulder - length, 22)
    angles = np.pi / 2 + np.radians(np.linspace(-80, 80, 41))
    support = body.region("head", "neck", "spine01", "spine02", "clavicle", "shoulder01")
    points = _drape(body, support, levels, angles, 0.012, np.zeros(len(levels)), body.head[:2])
    flat = points.reshape(-1, 3)
    fall = np.repeat(np.linspace(0, 1, len(levels)), len(angles))[:, None]
    back = _nearest_weights(body, body.region("neck", "spine01", "spine02", "clavicle"), flat)
    weights = (1 - 0.85 * fall) * body.joint_weights("head") + 0.85 * fall * back
    triangles, corner_uvs = _grid(len(levels), len(angles), closed=False)
    return _Piece(flat, triangles, corner_uvs, weights)


# Shells -------------------------------------------------------------------------------------------


def _shell_piece(body: _Body, triangle_mask: np.ndarray, offsets: np.ndarray) -> _Piece:
    """The body triangles `triangle_mask` [F] selects, pushed out by `offsets` [V] (m) along the
    normals, with the body's UVs and skin weights."""
    rig = body.rig
    chosen = rig.triangles[triangle_mask]
    used, triangles = np.unique(chosen, return_inverse=True)
    points = body.points[used] + offsets[used, None] * body.normals[used]
    corner_uvs = rig.uvs[rig.triangle_uvs[triangle_mask]].astype(np.float64)
    return _Piece(points, triangles.reshape(-1, 3), corner_uvs, body.weights[used])


def _triangles_within(body: _Body, vertex_mask: np.ndarray) -> np.ndarray:
    """[F] the body triangles whose three corners `vertex_mask` [V] holds."""
    return vertex_mask[body.rig.triangles].all(axis=1)


def _coat_body_piece(body: _Body, thickness: float, opening: float) -> _Piece:
    """A coat's body and sleeves (to the wrists), open at the front by `opening` (m) if > 0."""
    z = body.points[:, 2]
    trunk = body.region("spine", "root", "pelvis", "clavicle", "shoulder01") & (z > body.waist - 0.04)
    arms = body.region("upperarm", "lowerarm")
    chosen = _triangles_within(body, trunk | arms)
    if opening > 0:
        centroids = body.points[body.rig.triangles].mean(axis=1)
        in_front = centroids[:, 1] < body.centre[1]
        chosen &= ~(_triangles_within(body, trunk) & in_front & (np.abs(centroids[:, 0]) < opening / 2))
    return _shell_piece(body, chosen, np.full(len(z), thickness))


def _trousers_piece(body: _Body, hem_ease: float) -> _Piece:
    """Loose trousers: the legs and hips below the waist, pushed out from 8 mm at the waist to
    `hem_ease` at the ankles."""
    z = body.points[:, 2]
    legs = body.region("upperleg", "lowerleg", "pelvis", "root", "spine05")
    legs &= (z < body.waist) & (z > body.ankle + 0.03)
    down = np.clip((body.waist - z) / (body.waist - body.ankle), 0, 1) ** 1.5
    return _shell_piece(body, _triangles_within(body, legs), 0.008 + (hem_ease - 0.008) * down)


def _shoes_piece(body: _Body, ease: float) -> _Piece:
    """Shoes: the feet pushed out by `ease`, the soles kept on the ground."""
    feet = body.region("foot", "toe") & (body.points[:, 2] < body.ankle + 0.03)
    piece = _shell_piece(body, _triangles_within(body, feet), np.full(body.rig.vertex_count, ease))
    grounded = piece.vertices.copy()
    grounded[:, 2] = np.maximum(grounded[:, 2], 0.0)
    return dataclasses.replace(piece, vertices=grounded)


def _scalp_piece(body: _Body) -> _Piece:
    """Hair on the scalp, 1 cm proud of it, above the hairline the outfit paints (outfit.py)."""
    eye_centre = np.mean(body.eyes, axis=0)
    x, y, z = body.points.T
    behind = (y - eye_centre[1]) / 0.12
    scalp = body.region("head", "neck02", "neck03") & (
        z > eye_centre[2] + 0.045 - 0.13 * np.clip(behind, 0, 1)
    )
    return _shell_piece(body, _triangles_within(body, scalp), np.full(len(z), 0.01))


# Tubes --------------------------------------------------------------------------------------------


def _tube_piece(centreline: np.ndarray, radii: np.ndarray, weights: np.ndarray, sides: int = 12) -> _Piece:
    """A tube of `radii` [L] round `centreline` [L, 3], frames carried along it (no twist), with
    skin weights [L, J] per ring."""
    tangents = np.gradient(centreline, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    normal = np.cross(tangents[0], [0.0, 0.0, 1.0] if abs(tangents[0, 2]) < 0.9 else [1.0, 0.0, 0.0])
    normals = []
    for tangent in tangents:
        normal = normal - (normal @ tangent) * tangent
        normal /= np.linalg.norm(normal)
        normals.append(normal)
    normals = np.asarray(normals)
    binormals = np.cross(tangents, normals)
    around = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    offsets = (
        np.cos(around)[None, :, None] * normals[:, None] + np.sin(around)[None, :, None] * binormals[:, None]
    )
    points = centreline[:, None] + radii[:, None, None] * offsets
    triangles, corner_uvs = _grid(len(centreline), sides, closed=True)
    return _Piece(points.reshape(-1, 3), triangles, corner_uvs, np.repeat(weights, sides, axis=0))


def _back_surface(body: _Body, heights: np.ndarray) -> np.ndarray:
    """[L] how far back (+Y) the head, neck and back reach near the middle (|x| < 6 cm) at each height."""
    middle = body.region("head", "neck", "spine", "clavicle") & (np.abs(body.points[:, 0]) < 0.06)
    reach = []
    for height in heights:
        band = middle & (np.abs(body.points[:, 2] - height) < 0.02)
        reach.append(body.points[band, 1].max() if band.any() else reach[-1])
    return np.asarray(reach)


def _ponytail_piece(body: _Body, length: float, thickness: float) -> _Piece:
    """A ponytail tied at the back of the head, hanging down the neck and back, tapering."""
    eye_height = float(np.mean([eye[2] for eye in body.eyes]))
    start_height = eye_height + 0.04
    fall = np.linspace(0, 1, 28)
    heights = start_height - length * fall
    radii = thickness * (0.55 + 0.45 * _smoothstep(fall / 0.12)) * (1 - 0.7 * fall)
    tie = float(_back_surface(body, np.array([start_height]))[0])
    centre_y = np.maximum(
        _back_surface(body, heights) + radii + 0.008, tie + 0.02 + 0.03 * _smoothstep(fall / 0.15)
    )
    centreline = np.stack([np.zeros_like(heights), centre_y, heights], axis=1)
    centreline[0, 1] = tie - 0.01  # the tie starts inside the hair, so no gap shows
    back = _nearest_weights(body, body.region("neck", "spine01", "spine02"), centreline)
    follow = (0.85 * _smoothstep(fall / 0.6))[:, None]
    weights = (1 - follow) * body.joint_weights("head") + follow * back
    return _tube_piece(centreline, radii, weights)


def _glasses_pieces(body: _Body) -> list[_Piece]:
    """Thin frames 3 cm in front of the eyes: two rounded rims, a bridge, two temples to the ears."""
    left, right = body.eyes
    half_width = min(0.025, 0.5 * abs(left[0] - right[0]) - 0.005)
    front = min(left[1], right[1]) - 0.03
    head = body.region("head") & (np.abs(body.points[:, 2] - left[2]) < 0.015)
    temple_x = float(np.abs(body.points[head, 0]).max()) + 0.006
    around = np.linspace(0, 2 * np.pi, 41)
    rounded = (
        np.sign(np.cos(around)) * np.abs(np.cos(around)) ** 0.5,
        np.sign(np.sin(around)) * np.abs(np.sin(around)) ** 0.5,
    )
    head_only = body.joint_weights("head")
    pieces = []
    for eye, side in ((left, 1.0), (right, -1.0)):
        rim = np.stack(
            [eye[0] + half_width * rounded[0], np.full(41, front), eye[2] + 0.75 * half_width * rounded[1]], 1
        )
        pieces.append(_tube_piece(rim, np.full(41, 0.0022), np.tile(head_only, (41, 1)), sides=6))
        hinge = np.array([side * temple_x, front + 0.006, eye[2] + 0.004])
        ear = np.array([side * temple_x, body.head[1] + 0.02, eye[2] - 0.004])
        outer = np.array([eye[0] + side * half_width, front, eye[2]])
        temple = np.concatenate([np.linspace(outer, hinge, 4), np.linspace(hinge, ear, 10)[1:]])
        pieces.append(
            _tube_piece(temple, np.full(len(temple), 0.002), np.tile(head_only, (len(temple), 1)), sides=6)
        )
    bridge_x = np.linspace(left[0] - half_width, right[0] + half_width, 9)
    arch = np.sin(np.linspace(0, np.pi, 9))
    bridge = np.stack([bridge_x, front - 0.004 * arch, left[2] + 0.004 + 0.004 * arch], 1)
    pieces.append(_tube_piece(bridge, np.full(9, 0.002), np.tile(head_only, (9, 1)), sides=6))
    return pieces


# Dressing ------------------------------------------------------------------------------------------

Paint = Callable[[np.ndarray], np.ndarray]  # rest points [N, 3] -> linear albedo [N, 3]
_FRAME_COLOURS = np.array(
    [[0.01, 0.01, 0.012], [0.09, 0.04, 0.015], [0.02, 0.03, 0.09], [0.25, 0.02, 0.03], [0.3, 0.3, 0.32]]
)


def _second_colour(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """A fabric's pattern colour: part of the way from `colour` to a contrasting one."""
    return colour + rng.uniform(0.35, 0.6) * (random_colour(rng, 0.1, 0.7) - colour)


def _fabric(rng: np.random.Generator, low: float, high: float, patterns: tuple[str, ...]) -> dict[str, Any]:
    """A drawn fabric: colour, pattern colour, pattern and its period."""
    colour = random_colour(rng, low, high)
    return {
        "colour": colour.tolist(),
        "second": _second_colour(rng, colour).tolist(),
        "pattern": patterns[int(rng.integers(len(patterns)))],
        "period_m": float(rng.uniform(0.03, 0.08)),
    }


def _fabric_paint(fabric: dict[str, Any]) -> Paint:
    def paint(points: np.ndarray) -> np.ndarray:
        second = pattern_mask(points, fabric["pattern"], fabric["period_m"])
        return np.where(second[:, None], np.asarray(fabric["second"]), np.asarray(fabric["colour"]))

    return paint


def _hair_paint(colour: list[float]) -> Paint:
    def paint(points: np.ndarray) -> np.ndarray:
        strands = 1 + 0.12 * np.sin(2 * np.pi * (points[:, 0] + 0.4 * points[:, 1]) / 0.012)
        return np.asarray(colour) * strands[:, None]

    return paint


def _shoe_paint(colour: list[float], sole: list[float]) -> Paint:
    def paint(points: np.ndarray) -> np.ndarray:
        return np.where((points[:, 2] < 0.02)[:, None], np.asarray(sole), np.asarray(colour))

    return paint


def _twill_paint(colour: list[float]) -> Paint:
    def paint(points: np.ndarray) -> np.ndarray:  # the body's trouser twill (outfit.py)
        twill = np.sin(2 * np.pi * (points[:, 2] + 0.5 * np.abs(points[:, 0])) / 0.025) > 0.6
        return np.asarray(colour) * np.where(twill, 1.15, 1.0)[:, None]

    return paint


def outfit_for_garments(
    rig: Rig, outfit: dict[str, Any], names: tuple[str, ...], rng: np.random.Generator
) -> dict[str, Any]:
    """The body's painted outfit under `names`: bare legs below shorts under a skirt or a dress, a
    dress's fabric on the body in place of the shirt (its skirt repeats it)."""
    outfit = dict(outfit)
    heads = rig.bone_heads.astype(np.float64)
    if "skirt" in names or "dress" in names:
        knee, hip = heads[rig.joint_index("lowerleg01.L"), 2], heads[rig.joint_index("upperleg01.L"), 2]
        outfit["bare_legs_below_m"] = float(knee + 0.55 * (hip - knee))
    if "dress" in names:
        fabric = _fabric(rng, 0.2, 0.65, ("plain", "stripes", "dots", "checks"))
        outfit |= {
            "shirt": fabric["colour"],
            "shirt_second": fabric["second"],
            "shirt_pattern": fabric["pattern"],
            "shirt_period_m": fabric["period_m"],
            "print": fabric["colour"],
            "long_sleeves": False,
        }
    return outfit


Made = tuple[list[_Piece], Paint, dict[str, Any]]  # a garment's pieces, paint and description


def _skirt(body: _Body, outfit: dict[str, Any], rng: np.random.Generator) -> Made:
    fabric = _fabric(rng, 0.15, 0.6, ("plain", "stripes", "checks", "plaid", "dots"))
    hem, flare = body.knee + rng.uniform(-0.03, 0.06), rng.uniform(0.06, 0.16)
    piece = _skirt_piece(body, body.waist, hem, flare)
    return [piece], _fabric_paint(fabric), fabric | {"hem_m": hem, "flare_m": flare}


def _dress(body: _Body, outfit: dict[str, Any], rng: np.random.Generator) -> Made:
    keys = {
        "colour": "shirt",
        "second": "shirt_second",
        "pattern": "shirt_pattern",
        "period_m": "shirt_period_m",
    }
    fabric = {key: outfit[source] for key, source in keys.items()}  # the bodice's (outfit_for_garments)
    hem, flare = body.knee - rng.uniform(0.0, 0.1), rng.uniform(0.08, 0.2)
    piece = _skirt_piece(body, body.waist, hem, flare)
    return [piece], _fabric_paint(fabric), fabric | {"hem_m": hem, "flare_m": flare}


def _coat(body: _Body, outfit: dict[str, Any], rng: np.random.Generator) -> Made:
    fabric = _fabric(rng, 0.06, 0.35, ("plain", "checks", "plaid"))
    is_open = bool(rng.random() < 0.5)
    hem = body.knee + rng.uniform(0.0, 0.25) * (body.hip - body.knee)
    flare = rng.uniform(0.03, 0.08)
    pieces = [
        _coat_body_piece(body, 0.02, 0.16 if is_open else 0.0),
        _skirt_piece(body, body.waist + 0.04, hem, flare, opening=0.9 if is_open else 0.0),
    ]
    return pieces, _fabric_paint(fabric), fabric | {"open": is_open, "hem_m": hem, "flare_m": flare}


def _trousers(body: _Body, outfit: dict[str, Any], rng: np.random.Generator) -> Made:
    ease = rng.uniform(0.03, 0.055)
    description = {"colour": outfit["trousers"], "hem_ease_m": ease}
    return [_trousers_piece(body, ease)], _twill_paint(outfit["trousers"]), description


def _ponytail(body: _Body, outfit: dict[str, Any], rng: np.random.Generator) -> Made:
    length, thickness = rng.uniform(0.22, 0.36), rng.uniform(0.025, 0.035)
    description = {"colour": outfit["hair"], "length_m": length, "radius_m": thickness}
    return [_ponytail_piece(body, length, thickness)], _hair_paint(outfit["hair"]), description


def _long_hair(body: _Body, outfit: dict[str, Any], rng: np.random.Generator) -> Made:
    length = rng.uniform(0.08, 0.22)
    pieces = [_scalp_piece(body), _hair_curtain_piece(body, length)]
    return pieces, _hair_paint(outfit["hair"]), {"colour": outfit["hair"], "below_shoulders_m": length}


def _glasses(body: _Body, outfit: dict[str, Any], rng: np.random.Generator) -> Made:
    colour = (_FRAME_COLOURS[rng.integers(len(_FRAME_COLOURS))] * rng.uniform(0.9, 1.1)).tolist()
    plain = {"colour": colour, "second": colour, "pattern": "plain", "period_m": 1.0}
    return _glasses_pieces(body), _fabric_paint(plain), {"colour": colour}


def _shoes(body: _Body, outfit: dict[str, Any], rng: np.random.Generator) -> Made:
    ease = rng.uniform(0.01, 0.018)
    paint = _shoe_paint(outfit["shoes"], outfit["soles"])
    return [_shoes_piece(body, ease)], paint, {"colour": outfit["shoes"], "ease_m": ease}


_MAKERS: dict[str, Callable[[_Body, dict[str, Any], np.random.Generator], Made]] = {
    "skirt": _skirt,
    "dress": _dress,
    "coat": _coat,
    "trousers": _trousers,
    "ponytail": _ponytail,
    "long_hair": _long_hair,
    "glasses": _glasses,
    "shoes": _shoes,
}


def _packed(pieces: list[_Piece]) -> _Piece:
    """One piece from several, each piece's UVs squeezed into its own horizontal strip."""
    offsets = np.cumsum([0] + [len(piece.vertices) for piece in pieces])
    strips = []
    for index, piece in enumerate(pieces):
        u = 0.005 + 0.99 * piece.corner_uvs[..., 0]
        v = (index + 0.01 + 0.98 * piece.corner_uvs[..., 1]) / len(pieces)
        strips.append(np.stack([u, v], axis=-1))
    return _Piece(
        np.concatenate([piece.vertices for piece in pieces]),
        np.concatenate([piece.triangles + offset for piece, offset in zip(pieces, offsets, strict=False)]),
        np.concatenate(strips),
        np.concatenate([piece.skin_weights for piece in pieces]),
    )


def _bake(piece: _Piece, paint: Paint, size: int, rng: np.random.Generator) -> np.ndarray:
    """[S, S, 3] uint8 sRGB texture of `paint` over the piece's UVs, with a fabric grain."""
    rows, columns, triangle_ids, barycentrics = covered_texels(piece.corner_uvs, size)
    points = np.einsum("nk,nkc->nc", barycentrics, piece.vertices[piece.triangles[triangle_ids]])
    albedo = paint(points) * (1 + 0.04 * rng.uniform(-1, 1, len(points)))[:, None]
    texture = np.zeros((size, size, 3))
    texture[rows, columns] = linear_to_srgb(np.clip(albedo, 0.0, 1.0))
    covered = np.zeros((size, size), bool)
    covered[rows, columns] = True
    return (np.clip(bleed(texture, covered), 0, 1) * 255 + 0.5).astype(np.uint8)


def make_garments(
    rig: Rig, outfit: dict[str, Any], names: tuple[str, ...], rng: np.random.Generator
) -> list[Garment]:
    """The garments `names` (from `GARMENTS`, made in that order) round `rig` at rest, their
    sizes, colours and patterns drawn from `rng`; `outfit` is the body's (outfit_for_garments)."""
    body = _Body(rig)
    garments = []
    for name in (name for name in GARMENTS if name in names):
        pieces, paint, description = _MAKERS[name](body, outfit, rng)
        piece = _packed(pieces)
        weights = piece.skin_weights / piece.skin_weights.sum(axis=1, keepdims=True)
        garments.append(
            Garment(
                name=name,
                vertices=piece.vertices.astype(np.float32),
                triangles=piece.triangles.astype(np.int32),
                corner_uvs=piece.corner_uvs.astype(np.float32),
                skin_weights=weights.astype(np.float32),
                texture=_bake(piece, paint, GARMENT_TEXTURE_SIZE, rng),
                description={"name": name} | {key: _plain(value) for key, value in description.items()},
            )
        )
    return garments


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a description value (numpy scalars become Python numbers)."""
    if isinstance(value, np.generic):
        return round(value.item(), 4) if isinstance(value.item(), float) else value.item()
    if isinstance(value, float):
        return round(value, 4)
    return value


def pose_garment(garment: Garment, skinning: np.ndarray) -> np.ndarray:
    """[G, 3] float32 posed vertices of `garment`, given the rig's skinning transforms [J, 4, 4]
    (`maths.deform.forward_kinematics(...).skinning`): linear blend skinning."""
    blended = np.einsum("gj,jab->gab", garment.skin_weights, skinning[:, :3, :].astype(np.float64))
    return (np.einsum("gab,gb->ga", blended[:, :, :3], garment.vertices) + blended[:, :, 3]).astype(
        np.float32
    )
