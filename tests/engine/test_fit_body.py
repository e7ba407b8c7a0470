"""fit_body's use of structure-from-motion: SfM cameras replace the guesses only where they agree."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lca_blender.maths.cameras import Camera, look_at  # noqa: E402
from lca_blender.maths.rotations import quaternion_to_matrix  # noqa: E402
from lca_blender.reconstruct.cameras import SfmCameras  # noqa: E402
from lca_blender.reconstruct.fit_body.optimise import use_sfm  # noqa: E402

FOCAL, SIDE = 700.0, 512


def _orbit(count: int) -> list[np.ndarray]:
    views = []
    for index in range(count):
        angle = 2 * math.pi * index / count
        position = np.array([3 * math.sin(angle), -3 * math.cos(angle), 1.0 + 0.2 * (index % 2)])
        views.append(look_at(position, np.array([0.0, 0.0, 0.9])))
    return views


def _sfm_of(truth: list[np.ndarray], rng: np.random.Generator) -> SfmCameras:
    """The true cameras seen in another frame: x_sfm = (R x + t) * s, as SfM would place them."""
    quaternion = rng.normal(size=4)
    rotation = quaternion_to_matrix(quaternion / np.linalg.norm(quaternion))
    scale, offset = 0.37, rng.normal(size=3)
    intrinsics = np.array([[FOCAL, 0, SIDE / 2], [0, FOCAL, SIDE / 2], [0, 0, 1]])
    cameras = {}
    for index, viewmat in enumerate(truth):
        # x_cam = V x = V (R^T (x_sfm / s - t)) -> camera units scaled by s.
        moved = np.eye(4)
        moved[:3, :3] = viewmat[:3, :3] @ rotation.T
        moved[:3, 3] = scale * (viewmat[:3, 3] - moved[:3, :3] @ offset)
        position = -moved[:3, :3].T @ moved[:3, 3]
        cameras[f"p{index}"] = Camera(f"p{index}", position, moved, intrinsics, SIDE, SIDE)
    return SfmCameras(cameras, np.zeros((60, 3), np.float32), np.zeros((60, 3), np.float32), len(truth), 0.5)


def test_sfm_cameras_replace_the_guesses_that_agree():
    rng = np.random.default_rng(1)
    truth = _orbit(10)
    guesses = []
    for index, viewmat in enumerate(truth):
        guess = viewmat.copy()
        if index == 3:  # a guess from the wrong side of the body: the camera turned half round
            turn = np.diag([-1.0, 1.0, -1.0])
            guess[:3, :3] = viewmat[:3, :3] @ turn
        guess[:3, 3] += rng.normal(scale=0.03, size=3)
        guesses.append(guess)
    perceptions = [SimpleNamespace(source=f"p{index}") for index in range(10)]
    rotations = torch.as_tensor(np.array([g[:3, :3] for g in guesses]), dtype=torch.float32)
    translations = torch.as_tensor(np.array([g[:3, 3] for g in guesses]), dtype=torch.float32)
    log_focal = torch.full((10,), math.log(1.4))
    new_r, new_t, new_f, used = use_sfm(
        _sfm_of(truth, rng), perceptions, rotations, translations, log_focal, [SIDE] * 10
    )
    assert used == 9
    for index, viewmat in enumerate(truth):
        if index == 3:  # SfM disagreed with this guess: it is kept as it was
            np.testing.assert_array_equal(new_r[index].numpy(), rotations[index].numpy())
            continue
        # The similarity was fitted to guesses 3 cm off, so agreement is to that noise's size:
        # over 300 draws of the noise the worst rotation entry was 0.004 off, the worst centre 5 cm.
        np.testing.assert_allclose(new_r[index].numpy(), viewmat[:3, :3], atol=0.03)
        centre = -new_r[index].numpy().T @ new_t[index].numpy()
        true_centre = -viewmat[:3, :3].T @ viewmat[:3, 3]
        assert np.linalg.norm(centre - true_centre) < 0.1
        # SfM's focal length, kept as a float32 logarithm (relative error about 2e-8).
        assert math.exp(float(new_f[index])) * SIDE == pytest.approx(FOCAL, rel=1e-6)


def test_sfm_that_disagrees_with_most_photos_is_not_used():
    rng = np.random.default_rng(2)
    truth = _orbit(9)
    perceptions = [SimpleNamespace(source=f"p{index}") for index in range(9)]
    # Guesses scattered at random: no similarity explains most of them.
    rotations = torch.as_tensor(
        np.array([quaternion_to_matrix(q / np.linalg.norm(q)) for q in rng.normal(size=(9, 4))]),
        dtype=torch.float32,
    )
    translations = torch.as_tensor(rng.normal(size=(9, 3)), dtype=torch.float32)
    log_focal = torch.zeros(9)
    new_r, new_t, new_f, used = use_sfm(
        _sfm_of(truth, rng), perceptions, rotations, translations, log_focal, [SIDE] * 9
    )
    assert used == 0
    assert (
        torch.equal(new_r, rotations) and torch.equal(new_t, translations) and torch.equal(new_f, log_focal)
    )
