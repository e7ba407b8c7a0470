"""fit_body's targets: what each photo's landmarks weigh when a hand or the face was not found."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("cv2")

from lca_blender.reconstruct.fit_body.targets import (  # noqa: E402
    BODY_JOINTS,
    BODY_SURFACE_INDICES,
    FACE_LANDMARKS,
    FACE_WEIGHT,
    HAND_LANDMARKS,
    HAND_WEIGHT,
    VISIBLE,
    landmark_targets,
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
