"""fit_body's targets: what each photo's landmarks weigh when a hand or the face was not found, and
the silhouettes: a mesh's outline in a view, the mask's edge, and a loss least at the true size."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from lca_blender.reconstruct.fit_body.targets import (  # noqa: E402
    BODY_JOINTS,
    BODY_SURFACE_INDICES,
    FACE_LANDMARKS,
    FACE_WEIGHT,
    HAND_LANDMARKS,
    HAND_WEIGHT,
    VISIBLE,
    MeshEdges,
    Silhouettes,
    landmark_targets,
    project,
)
from lca_blender.reconstruct.perceive import Perception  # noqa: E402

BODY = len(BODY_JOINTS) + len(BODY_SURFACE_INDICES)
LEFT = slice(BODY, BODY + HAND_LANDMARKS)
RIGHT = slice(BODY + HAND_LANDMARKS, BODY + 2 * HAND_LANDMARKS)
FACE = slice(BODY + 2 * HAND_LANDMARKS, None)


def _photo(rng: np.random.Generator, left: bool, right: bool, face: bool, side: int = 400) -> Perception:
    """A photo whose body landmarks are all seen (visibility 0.9) and whose hands and face are
    found as told, at random places."""
    pose = np.zeros((33, 4), np.float32)
    pose[:, :2] = rng.uniform(0, side, (33, 2))
    pose[:, 3] = 0.9
    hands = [rng.uniform(0, side, (21, 3)).astype(np.float32) if found else None for found in (left, right)]
    mesh = rng.uniform(0, side, (468, 3)).astype(np.float32) if face else None
    return Perception("photo", pose, *hands, mesh, np.zeros((side, side), np.float32))


def test_a_hand_or_face_not_found_weighs_nothing_in_that_photo():
    rng = np.random.default_rng(0)
    found = [  # left hand, right hand, face
        (True, True, True),
        (False, True, False),
        (True, False, True),
        (False, False, False),  # a back view: the body alone
    ]
    photos = [_photo(rng, *seen) for seen in found]
    targets = landmark_targets(photos, [400.0] * len(photos))
    assert targets.points.shape == (4, BODY + 2 * HAND_LANDMARKS + len(FACE_LANDMARKS), 2)
    for view, (photo, (left, right, face)) in enumerate(zip(photos, found, strict=True)):
        weights, points = targets.weights[view], targets.points[view]
        np.testing.assert_array_equal(weights[:BODY], np.float32(0.9))
        np.testing.assert_array_equal(weights[LEFT], HAND_WEIGHT if left else 0.0)
        np.testing.assert_array_equal(weights[RIGHT], HAND_WEIGHT if right else 0.0)
        np.testing.assert_array_equal(weights[FACE], FACE_WEIGHT if face else 0.0)
        # What was found is where the photo saw it, in units of the longer side.
        if left:
            np.testing.assert_array_equal(points[LEFT], photo.left_hand[:, :2] / np.float32(400))
        if face:
            np.testing.assert_array_equal(
                points[FACE], photo.face[list(FACE_LANDMARKS), :2] / np.float32(400)
            )


def test_body_landmarks_count_from_the_visibility_threshold_on():
    rng = np.random.default_rng(1)
    photo = _photo(rng, left=False, right=False, face=False)
    visibility = np.linspace(0.0, 1.2, 33, dtype=np.float32)
    photo.pose[:, 3] = visibility
    weights = landmark_targets([photo], [400.0]).weights[0, :BODY]
    body = list(BODY_JOINTS) + list(BODY_SURFACE_INDICES)
    expected = np.where(visibility[body] > VISIBLE, np.minimum(visibility[body], 1.0), 0.0)
    np.testing.assert_array_equal(weights, expected.astype(np.float32))


def _sphere(radius: float, rings: int = 48, segments: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A closed UV sphere about the origin: vertices [V, 3] and triangles [F, 3]."""
    polar = np.linspace(0, np.pi, rings + 1)[1:-1]
    around = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    polar, around = np.meshgrid(polar, around, indexing="ij")
    ring_points = np.stack(
        [np.sin(polar) * np.cos(around), np.sin(polar) * np.sin(around), np.cos(polar)], -1
    )
    vertices = np.concatenate([[[0, 0, 1]], ring_points.reshape(-1, 3), [[0, 0, -1]]]) * radius
    index = np.arange(1, 1 + (rings - 1) * segments).reshape(rings - 1, segments)
    following = np.roll(index, -1, axis=1)
    triangles = [np.stack([np.zeros(segments, int), index[0], following[0]], 1)]
    for ring in range(rings - 2):
        a, b, c, d = index[ring], following[ring], index[ring + 1], following[ring + 1]
        triangles += [np.stack([a, c, d], 1), np.stack([a, d, b], 1)]
    bottom = np.full(segments, len(vertices) - 1)
    triangles.append(np.stack([index[-1], bottom, following[-1]], 1))
    return vertices.astype(np.float32), np.concatenate(triangles)


RADIUS, DISTANCE, FOCAL, SIDE = 0.3, 2.0, 1.4, 256  # a sphere in front of a camera, 256 px images


def _disc_radius_px(radius: float = RADIUS) -> float:
    """The sphere's outline in the image: the cone of sight lines that graze it."""
    return FOCAL * radius / np.sqrt(DISTANCE**2 - radius**2) * SIDE


def test_a_spheres_contour_edges_lie_on_its_outline():
    vertices, triangles = _sphere(RADIUS)
    edges = MeshEdges.of(triangles)
    assert len(edges.ends) == len(triangles) * 3 // 2  # closed: every edge is shared by two triangles
    # Seen from along x (in the camera's frame the sphere lies ahead, along +z).
    turn = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], np.float32)  # world x -> camera z
    camera = torch.as_tensor(vertices @ turn.T + [0, 0, DISTANCE], dtype=torch.float32)
    (contour,) = edges.contours(camera[None])
    ends = camera[contour]  # [K, 2, 3]
    # The outline is the ring whose normals are across the sight line: there, the normal (the
    # direction from the centre) is at right angles to the line from the camera.
    centre = torch.tensor([0, 0, DISTANCE])
    across = ((ends - centre) * ends).sum(-1) / (ends.norm(dim=-1) * RADIUS)
    assert across.abs().max() < 0.1  # one ring of the sphere's 48 either side of it
    assert len(contour) >= 96  # it goes all the way round
    projected = project(ends.reshape(-1, 3), torch.eye(3)[None], torch.zeros(1, 3), torch.tensor([FOCAL]))[0]
    np.testing.assert_allclose(projected.norm(dim=-1) * SIDE, _disc_radius_px(), rtol=0.02)


def test_the_outline_lies_on_the_masks_edge_not_its_last_pixels():
    radius = 80.0
    y, x = np.mgrid[:SIDE, :SIDE] + 0.5
    disc = np.hypot(x - SIDE / 2, y - SIDE / 2) < radius
    silhouettes = Silhouettes([disc], side=SIDE)
    outline = silhouettes.outlines[0].numpy() * SIDE
    distances = np.hypot(outline[:, 0] - SIDE / 2, outline[:, 1] - SIDE / 2)
    assert abs(distances.mean() - radius) < 0.15  # the pixels' centres alone: half a pixel inside
    # Outside the mask, the field is the distance from the edge: 0 at it, 10 px ten pixels beyond.
    field = silhouettes.fields[0].numpy() * SIDE
    assert field[disc].max() == 0
    row = SIDE // 2
    np.testing.assert_allclose(field[row, int(SIDE / 2 + radius + 10)], 10.5, atol=0.6)


def test_the_silhouette_loss_is_least_at_the_true_size():
    """The loss over a sphere's radius against the true sphere's mask is least at the true radius,
    and clearly so: matched to the nearest vertex instead of the nearest edge, the loss was as low
    1 % larger (a random fifth of the vertices: least there), and the fitted bodies came out fuller."""
    y, x = np.mgrid[:SIDE, :SIDE] + 0.5
    mask = np.hypot(x - SIDE / 2, y - SIDE / 2) < _disc_radius_px()
    scales = np.linspace(0.95, 1.05, 11)
    losses = []
    for scale in scales:
        silhouettes = Silhouettes([mask], side=SIDE)
        vertices, triangles = _sphere(RADIUS * scale)
        camera = torch.as_tensor(vertices + [0, 0, DISTANCE], dtype=torch.float32)
        (contour,) = MeshEdges.of(triangles).contours(camera[None])
        points = project(camera, torch.eye(3)[None], torch.zeros(1, 3), torch.tensor([FOCAL]))[0] + 0.5
        losses.append(float(silhouettes.loss([points], [contour], sigma=0.01)))
    report = dict(zip(scales.round(2), np.round(losses, 4), strict=True))
    assert np.argmin(losses) == 5, report
    assert losses[5] < 0.5 * min(losses[4], losses[6]), report  # 1 % off (half a pixel) shows
