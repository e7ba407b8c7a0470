"""What the photos give the fit to aim at: MediaPipe's landmarks, the person masks, and the error measures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..perceive import Perception

# MediaPipe Pose landmarks -> Anny bone heads (the SMPL-X adapter maps the same landmarks to its joints).
BODY_JOINTS = {
    2: "eye.L", 5: "eye.R", 11: "upperarm01.L", 12: "upperarm01.R", 13: "lowerarm01.L",
    14: "lowerarm01.R", 15: "wrist.L", 16: "wrist.R", 23: "upperleg01.L", 24: "upperleg01.R",
    25: "lowerleg01.L", 26: "lowerleg01.R", 27: "foot.L", 28: "foot.R",
}  # fmt: skip
# MediaPipe Pose landmarks -> surface points, found on each body's mesh (Anny: `anny.surface_points`).
BODY_SURFACE = ("nose", "ear.L", "ear.R", "heel.L", "heel.R", "toe.L", "toe.R")
BODY_SURFACE_INDICES = (0, 7, 8, 29, 30, 31, 32)
# MediaPipe Hands: per hand the wrist, then four per finger from its base to its tip; each body
# names its wrist, three joints per finger and the fingertip.
HAND_LANDMARKS = 21
UPPER_LIP_VERTEX, LOWER_LIP_VERTEX = 520, 523  # on Anny's template
FACE_LANDMARKS = {13: UPPER_LIP_VERTEX, 14: LOWER_LIP_VERTEX}  # MediaPipe Face Mesh inner lips

VISIBLE = 0.3  # MediaPipe visibility above which a body landmark counts (weighted by its visibility)
HAND_WEIGHT = 0.5  # a found hand's landmarks, against a visible body landmark's visibility
FACE_WEIGHT = 1.0  # a found face's inner lips


@dataclass(frozen=True)
class LandmarkTargets:
    """Every photo's 2D landmarks, as one padded batch (normalised by the image's longer side).

    Per photo: the body landmarks (BODY_JOINTS, then BODY_SURFACE), the left and the right hand's
    HAND_LANDMARKS each, the face's FACE_LANDMARKS. What a photo does not show weighs 0.
    """

    points: np.ndarray  # [C, P, 2]
    weights: np.ndarray  # [C, P]


def landmark_targets(perceptions: Sequence[Perception], longest: Sequence[float]) -> LandmarkTargets:
    """The photos' landmarks in the order of `LandmarkTargets`; `longest`: each photo's longer side."""
    count = len(BODY_JOINTS) + len(BODY_SURFACE) + 2 * HAND_LANDMARKS + len(FACE_LANDMARKS)
    points = np.zeros((len(perceptions), count, 2), np.float32)
    weights = np.zeros((len(perceptions), count), np.float32)
    for view, (seen, scale) in enumerate(zip(perceptions, longest, strict=True)):
        body = list(BODY_JOINTS) + list(BODY_SURFACE_INDICES)
        visibility = np.clip(seen.pose[body, 3], 0.0, 1.0)
        points[view, : len(body)] = seen.pose[body, :2] / scale
        weights[view, : len(body)] = np.where(visibility > VISIBLE, visibility, 0.0)
        start = len(body)
        for hand in (seen.left_hand, seen.right_hand):
            if hand is not None:
                points[view, start : start + HAND_LANDMARKS] = hand[:, :2] / scale
                weights[view, start : start + HAND_LANDMARKS] = HAND_WEIGHT
            start += HAND_LANDMARKS
        if seen.face is not None:
            points[view, start:] = seen.face[list(FACE_LANDMARKS), :2] / scale
            weights[view, start:] = FACE_WEIGHT
    return LandmarkTargets(points, weights)


def project(
    points: torch.Tensor,  # [P, 3] or [C, P, 3] world points
    rotations: torch.Tensor,  # [C, 3, 3] world-to-camera
    translations: torch.Tensor,  # [C, 3]
    focal: torch.Tensor,  # [C] in units of the image's longer side
) -> torch.Tensor:
    """[C, P, 2] normalised image coordinates (about the image's centre) of the points in C cameras."""
    return perspective(in_cameras(points, rotations, translations), focal)


def in_cameras(points: torch.Tensor, rotations: torch.Tensor, translations: torch.Tensor) -> torch.Tensor:
    """[C, P, 3] the points ([P, 3] or [C, P, 3], world) in each camera's frame (`project`'s cameras)."""
    return torch.einsum("cij,...pj->cpi", rotations, points) + translations[:, None]


def perspective(camera: torch.Tensor, focal: torch.Tensor) -> torch.Tensor:
    """[C, P, 2] normalised image coordinates of points [C, P, 3] in the cameras' frames (`project`)."""
    depth = camera[..., 2:].clamp_min(0.05)
    return focal[:, None, None] * camera[..., :2] / depth


def robust(residual: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure on squared residual norms (over the last axis): quadratic near 0, bounded for
    outliers; `sigma` is where it reaches half its bound."""
    squared = (residual**2).sum(-1) / sigma**2
    return squared / (1.0 + squared)


class Silhouettes:
    """Per photo, at a working resolution: the distance outside the mask and the mask's outline.

    Both are measured from the mask's edge, half a pixel beyond its last pixels' centres: from the
    centres, every limb 10 px wide would come out a tenth thinner.
    """

    def __init__(self, masks: Sequence[np.ndarray], side: int = 256) -> None:
        fields, outlines = [], []
        self.sizes = []
        for mask in masks:
            height, width = mask.shape
            scale = side / max(height, width)
            size = (max(8, round(width * scale)), max(8, round(height * scale)))
            small = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
            outside = cv2.distanceTransform((~small).astype(np.uint8), cv2.DIST_L2, 5)
            fields.append(torch.as_tensor(np.maximum(outside - 0.5, 0.0) / max(size), dtype=torch.float32))
            outline = _outline(small)
            step = max(1, len(outline) // 300)  # about 300 outline points per photo
            outlines.append(torch.as_tensor(outline[::step] / max(size), dtype=torch.float32))
            self.sizes.append(size)
        self.fields = fields
        self.outlines = outlines
        self.closest: list = [None] * len(fields)
        self.calls = 0

    def loss(self, projected: list[torch.Tensor], contours: list[torch.Tensor], sigma: float) -> torch.Tensor:
        """Mean over photos of: vertices outside the mask, and outline points far from the mesh's outline.

        `projected`: per photo, [V, 2] vertices in image coordinates normalised by the longer side
        (from the image's corner). `contours`: per photo, [K, 2] the mesh's edges on its outline
        there (`MeshEdges.contours`). An outline point is matched to the nearest such edge, not to
        the nearest vertex: a vertex on the front of a limb that projects near the outline would pull
        the limb out until it reached it, and the body would come out fuller than the photos.
        """
        total = 0.0
        refresh = self.calls % 5 == 0  # nearest edges change slowly: look them up every 5 steps
        self.calls += 1
        for view, (field, outline, points, edges, (width, height)) in enumerate(
            zip(self.fields, self.outlines, projected, contours, self.sizes, strict=True)
        ):
            longest = max(width, height)
            grid = torch.stack([points[:, 0] * longest / width, points[:, 1] * longest / height], -1) * 2 - 1
            outside = torch.nn.functional.grid_sample(
                field[None, None], grid[None, :, None], align_corners=False, padding_mode="border"
            )[0, 0, :, 0]
            if refresh or self.closest[view] is None:
                with torch.no_grad():  # which edge is nearest; the distance itself is differentiated
                    if len(edges) == 0:  # no outline (a mesh without shared edges): the vertices
                        edges = torch.arange(len(points))[:, None].expand(-1, 2)
                    distances = _to_segments(outline[:, None], points[edges[:, 0]], points[edges[:, 1]])
                    self.closest[view] = edges[distances.argmin(1)]
            ends = self.closest[view]
            nearest = _to_segments(outline, points[ends[:, 0]], points[ends[:, 1]])
            total = total + robust(outside[:, None], sigma).mean() + robust(nearest[:, None], sigma).mean()
        return total / len(self.fields)


def _to_segments(point: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Distances from points to segments (broadcast over leading axes; the last holds x, y)."""
    along = end - start
    t = ((point - start) * along).sum(-1) / (along**2).sum(-1).clamp_min(1e-12)
    closest = start + t.clamp(0, 1)[..., None] * along
    return (point - closest).norm(dim=-1)


def _outline(mask: np.ndarray) -> np.ndarray:
    """[N, 2] points (x, y, in pixels from the image's corner) on the outer edge of a bool mask: its
    outline pixels' centres moved half a pixel out, across the edge."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros((1, 2), np.float32)
    pixels = np.concatenate([c[:, 0, :] for c in contours])
    padded = np.pad(~mask, 1, constant_values=True).astype(np.float32)
    x, y = pixels[:, 0] + 1, pixels[:, 1] + 1
    out = np.stack([padded[y, x + 1] - padded[y, x - 1], padded[y + 1, x] - padded[y - 1, x]], -1)
    out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)  # 0 where it cannot tell
    return (pixels + 0.5 + 0.5 * out).astype(np.float32)


@dataclass(frozen=True)
class MeshEdges:
    """A triangle mesh's edges that two triangles share, and those triangles: where a view's
    front-facing and back-facing triangles meet is the mesh's outline in that view."""

    triangles: torch.Tensor  # [F, 3] int64
    ends: torch.Tensor  # [E, 2] int64 each edge's vertices
    sides: torch.Tensor  # [E, 2] int64 the triangles either side

    @classmethod
    def of(cls, triangles: np.ndarray) -> MeshEdges:
        triangles = np.asarray(triangles, np.int64)
        corners = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
        owners = np.tile(np.arange(len(triangles)), 3)
        _, inverse, counts = np.unique(np.sort(corners, 1), axis=0, return_inverse=True, return_counts=True)
        order = np.argsort(inverse.reshape(-1), kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[counts == 2]  # open or odd edges left out
        first, second = order[starts], order[starts + 1]
        return cls(
            triangles=torch.as_tensor(triangles),
            ends=torch.as_tensor(corners[first]),
            sides=torch.as_tensor(np.stack([owners[first], owners[second]], 1)),
        )

    def contours(self, camera_vertices: torch.Tensor) -> list[torch.Tensor]:
        """Per camera, [K, 2] the edges between a triangle that faces it and one that faces away,
        from the vertices in each camera's frame [C, V, 3]."""
        corners = camera_vertices[:, self.triangles]  # [C, F, 3, 3]
        normals = torch.linalg.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0])
        facing = (normals * corners[:, :, 0]).sum(-1) < 0  # [C, F] towards the camera (at the origin)
        turns = facing[:, self.sides[:, 0]] != facing[:, self.sides[:, 1]]
        return [self.ends[row] for row in turns]
