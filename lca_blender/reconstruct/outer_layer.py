"""outer_layer: the person's surface beyond the skin (skirts, coats, loose trousers, hair), as a mesh
added to the rig, so Gaussians can ride on it and the armature and shape keys still pose it.

Engine only (numpy). The steps, all at the capture pose in the body's world frame:

1. **Visual hull.** A voxel grid round the posed body is carved by every photo's person mask: a
   voxel stays where each photo that sees it shows the person there (the masks are widened by a
   pixel or two, so that a camera a pixel out does not carve the person away). Voxels outside a
   photo's frame are not carved by it. A photo whose camera or mask is far off disagrees with all
   the others: it alone carves away what every other photo shows as the person (a camera the
   body fit placed wrongly cut a dress down to shorts). Such photos are left out of the carve,
   the worst first, while one alone carves more than `max_dissent` of what the others keep, and
   the Gaussians are fitted without them too.
2. **Surface.** The hull's boundary faces become a quad mesh, oriented outwards, smoothed with
   Taubin's shrink-free smoothing so that the voxels' staircase goes.
3. **What is beyond the skin.** The hull touches the skin wherever clothes are tight; where it lies
   more than `min_distance` from the skin (a skirt, a ponytail, a coat's hem) it may be the outer
   layer. A hull is larger than the person where no photo's outline can carve it (in front of the
   chest, between an arm and the torso): such phantoms are within the *skin's* own visual hull too,
   so a piece is kept only where some of it shows outside the skin's outline in some photo (it
   explains mask pixels the body cannot). The pieces kept are grown by a few rings of faces so
   that they meet the skin; small ones (noise in the masks) go. What is kept is then moved in
   onto the photos' outlines: the carve keeps whole voxels in widened masks, so the hull stands
   up to a centimetre beyond the person all round.
4. **Skinning.** Each outer vertex takes the skin weights of the body near it, blended by a
   Gaussian kernel whose width grows with the distance to the skin: a point on the skin's surface
   follows the skin under it, a skirt's hem between the legs follows both thighs equally (so the
   skirt stays one surface in a stride), its sides the nearer thigh. Hands carry nothing loose,
   so they are left out (a hem beside a hanging hand must not follow the hand).
5. **Rest pose.** The vertices go back to the rest pose through the inverse of their blended
   skinning transforms, and are appended to the rig after the skin's, marked as `OUTER_LAYER` in
   `Rig.vertex_layers`, with zero expression offsets.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import cv2
import numpy as np

from ..avatar import OUTER_LAYER, SKIN_LAYER, Rig
from ..maths.deform import (
    expression_vector,
    expression_vertices,
    forward_kinematics,
    skin_vertices,
    vertex_normals,
)
from .views import BodyFit, View

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OuterLayerSettings:
    """How the outer layer is found (module docstring)."""

    voxel: float  # metres: the hull's voxel size
    margin: float  # metres round the posed body's box where the hull may reach
    below_feet: float  # metres below the lowest skin point the grid reaches (soles, shoes)
    min_mask: float  # mask value above which a pixel shows the person
    mask_slack: int  # pixels the masks are widened by before carving
    min_views: int  # fewer photos cannot carve a hull
    max_dissent: float  # a photo that alone carves more than this share of the hull is left out
    smoothing_steps: int  # Taubin iterations (each a shrink and an inflate)
    snap_steps: int  # passes that move the outer part onto the photos' outlines
    snap_margin: float  # pixels outside the outline where a snapped vertex stops
    min_distance: float  # metres from the skin beyond which the hull is the outer layer
    grow_rings: int  # rings of faces the outer part is grown by, to meet the skin
    min_area: float  # square metres: smaller outer pieces are noise
    kernel_width: float  # metres: the skinning kernel's width on the skin
    kernel_growth: float  # the kernel's width grows by this times the distance to the skin
    weights_per_vertex: int  # skin influences kept per outer vertex


OUTER_LAYER_SETTINGS = OuterLayerSettings(
    voxel=0.012,
    margin=0.35,
    below_feet=0.03,
    min_mask=0.5,
    mask_slack=1,
    min_views=3,
    max_dissent=0.1,
    smoothing_steps=12,
    snap_steps=3,
    snap_margin=0.75,
    min_distance=0.03,
    grow_rings=2,
    min_area=0.004,
    kernel_width=0.03,
    kernel_growth=0.3,
    weights_per_vertex=8,
)
HAND_JOINT_FRAGMENTS = ("wrist", "finger", "metacarpal")  # joints whose skin carries nothing loose
_TAUBIN = (0.5, -0.53)  # shrink and inflate factors


@dataclass(frozen=True)
class Hull:
    """The carved occupancy grid: voxel (i, j, k) spans origin + (i, j, k) * voxel and one voxel more."""

    occupied: np.ndarray  # [X, Y, Z] bool
    origin: np.ndarray  # [3] float64
    voxel: float
    dropped: tuple[str, ...] = ()  # photos left out of the carve (their `View.source`)


@dataclass(frozen=True)
class Surface:
    """A triangle mesh at the capture pose."""

    vertices: np.ndarray  # [V, 3] float64
    triangles: np.ndarray  # [F, 3] int64, counter-clockwise seen from outside


def fit_outer_layer(body: BodyFit, settings: OuterLayerSettings = OUTER_LAYER_SETTINGS) -> BodyFit:
    """`body` with the outer layer (module docstring) appended to its rig; unchanged when the photos
    show nothing beyond the skin or are too few to carve a hull."""
    rig = body.rig
    if rig.vertex_layers is not None and (rig.vertex_layers == OUTER_LAYER).any():
        return body  # already has one
    if len(body.views) < settings.min_views:
        logger.info("Outer layer skipped: %d photos cannot carve a hull.", len(body.views))
        return dataclasses.replace(body, report=body.report | {"outer_layer": {"skipped": "too few photos"}})
    expressions = expression_vector(rig, body.expressions)
    transforms = forward_kinematics(rig, body.pose).skinning.astype(np.float64)
    skin = skin_vertices(rig, expression_vertices(rig, expressions), transforms.astype(np.float32))
    skin = skin.astype(np.float64)
    hull = carve_hull(body.views, skin, settings)
    # A photo the carve left out would also blur the Gaussians' fit: they are fitted without it.
    views = [view for view in body.views if view.source not in hull.dropped]
    surface = smooth(hull_surface(hull), settings.smoothing_steps)
    distances, _ = nearest_points(surface.vertices, skin)
    beyond = beyond_skin_outline(views, skin, rig.triangles, surface.vertices, settings)
    outer = snap_to_outlines(outer_part(surface, distances, beyond, settings), views, settings)
    report = {
        "hull_voxels": int(hull.occupied.sum()),
        "photos_left_out": list(hull.dropped),
        "vertices": int(len(outer.vertices)),
        "triangles": int(len(outer.triangles)),
        "area_m2": round(float(_triangle_areas(outer.vertices, outer.triangles).sum()), 4),
    }
    logger.info("Outer layer: %s", report)
    if len(outer.triangles) == 0:
        return dataclasses.replace(body, views=views, report=body.report | {"outer_layer": report})
    weights = diffused_weights(rig, skin, outer.vertices, settings)
    rest = unskin(outer.vertices, weights, transforms)
    return dataclasses.replace(
        body, rig=append_layer(rig, rest, outer.triangles, weights, settings.weights_per_vertex),
        views=views, report=body.report | {"outer_layer": report},
    )  # fmt: skip


# -- 1. the visual hull ----------------------------------------------------------------------------


def carve_hull(views: list[View], skin: np.ndarray, settings: OuterLayerSettings) -> Hull:
    """The voxels every photo (but those that disagree with all the others) shows as the person,
    in a box round the posed skin `skin` [V, 3]."""
    low = skin.min(axis=0) - settings.margin
    high = skin.max(axis=0) + settings.margin
    low[2] = skin[:, 2].min() - settings.below_feet
    high[2] = skin[:, 2].max() + settings.margin / 2
    shape = np.ceil((high - low) / settings.voxel).astype(int)
    axes = [low[a] + (np.arange(shape[a]) + 0.5) * settings.voxel for a in range(3)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    shown = np.stack([_shows_person(view, centres, settings) for view in views])
    kept = consistent_views(shown, settings.max_dissent, settings.min_views)
    dropped = [view.source for view, keep in zip(views, kept, strict=True) if not keep]
    if dropped:
        logger.warning(
            "Outer layer: left out of the hull, as each alone carves away what the other photos "
            "show as the person (its camera or mask is off): %s.", ", ".join(dropped),
        )  # fmt: skip
    occupied = shown[kept].all(axis=0)
    return Hull(occupied.reshape(shape), low, settings.voxel, tuple(dropped))


def _project(camera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`points` [N, 3] through `camera`: pixel coordinates [N, 2] (x, y) and depths [N]; points
    at or behind the camera (depth <= 1e-3) get finite pixels that callers leave out."""
    in_camera = points @ camera.viewmat[:3, :3].T.astype(np.float64) + camera.viewmat[:3, 3]
    depth = in_camera[:, 2]
    pixels = in_camera[:, :2] / np.maximum(depth, 1e-3)[:, None]
    return pixels @ camera.intrinsics[:2, :2].T.astype(np.float64) + camera.intrinsics[:2, 2], depth


def _shows_person(view: View, points: np.ndarray, settings: OuterLayerSettings) -> np.ndarray:
    """[N] bool: whether `view`'s widened mask shows the person where each of `points` [N, 3] falls
    (True outside its frame or behind its camera: a photo carves only what it sees)."""
    kernel = np.ones((2 * settings.mask_slack + 1,) * 2, np.uint8)
    person = cv2.dilate((view.mask > settings.min_mask).astype(np.uint8), kernel) > 0
    pixels, depth = _project(view.camera, points)
    in_front = depth > 1e-3
    columns, rows = np.floor(pixels[:, 0]).astype(np.int64), np.floor(pixels[:, 1]).astype(np.int64)
    height, width = person.shape
    seen = in_front & (columns >= 0) & (columns < width) & (rows >= 0) & (rows < height)
    shows = np.ones(len(points), bool)
    shows[seen] = person[rows[seen], columns[seen]]
    return shows


def consistent_views(shown: np.ndarray, max_dissent: float, min_views: int) -> np.ndarray:
    """[P] bool: the photos to carve with, given `shown` [P, N] (photo p shows voxel n as the
    person). A photo's dissent is what it alone carves away (every other photo keeps it), as a
    share of what all the photos kept so far keep but for it; the most dissenting photo goes
    while its dissent passes `max_dissent` and more than `min_views` photos would remain."""
    kept = np.ones(len(shown), bool)
    while kept.sum() > min_views:
        indices = np.flatnonzero(kept)
        votes = shown[indices].sum(axis=0)
        others_keep = votes >= len(indices) - 1
        alone = others_keep[None] & ~shown[indices]  # [kept photos, N]
        dissent = alone.sum(axis=1) / max(int(others_keep.sum()), 1)
        worst = int(np.argmax(dissent))
        if dissent[worst] <= max_dissent:
            break
        kept[indices[worst]] = False
    return kept


# -- 2. its surface --------------------------------------------------------------------------------


def hull_surface(hull: Hull) -> Surface:
    """The boundary faces between occupied and empty voxels, two triangles each, facing outwards."""
    padded = np.pad(hull.occupied, 1)
    corner_shape = np.array(padded.shape) + 1
    quads = []
    for axis in range(3):
        b, c = (axis + 1) % 3, (axis + 2) % 3
        lower = np.take(padded, np.arange(padded.shape[axis] - 1), axis=axis)
        upper = np.take(padded, np.arange(1, padded.shape[axis]), axis=axis)
        for outward, faces in ((True, lower & ~upper), (False, upper & ~lower)):
            index = np.argwhere(faces)  # padded voxel (lower side) of each face
            corner = index.copy()
            corner[:, axis] += 1  # the plane between the two voxels
            steps = [(0, 0), (1, 0), (1, 1), (0, 1)]  # e_b x e_c = e_axis: counter-clockwise
            if not outward:
                steps = steps[::-1]
            ring = []
            for step_b, step_c in steps:
                point = corner.copy()
                point[:, b] += step_b
                point[:, c] += step_c
                ring.append(np.ravel_multi_index(point.T, corner_shape))
            quads.append(np.stack(ring, axis=1))
    quads = np.concatenate(quads) if quads else np.zeros((0, 4), np.int64)
    used, compact = np.unique(quads, return_inverse=True)
    compact = compact.reshape(-1, 4)
    corners = np.stack(np.unravel_index(used, corner_shape), axis=1).astype(np.float64)
    vertices = hull.origin + (corners - 1.0) * hull.voxel  # padded corner 1 is the grid's origin
    triangles = np.concatenate([compact[:, [0, 1, 2]], compact[:, [0, 2, 3]]])
    return Surface(vertices, triangles)


def _edges(triangles: np.ndarray) -> np.ndarray:
    """[E, 2] unique undirected edges."""
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    return np.unique(np.sort(edges, axis=1), axis=0)


def smooth(surface: Surface, steps: int) -> Surface:
    """Taubin smoothing (uniform weights): each step shrinks, then inflates, so the mesh keeps its size."""
    vertices = surface.vertices.copy()
    if len(surface.triangles) == 0:
        return surface
    edges = _edges(surface.triangles)
    count = len(vertices)
    degree = np.bincount(edges.ravel(), minlength=count).astype(np.float64)
    degree = np.maximum(degree, 1.0)
    for _ in range(steps):
        for factor in _TAUBIN:
            sums = np.zeros_like(vertices)
            np.add.at(sums, edges[:, 0], vertices[edges[:, 1]])
            np.add.at(sums, edges[:, 1], vertices[edges[:, 0]])
            vertices += factor * (sums / degree[:, None] - vertices)
    return Surface(vertices, surface.triangles)


def signed_outline_distance(mask: np.ndarray) -> np.ndarray:
    """[H, W] float32 pixels from each pixel's centre to the outline of `mask` [H, W] bool: positive
    inside, negative outside; the outline runs half a pixel beyond the last pixel inside."""
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    return np.where(mask, inside - 0.5, 0.5 - outside).astype(np.float32)


def snap_to_outlines(surface: Surface, views: list[View], settings: OuterLayerSettings) -> Surface:
    """`surface` with each vertex moved inwards to `snap_margin` pixels outside the photos'
    outlines where the carve left it further out. Carving keeps whole voxels whose centres fall
    in widened masks, so the hull stands up to half a voxel and the masks' slack beyond the
    person (on a 512-pixel photo of a standing person, about a centimetre all round: a silhouette
    IoU of 0.91-0.93 where the snapped hull gives 0.96-0.97). Each vertex goes along its inward
    normal until the photo that sees it furthest outside (its rim) puts it at the margin, never
    by more than that surplus in all. The margin keeps the rendered edge from falling half a
    pixel short of the outline."""
    if len(surface.triangles) == 0:
        return surface
    vertices = surface.vertices.copy()
    outlines = [signed_outline_distance(view.mask > settings.min_mask) for view in views]
    moved = np.zeros(len(vertices))  # metres each vertex has gone inwards so far
    slack = settings.mask_slack + 0.5 - settings.snap_margin  # pixels of mask slack beyond the margin
    for _ in range(settings.snap_steps):
        worst = np.full(len(vertices), np.inf)  # metres inside the margin (negative: beyond it)
        surplus = np.zeros(len(vertices))  # metres the half voxel and the masks' slack may add
        for view, outline in zip(views, outlines, strict=True):
            pixels, depth = _project(view.camera, vertices)
            height, width = outline.shape
            seen = (depth > 1e-3) & (pixels[:, 0] >= 0) & (pixels[:, 0] < width)
            seen &= (pixels[:, 1] >= 0) & (pixels[:, 1] < height)
            metres_per_pixel = depth / float(view.camera.intrinsics[0, 0])
            inside = _bilinear(outline, pixels[seen] - 0.5) + settings.snap_margin
            sampled = inside * metres_per_pixel[seen]
            tighter = sampled < worst[seen]
            index = np.flatnonzero(seen)[tighter]
            worst[index] = sampled[tighter]
            surplus[index] = settings.voxel / 2 + slack * metres_per_pixel[index]
        step = np.clip(np.minimum(-worst, surplus - moved), 0.0, None)
        step[~np.isfinite(worst)] = 0.0
        moved += step
        vertices -= vertex_normals(vertices, surface.triangles) * step[:, None]
    return Surface(vertices, surface.triangles)


def _bilinear(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """`image` [H, W] sampled at `points` [N, 2] (x, y; pixel centres at integers), edges clamped."""
    height, width = image.shape
    x = np.clip(points[:, 0], 0, width - 1)
    y = np.clip(points[:, 1], 0, height - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), width - 2)
    y0 = np.minimum(np.floor(y).astype(np.int64), height - 2)
    fx, fy = x - x0, y - y0
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


# -- 3. what lies beyond the skin ------------------------------------------------------------------


def nearest_points(
    points: np.ndarray, targets: np.ndarray, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Per point of `points` [N, 3]: the distance to the nearest of `targets` [M, 3] and its index."""
    distances = np.empty(len(points))
    indices = np.empty(len(points), np.int64)
    target_norms = (targets**2).sum(1)
    for start in range(0, len(points), chunk):
        block = points[start : start + chunk]
        squared = (block**2).sum(1)[:, None] + target_norms[None] - 2 * block @ targets.T
        nearest = squared.argmin(axis=1)
        indices[start : start + chunk] = nearest
        distances[start : start + chunk] = np.sqrt(np.maximum(squared[np.arange(len(block)), nearest], 0))
    return distances, indices


def _triangle_areas(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    corners = vertices[triangles]
    return 0.5 * np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )


def connected_components(triangles: np.ndarray, count: int) -> np.ndarray:
    """[count] a label per vertex, equal for vertices joined by edges (label propagation)."""
    labels = np.arange(count)
    edges = _edges(triangles) if len(triangles) else np.zeros((0, 2), np.int64)
    while True:
        low = np.minimum(labels[edges[:, 0]], labels[edges[:, 1]])
        updated = labels.copy()
        np.minimum.at(updated, edges[:, 0], low)
        np.minimum.at(updated, edges[:, 1], low)
        updated = updated[updated]  # pointer jumping: follow labels to their own labels
        if np.array_equal(updated, labels):
            return labels
        labels = updated


def skin_outline(camera, skin: np.ndarray, triangles: np.ndarray, slack: int) -> np.ndarray:
    """[H, W] bool: where the posed skin covers the photo, widened by `slack` pixels."""
    pixels, depth = _project(camera, skin)
    image = np.zeros((camera.height, camera.width), np.uint8)
    in_front = (depth[triangles] > 1e-3).all(axis=1)
    for corners in np.round(pixels[triangles[in_front]] * 16).astype(np.int32):
        cv2.fillConvexPoly(image, corners, 1, shift=4)
    kernel = np.ones((2 * slack + 1,) * 2, np.uint8)
    return cv2.dilate(image, kernel) > 0


def beyond_skin_outline(
    views: list[View],
    skin: np.ndarray,
    triangles: np.ndarray,
    points: np.ndarray,
    settings: OuterLayerSettings,
) -> np.ndarray:
    """[N] bool: the `points` [N, 3] that some photo shows on the person outside the skin's outline."""
    beyond = np.zeros(len(points), bool)
    for view in views:
        camera = view.camera
        outline = skin_outline(camera, skin, triangles, 2 * settings.mask_slack)
        person = view.mask > settings.min_mask
        pixels, depth = _project(camera, points)
        columns, rows = np.round(pixels[:, 0]).astype(np.int64), np.round(pixels[:, 1]).astype(np.int64)
        inside = (depth > 1e-3) & (columns >= 0) & (columns < camera.width)
        inside &= (rows >= 0) & (rows < camera.height)
        seen = np.flatnonzero(inside)
        beyond[seen] |= person[rows[seen], columns[seen]] & ~outline[rows[seen], columns[seen]]
    return beyond


def outer_part(
    surface: Surface, distances: np.ndarray, beyond: np.ndarray, settings: OuterLayerSettings
) -> Surface:
    """The faces of `surface` beyond the skin in pieces that some photo shows outside the skin's
    outline (`beyond`, per vertex), grown to meet the skin, without small pieces."""
    triangles = surface.triangles
    keep = distances[triangles].mean(axis=1) > settings.min_distance
    if keep.any():
        labels = connected_components(triangles[keep], len(surface.vertices))
        shown = np.zeros(len(surface.vertices), bool)
        shown[labels[np.flatnonzero(beyond)]] = True
        piece = labels[triangles[:, 0]]
        keep &= shown[piece]
    for _ in range(settings.grow_rings):
        touched = np.zeros(len(surface.vertices), bool)
        touched[triangles[keep].ravel()] = True
        keep = touched[triangles].any(axis=1)
    kept = triangles[keep]
    if len(kept) == 0:
        return Surface(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    labels = connected_components(kept, len(surface.vertices))
    areas = _triangle_areas(surface.vertices, kept)
    piece = labels[kept[:, 0]]
    piece_area = np.bincount(piece, weights=areas, minlength=len(surface.vertices))
    kept = kept[piece_area[piece] >= settings.min_area]
    used, compact = np.unique(kept, return_inverse=True)
    return Surface(surface.vertices[used], compact.reshape(-1, 3))


# -- 4. skinning, 5. the rest pose -----------------------------------------------------------------


def dense_weights(rig: Rig) -> np.ndarray:
    """[V, J] the rig's skin weights as a dense matrix."""
    weights = np.zeros((rig.vertex_count, rig.joint_count))
    rows = np.repeat(np.arange(rig.vertex_count), rig.skin_indices.shape[1])
    np.add.at(weights, (rows, rig.skin_indices.ravel()), rig.skin_weights.ravel())
    return weights


def diffused_weights(
    rig: Rig, skin: np.ndarray, points: np.ndarray, settings: OuterLayerSettings, chunk: int = 1024
) -> np.ndarray:
    """[N, J] skin weights at `points` [N, 3] (posed like `skin` [V, 3]): the body's weights blended by
    a Gaussian kernel as wide as `kernel_width` plus `kernel_growth` times the distance to the skin."""
    weights = dense_weights(rig)
    hands = np.array([any(f in name for f in HAND_JOINT_FRAGMENTS) for name in rig.joint_names])
    carriers = np.flatnonzero(weights[:, hands].sum(axis=1) < 0.5)
    carrier_points, carrier_weights = skin[carriers], weights[carriers]
    distances, _ = nearest_points(points, carrier_points)
    widths = settings.kernel_width + settings.kernel_growth * distances
    result = np.empty((len(points), rig.joint_count))
    norms = (carrier_points**2).sum(1)
    for start in range(0, len(points), chunk):
        block = points[start : start + chunk]
        squared = np.maximum((block**2).sum(1)[:, None] + norms[None] - 2 * block @ carrier_points.T, 0)
        nearest = distances[start : start + chunk, None] ** 2
        kernel = np.exp(-(squared - nearest) / (2 * widths[start : start + chunk, None] ** 2))
        blended = kernel @ carrier_weights
        result[start : start + chunk] = blended / blended.sum(axis=1, keepdims=True)
    return result


def unskin(points: np.ndarray, weights: np.ndarray, skinning: np.ndarray) -> np.ndarray:
    """[N, 3] the rest positions that linear blend skinning with `weights` [N, J] and the joints'
    `skinning` transforms [J, 4, 4] takes to `points` [N, 3]."""
    blended = np.einsum("nj,jab->nab", weights, skinning)
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    return np.linalg.solve(blended, homogeneous[:, :, None])[:, :3, 0]


def append_layer(
    rig: Rig, vertices: np.ndarray, triangles: np.ndarray, weights: np.ndarray, influences: int
) -> Rig:
    """`rig` with an outer layer of rest `vertices` [N, 3], `triangles` [T, 3] (indices into
    `vertices`) and dense skin `weights` [N, J] (the strongest `influences` kept) appended."""
    count = len(vertices)
    k = max(influences, rig.skin_indices.shape[1])
    strongest = np.argsort(-weights, axis=1)[:, :k]
    kept = np.take_along_axis(weights, strongest, axis=1)
    kept /= kept.sum(axis=1, keepdims=True)
    pad = k - rig.skin_indices.shape[1]
    skin_indices = np.pad(rig.skin_indices, ((0, 0), (0, pad)))
    skin_weights = np.pad(rig.skin_weights, ((0, 0), (0, pad)))
    layers = rig.vertex_layers if rig.vertex_layers is not None else np.full(rig.vertex_count, SKIN_LAYER)
    uvs, triangle_uvs = rig.uvs, rig.triangle_uvs
    if uvs is not None:  # the outer layer has no texture coordinates of its own: one spare UV
        triangle_uvs = np.concatenate([triangle_uvs, np.full((len(triangles), 3), len(uvs), np.int32)])
        uvs = np.concatenate([uvs, np.zeros((1, 2), np.float32)])
    expression_count = len(rig.expression_names)
    return dataclasses.replace(
        rig,
        vertices=np.concatenate([rig.vertices, vertices.astype(np.float32)]),
        triangles=np.concatenate([rig.triangles, (triangles + rig.vertex_count).astype(np.int32)]),
        skin_indices=np.concatenate([skin_indices, strongest.astype(np.int32)]),
        skin_weights=np.concatenate([skin_weights, kept.astype(np.float32)]),
        expression_deltas=np.concatenate(
            [rig.expression_deltas, np.zeros((expression_count, count, 3), np.float32)], axis=1
        ),
        uvs=uvs,
        triangle_uvs=triangle_uvs,
        vertex_layers=np.concatenate([layers, np.full(count, OUTER_LAYER)]).astype(np.int32),
    )
