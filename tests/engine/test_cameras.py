"""Cameras: SfM recovers known orbit cameras of a rendered person; alignment recovers similarities."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from lca_blender.maths.alignment import Similarity
from lca_blender.maths.cameras import Camera, look_at
from lca_blender.maths.colour import srgb_to_linear
from lca_blender.progress import Cancelled, Progress
from lca_blender.reconstruct.cameras import SfmCameras, _unusable, align_cameras, in_reference_frame
from lca_blender.reconstruct.ingest import Photo

SIZE = 320
VIEWS = 24  # 15 degrees apart: at 30 degrees too few features survive on a body this small
FOV_DEG = 50.0  # a phone's field of view; at 30 degrees the views are nearly affine


def _rotation(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = math.radians(angle_deg)
    return np.eye(3) + math.sin(angle) * skew + (1 - math.cos(angle)) * skew @ skew


def _ring_cameras(count: int, radius: float = 3.0) -> dict[str, Camera]:
    intrinsics = np.array([[300.0, 0, 128], [0, 300.0, 128], [0, 0, 1]])
    cameras = {}
    for index in range(count):
        angle = 2 * math.pi * index / count
        position = np.array([radius * math.sin(angle), -radius * math.cos(angle), 0.3 * (index % 3)])
        cameras[f"photo {index}"] = Camera(
            f"photo {index}", position, look_at(position, np.zeros(3)), intrinsics, SIZE, SIZE
        )
    return cameras


def _sfm(cameras: dict[str, Camera]) -> SfmCameras:
    rng = np.random.default_rng(0)
    return SfmCameras(
        cameras=cameras,
        points=rng.normal(0, 0.3, (50, 3)).astype(np.float32),
        point_colors=np.full((50, 3), 0.5, np.float32),
        photo_count=len(cameras),
        reprojection_error_px=0.5,
    )


def _project(camera: Camera, points: np.ndarray) -> np.ndarray:
    in_camera = points @ camera.viewmat[:3, :3].T + camera.viewmat[:3, 3]
    pixels = in_camera @ camera.intrinsics.T
    return pixels[:, :2] / pixels[:, 2:]


SIMILARITY = Similarity(scale=0.4, rotation=_rotation([1, 2, 3], 70), translation=np.array([0.2, -1.0, 0.9]))


def test_reference_frame_keeps_every_projection():
    sfm = _sfm(_ring_cameras(8))
    moved = in_reference_frame(sfm, SIMILARITY)
    # The points are stored in float32: half an ulp of coordinates below 4 is 2.4e-7.
    np.testing.assert_allclose(moved.points, SIMILARITY.apply(sfm.points), atol=1e-6)
    for source, camera in sfm.cameras.items():
        np.testing.assert_allclose(moved.cameras[source].position, SIMILARITY.apply(camera.position[None])[0])
        # float64 throughout: pixel coordinates of ~100 agree to ~1e-13 px.
        np.testing.assert_allclose(
            _project(moved.cameras[source], SIMILARITY.apply(sfm.points)),
            _project(camera, sfm.points),
            atol=1e-9,
        )
        np.testing.assert_allclose(
            np.linalg.inv(moved.cameras[source].viewmat)[:3, 3], moved.cameras[source].position
        )


def test_alignment_recovers_the_similarity_despite_wrong_reference_cameras():
    sfm = _sfm(_ring_cameras(10))
    reference = {
        source: camera.viewmat.copy()
        for source, camera in in_reference_frame(sfm, SIMILARITY).cameras.items()
    }
    # Two photos where the body fitter got the camera wrong: turned 40 degrees, or moved 1 m.
    reference["photo 3"][:3, :3] = _rotation([0, 1, 0], 40) @ reference["photo 3"][:3, :3]
    reference["photo 7"][:3, 3] += reference["photo 7"][:3, :3] @ np.array([1.0, 0.0, 0.0])
    alignment = align_cameras(sfm, reference)
    assert alignment.inliers == frozenset(reference) - {"photo 3", "photo 7"}
    # Procrustes on exact float64 data: ~1e-15 (measured <= 1e-12 over 1000 random similarities).
    assert alignment.similarity.scale == pytest.approx(SIMILARITY.scale, rel=1e-9)
    np.testing.assert_allclose(alignment.similarity.rotation, SIMILARITY.rotation, atol=1e-9)
    np.testing.assert_allclose(alignment.similarity.translation, SIMILARITY.translation, atol=1e-9)
    assert alignment.rotation_errors_deg["photo 3"] == pytest.approx(40.0, abs=1e-6)
    assert alignment.centre_errors["photo 7"] == pytest.approx(1.0, abs=1e-6)
    # An angle read back as arccos((trace - 1) / 2) cannot resolve less than sqrt(2 d) radians,
    # d the rounding error of the cosine: arccos is infinitely steep at 1. The trace of a product
    # of float64 rotations carries tens of roundings of 2^-53 (measured over 1000 random
    # similarities: at most 12), so an exact alignment reads as up to ~3e-6 degrees; the bound
    # allows 64 roundings.
    arccos_resolution_deg = math.degrees(math.sqrt(2 * 64 * 2.0**-53))  # 6.8e-6
    assert max(alignment.rotation_errors_deg[source] for source in alignment.inliers) < arccos_resolution_deg


def test_alignment_with_noisy_reference_cameras():
    sfm = _sfm(_ring_cameras(10))
    rng = np.random.default_rng(1)
    reference = {}
    for source, camera in in_reference_frame(sfm, SIMILARITY).cameras.items():
        viewmat = camera.viewmat.copy()
        viewmat[:3, :3] = _rotation(rng.normal(size=3), 1.0) @ viewmat[:3, :3]
        position = camera.position + rng.normal(0, 0.01, 3)
        viewmat[:3, 3] = -viewmat[:3, :3] @ position
        reference[source] = viewmat
    alignment = align_cameras(sfm, reference)
    # Over 300 noise seeds: every photo kept, scale off by <= 0.73 %, rotation by <= 0.51 degrees.
    assert len(alignment.inliers) == 10
    assert alignment.similarity.scale == pytest.approx(SIMILARITY.scale, rel=0.02)
    turn = alignment.similarity.rotation @ SIMILARITY.rotation.T
    assert math.degrees(math.acos(min(1.0, (np.trace(turn) - 1) / 2))) < 1.0
    # Each photo's error is its own 1 degree turn composed with the fit's (< 1 degree): < 2.
    assert max(alignment.rotation_errors_deg.values()) < 2.0


def test_alignment_needs_three_shared_photos():
    sfm = _sfm(_ring_cameras(5))
    with pytest.raises(ValueError, match="at least 3"):
        align_cameras(sfm, {source: sfm.cameras[source].viewmat for source in ["photo 0", "photo 1"]})


def test_degenerate_reconstructions_are_refused():
    assert _unusable(_sfm(_ring_cameras(8))) is None
    assert "3 of 8 photos" in _unusable(dataclasses.replace(_sfm(_ring_cameras(3)), photo_count=8))
    few_points = _sfm(_ring_cameras(8))
    assert "points" in _unusable(dataclasses.replace(few_points, points=few_points.points[:10]))
    assert "reprojection" in _unusable(dataclasses.replace(few_points, reprojection_error_px=5.0))
    # Every camera at the same place, turning on the spot: nothing to triangulate from.
    spinning = {
        source: dataclasses.replace(
            camera, position=np.zeros(3), viewmat=_with_centre(camera.viewmat, np.zeros(3))
        )
        for source, camera in _ring_cameras(8).items()
    }
    assert "barely moved" in _unusable(dataclasses.replace(few_points, cameras=spinning))


def _with_centre(viewmat: np.ndarray, centre: np.ndarray) -> np.ndarray:
    moved = viewmat.copy()
    moved[:3, 3] = -moved[:3, :3] @ centre
    return moved


# Structure-from-motion on rendered photos.


@pytest.fixture(scope="module")
def turnaround():
    """A person turning in front of a fixed camera and a textured wall: photos, masks, true cameras.

    The subject is the sample avatar's body in an opaque speckled outfit (random 5 cm patches):
    the sample outfit's horizontal stripes look the same from every side and fold SfM's back
    views onto the front ones, and its 92 %-opaque skin lets the far side show through.
    """
    pytest.importorskip("pycolmap")
    pytest.importorskip("torch")
    pytest.importorskip("anny")
    from lca_blender.bodies.anny_body import anny_rig
    from lca_blender.maths.colour import linear_to_srgb
    from lca_blender.maths.deform import pose_avatar
    from lca_blender.maths.sh import SH_C0
    from lca_blender.reconstruct.sample import sample_avatar
    from lca_blender.render.pictures import framed_cameras, render_views

    avatar = sample_avatar(anny_rig(), 8000, sh_degree=0)
    rng = np.random.default_rng(1)
    patches = np.unique(
        np.floor(pose_avatar(avatar).means / 0.05).astype(np.int64), axis=0, return_inverse=True
    )[1]
    patch_count = patches.max() + 1
    albedo = rng.uniform(0.01, 0.8, (patch_count, 1)) * rng.uniform(0.6, 1.0, (patch_count, 3))
    avatar = dataclasses.replace(
        avatar,
        opacities=np.ones_like(avatar.opacities),
        sh=((linear_to_srgb(albedo[patches.ravel()]) - 0.5) / SH_C0)[:, None].astype(np.float32),
    )
    splats = pose_avatar(avatar)
    cameras = []
    for index in range(VIEWS):
        view = [(f"turn {index:02d}.png", 360.0 * index / VIEWS)]
        elevation = (0.0, 8.0, 16.0, 8.0)[index % 4]  # mild, so the cameras are not all coplanar
        cameras += framed_cameras(splats, view, SIZE, SIZE, fov_deg=FOV_DEG, elevation_deg=elevation)
    images = render_views(avatar, splats, cameras, background=(0.0, 0.0, 0.0))
    # The wall does not turn with the person: unmasked, it would say the camera never moved.
    wall = np.kron(rng.uniform(0.1, 0.9, (SIZE // 8, SIZE // 8, 3)), np.ones((8, 8, 1)))
    photos, masks = [], {}
    for camera, image in zip(cameras, images, strict=True):
        display = image[..., :3] + (1 - image[..., 3:]) * wall
        photos.append(Photo(camera.name, srgb_to_linear(display).astype(np.float32), None, (SIZE, SIZE)))
        masks[camera.name] = image[..., 3]
    return photos, masks, {camera.name: camera for camera in cameras}, splats


@pytest.fixture(scope="module")
def sfm_result(turnaround, tmp_path_factory):
    from lca_blender.reconstruct.cameras import structure_from_motion

    photos, masks, _, _ = turnaround
    return structure_from_motion(photos, masks, tmp_path_factory.mktemp("sfm"))


# What SfM achieves on this turnaround, measured over five outfits (texture seeds 1-5; the fixture
# uses 1): every view registered, reprojection 0.46-0.49 px, focal length within 2.5 %, the worst
# camera turned by 1.0-2.3 degrees and off by 1.5-2.8 % of the orbit's radius, 90 % of the points
# within 2.0-3.1 cm of a Gaussian centre (the centres' spacing alone accounts for 0.9 cm). The
# bounds below leave about twice that; a camera SfM got wrong is off by tens of degrees.
WORST_CAMERA_TURN_DEG = 4.5


def test_sfm_recovers_the_orbit(turnaround, sfm_result):
    _, _, truth, splats = turnaround
    assert sfm_result is not None
    assert sfm_result.registered >= VIEWS - 2
    assert sfm_result.reprojection_error_px < 1.0
    true_focal = next(iter(truth.values())).intrinsics[0, 0]
    assert sfm_result.focal_px == pytest.approx(true_focal, rel=0.1)

    alignment = align_cameras(sfm_result, {name: camera.viewmat for name, camera in truth.items()})
    centres = np.array([camera.position for camera in truth.values()])
    orbit_radius = float(np.linalg.norm(centres[:, :2] - centres[:, :2].mean(0), axis=1).mean())
    assert len(alignment.inliers) == sfm_result.registered
    assert max(alignment.rotation_errors_deg.values()) < WORST_CAMERA_TURN_DEG
    assert max(alignment.centre_errors.values()) < 0.06 * orbit_radius

    # In the body's frame, the sparse points lie on the body (about 25 cm deep, so a point 5 cm
    # from every Gaussian centre is off it).
    placed = in_reference_frame(sfm_result, alignment.similarity)
    nearest = np.array([np.linalg.norm(splats.means - point, axis=1).min() for point in placed.points])
    assert np.quantile(nearest, 0.9) < 0.05


def test_neighbour_pairs_wrap_round_a_turn(monkeypatch):
    from lca_blender.reconstruct import cameras

    monkeypatch.setattr(cameras, "SEQUENTIAL_OVERLAP", 2)
    names = [f"{index}" for index in range(10)]
    pairs = cameras._neighbour_pairs(names)
    steps = {min((int(b) - int(a)) % 10, (int(a) - int(b)) % 10) for a, b in pairs}
    assert steps == {1, 2, 4}  # the next two, and 4 and 8 (= 2 the other way) further on
    assert ("0", "9") in pairs and len(pairs) == len(set(pairs)) == 30


def test_sfm_on_many_frames_matches_neighbours(turnaround, tmp_path, monkeypatch):
    import pycolmap

    from lca_blender.reconstruct import cameras

    def exhaustive(*args, **kwargs):
        raise AssertionError("matched every pair of a long sequence")

    monkeypatch.setattr(cameras, "EXHAUSTIVE_MAX_PHOTOS", 10)
    monkeypatch.setattr(cameras, "SEQUENTIAL_OVERLAP", 3)
    monkeypatch.setattr(pycolmap, "match_exhaustive", exhaustive)
    photos, masks, truth, _ = turnaround
    sfm = cameras.structure_from_motion(photos, masks, tmp_path)
    assert sfm is not None and sfm.registered >= VIEWS - 2
    alignment = align_cameras(sfm, {name: camera.viewmat for name, camera in truth.items()})
    assert max(alignment.rotation_errors_deg.values()) < WORST_CAMERA_TURN_DEG


def test_sfm_gives_up_on_too_few_photos(turnaround, tmp_path):
    from lca_blender.reconstruct.cameras import structure_from_motion

    photos, masks, _, _ = turnaround
    assert structure_from_motion(photos[:2], masks, tmp_path) is None


def test_sfm_gives_up_on_a_blank_wall(tmp_path):
    pytest.importorskip("pycolmap")
    from lca_blender.reconstruct.cameras import structure_from_motion

    shading = np.linspace(0.3, 0.35, SIZE, dtype=np.float32)[None, :, None]
    photos = [
        Photo(f"wall {index}", np.broadcast_to(shading, (SIZE, SIZE, 3)).copy(), None, (SIZE, SIZE))
        for index in range(6)
    ]
    assert structure_from_motion(photos, None, tmp_path) is None


class _CancelAt(Progress):
    """Asks to stop once the work has passed a fraction (as a user pressing Esc would)."""

    def __init__(self, fraction: float) -> None:
        super().__init__()
        self.fraction = fraction
        self.seen: list[float] = []

    def _show(self, fraction: float, message: str, eta: float | None) -> None:
        self.seen.append(fraction)
        self.cancel_requested = fraction > self.fraction


@pytest.mark.parametrize("fraction", [0.0, 0.56], ids=["before COLMAP", "while placing photos"])
def test_sfm_stops_when_cancelled(turnaround, tmp_path, fraction):
    from lca_blender.reconstruct.cameras import structure_from_motion

    photos, masks, _, _ = turnaround
    progress = _CancelAt(fraction)
    with pytest.raises(Cancelled):
        structure_from_motion(photos[:8], masks, tmp_path, progress)
    assert max(progress.seen) < 0.7  # COLMAP stopped soon after the request
