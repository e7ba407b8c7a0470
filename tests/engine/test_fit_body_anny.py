"""Anny as the fit sees it: its bones turn only about the axes a person's joints do.

The fit's rotation vectors are in each bone's own frame; `anny.JOINT_AXES` names the axes by that
frame's letters (Y along the bone, X the hinge). These tests check the geometry behind the names on
Anny's own model, so a model whose frames differ fails here rather than bending legs in a build.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("anny")

from lca_blender.bodies.anny_body import load_anny_model  # noqa: E402
from lca_blender.reconstruct.fit_body.anny import AnnyBody, joint_axes  # noqa: E402

TWIST_ONLY = ("upperarm02.L", "lowerarm02.R")
HELD = tuple(f"{bone}.{side}" for bone in ("upperleg02", "lowerleg02", "pelvis") for side in "LR")


@pytest.fixture(scope="module")
def body() -> AnnyBody:
    return AnnyBody(load_anny_model(), face_seen=True)


def _frames(body: AnnyBody, rotvecs: np.ndarray, masked: bool = True) -> np.ndarray:
    """[J, 4, 4] the bones' world frames for rotation vectors [J, 3], masked as the fit masks them."""
    masked = torch.as_tensor(rotvecs, dtype=torch.float32) * (torch.as_tensor(body.free) if masked else 1)
    with torch.no_grad():
        return body.posed(masked).output["bone_poses"][0].double().numpy()


def _from_parent(body: AnnyBody, frames: np.ndarray, index: int) -> np.ndarray:
    """[4, 4] bone `index`'s frame in its parent's."""
    return np.linalg.inv(frames[int(body.model.bone_parents[index])]) @ frames[index]


def _children(body: AnnyBody, label: str) -> list[int]:
    parents = [int(parent) for parent in body.model.bone_parents]
    return [index for index, parent in enumerate(parents) if parent == body.index(label)]


def test_a_twist_turns_a_bone_about_its_own_length(body):
    """Turning a bone about its Y axis moves none of the joints at its end: Y runs along it. (So a
    limb's second segment, which may only twist, never bends.)"""
    rest = _frames(body, np.zeros((body.joint_count, 3)))
    for label in TWIST_ONLY:
        assert joint_axes(label) == (0.0, 1.0, 0.0)
        rotvecs = np.zeros((body.joint_count, 3))
        rotvecs[body.index(label), 1] = 0.8
        turned = _frames(body, rotvecs)
        children = _children(body, label)
        assert children
        moved = np.linalg.norm(turned[children, :3, 3] - rest[children, :3, 3], axis=1)
        assert moved.max() < 1e-3, f"{label}: its end moved {moved.max() * 100:.2f} cm"
        # ... while a bend about X (which the fit does not ask of it) does move them.
        rotvecs[body.index(label)] = [0.8, 0.0, 0.0]
        bent = _frames(body, rotvecs, masked=False)
        assert np.linalg.norm(bent[children, :3, 3] - rest[children, :3, 3], axis=1).min() > 0.02


def test_whatever_the_fit_asks_a_knee_bends_only_forward_and_back(body):
    """Random turns of every joint: the shin stays in the plane of the thigh's hinge (the knee does
    not bend sideways), the thigh and shin stay straight, the pelvis keeps its shape."""
    rng = np.random.default_rng(3)
    rest = _frames(body, np.zeros((body.joint_count, 3)))
    for _ in range(4):
        posed = _frames(body, rng.normal(0.0, 0.6, (body.joint_count, 3)))
        for side in "LR":
            knee, ankle = body.index(f"lowerleg01.{side}"), body.index(f"foot.{side}")
            # The knee's hinge axis (its X) keeps its rest direction in the thigh's frame, so the
            # shin swings in one plane.
            hinge_before, hinge_after = (_from_parent(body, frames, knee)[:3, 0] for frames in (rest, posed))
            assert np.allclose(hinge_before, hinge_after, atol=1e-4)

            # A turn about X keeps every vector's X part: the shin's along the hinge is its rest one.
            def across(frames, knee=knee, ankle=ankle):
                shin = frames[ankle, :3, 3] - frames[knee, :3, 3]
                return shin @ frames[knee, :3, 0] / np.linalg.norm(shin)

            assert abs(across(posed) - across(rest)) < 1e-3
        # Held segments (mid-thigh, mid-shin, the pelvis's sides) keep their rest offsets from
        # their parents' frames.
        for label in HELD:
            index = body.index(label)
            assert np.allclose(_from_parent(body, rest, index), _from_parent(body, posed, index), atol=1e-4)
