"""fit_body on SMPL-X: the torch body model, recovery of a known body from its landmarks, the CLI.

No real SMPL-X file can be used here (it needs registration), so the model is the small synthetic
SMPL-X file of tests/core/test_smplx_body.py: 55 joints with a cluster of six vertices round each.
Its vertices have no anatomy, so the landmarks' surface points (nose, ears, heels, toes,
fingertips) are pointed at vertices of the nearest joints' clusters, and the inner lips at the
head's and the jaw's clusters.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from test_smplx_body import VERTICES_PER_JOINT, synthetic_smplx_arrays, write_model  # noqa: E402

from lca_blender.avatar import Pose  # noqa: E402
from lca_blender.bodies.smplx_body import (  # noqa: E402
    SMPLX_JOINT_NAMES,
    SMPLX_TO_BLENDER,
    smplx_pose_to_pose,
    smplx_rig,
)
from lca_blender.cli import EXIT_BAD_INPUT, main  # noqa: E402
from lca_blender.errors import BodyModelError  # noqa: E402
from lca_blender.maths.alignment import umeyama_similarity  # noqa: E402
from lca_blender.maths.cameras import Camera, look_at  # noqa: E402
from lca_blender.maths.deform import forward_kinematics, pose_vertices  # noqa: E402
from lca_blender.maths.rotations import quaternion_to_matrix  # noqa: E402
from lca_blender.paths import cache_dir  # noqa: E402
from lca_blender.reconstruct import pipeline  # noqa: E402
from lca_blender.reconstruct.cameras import SfmCameras  # noqa: E402
from lca_blender.reconstruct.fit_body import (  # noqa: E402
    BODY_JOINTS,
    BODY_SURFACE_INDICES,
    FACE_LANDMARKS,
    BodyChoice,
    BodyFitSettings,
    body_choice,
    fit_body,
    optimise,
)
from lca_blender.reconstruct.fit_body import smplx as smplx_adapter  # noqa: E402
from lca_blender.reconstruct.fit_body.smplx import (  # noqa: E402
    LIP_LANDMARKS,
    SMPLX_VERTICES,
    SmplxBody,
)
from lca_blender.reconstruct.fit_body.targets import HAND_LANDMARKS, HAND_WEIGHT, landmark_targets  # noqa: E402
from lca_blender.reconstruct.perceive import Perception  # noqa: E402
from lca_blender.reconstruct.views import preset  # noqa: E402

NAMES = list(SMPLX_JOINT_NAMES)
SIDE = 512  # the synthetic photos' size in pixels
FOCAL = BodyFitSettings.start_focal  # in units of the longer side: the fit's starting focal length
SFM_FOCAL = 1.45  # structure-from-motion's, a little off the photos' own (FOCAL), to tell them apart


def _cluster_vertex(joint: str, offset: int = 4) -> int:
    return NAMES.index(joint) * VERTICES_PER_JOINT + offset


SYNTHETIC_VERTICES = {
    "nose": _cluster_vertex("head"),
    "ear.L": _cluster_vertex("left_eye_smplhf", 5),
    "ear.R": _cluster_vertex("right_eye_smplhf", 5),
    "heel.L": _cluster_vertex("left_ankle"),
    "heel.R": _cluster_vertex("right_ankle"),
    "toe.L": _cluster_vertex("left_foot"),
    "toe.R": _cluster_vertex("right_foot"),
} | {
    f"{finger}.{side}": _cluster_vertex(f"{prefix}_{finger}3")
    for side, prefix in (("L", "left"), ("R", "right"))
    for finger in ("thumb", "index", "middle", "ring", "pinky")
}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    arrays = synthetic_smplx_arrays()
    # Triangle j holds the first three vertices of joint j's cluster: the upper inner lip on the
    # head, the lower one on the jaw.
    arrays["lmk_faces_idx"][LIP_LANDMARKS[0]] = NAMES.index("head")
    arrays["lmk_faces_idx"][LIP_LANDMARKS[1]] = NAMES.index("jaw")
    return write_model(tmp_path_factory.mktemp("smplx") / "SMPLX_NEUTRAL.npz", arrays)


@pytest.fixture(scope="module")
def synthetic_vertices():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(smplx_adapter, "SMPLX_VERTICES", SYNTHETIC_VERTICES)
        yield


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LCA_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def one_thread():
    # The fit's tensors are small: on a busy two-core machine torch's thread pool spins for
    # longer than the maths takes (about ten times longer here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_forward_model_is_the_rig_posed(model_file, module_cache, synthetic_vertices, tmp_path):
    """The torch SMPL-X gives the vertices and joints of `smplx_rig` posed by `smplx_pose_to_pose`
    (the numpy deform of the Rig, itself checked against the `smplx` package)."""
    body = SmplxBody(model_file, tmp_path / "cache", face_seen=True)
    rng = np.random.default_rng(5)
    rotvecs = torch.as_tensor(rng.normal(0.0, 0.4, (55, 3)), dtype=torch.float32)
    with torch.no_grad():
        body.shape[:] = torch.as_tensor(rng.normal(0.0, 1.0, 10))
        posed = body.posed(rotvecs)
    fitted = body.result(posed)
    assert fitted.rig.body_model == "smplx"
    assert fitted.rig.body_parameters["betas"] == body.shape.tolist()  # float32 -> float64: exact
    # float32 torch against float64 numpy: over 20 draws of pose and betas, at most 4e-7 m apart.
    np.testing.assert_allclose(pose_vertices(fitted.rig, fitted.pose), posed.vertices.numpy(), atol=1e-5)
    heads = forward_kinematics(fitted.rig, fitted.pose).world[:, :3, 3]
    wrist = NAMES.index("left_wrist")
    np.testing.assert_allclose(
        posed.points[len(BODY_JOINTS) + len(BODY_SURFACE_INDICES)], heads[wrist], atol=1e-5
    )
    np.testing.assert_allclose(posed.points[: len(BODY_JOINTS)], heads[body._body_joints.numpy()], atol=1e-5)


AZIMUTHS = np.radians(np.arange(0, 360, 45))  # the eight photos' cameras round the body; 0: in front


def _viewmat(azimuth: float) -> np.ndarray:
    """The camera 3 m from the body at `azimuth` (90 degrees: on the person's left, +X)."""
    return look_at(3.0 * np.array([math.sin(azimuth), -math.cos(azimuth), 0.03]), np.zeros(3))


def _perceptions(points: np.ndarray, vertices: np.ndarray) -> list[Perception]:
    """What MediaPipe would see of the body's landmark points from eight cameras round it (3 m
    away, FOCAL): every body and hand landmark, the face from the front three, the nose hidden
    from the back three; masks are the projected vertices drawn as 6-pixel discs."""
    perceptions = []
    body_landmarks = list(BODY_JOINTS) + list(BODY_SURFACE_INDICES)
    hands = len(body_landmarks)
    for view, azimuth in enumerate(AZIMUTHS):
        viewmat = _viewmat(azimuth)

        def project(world: np.ndarray, viewmat=viewmat) -> np.ndarray:
            camera = world @ viewmat[:3, :3].T + viewmat[:3, 3]
            pixels = FOCAL * SIDE * camera[:, :2] / camera[:, 2:] + SIDE / 2
            return np.concatenate([pixels, camera[:, 2:]], 1).astype(np.float32)

        seen, outline = project(points), project(vertices)
        pose = np.zeros((33, 4), np.float32)
        pose[body_landmarks, :3] = seen[:hands]
        pose[body_landmarks, 3] = 1.0
        if math.cos(azimuth) < -0.5:
            pose[[0, 2, 5], 3] = 0.0  # nose and eyes hidden from behind
        face = None
        if math.cos(azimuth) > 0.5:
            face = np.zeros((468, 3), np.float32)
            face[list(FACE_LANDMARKS)] = seen[hands + 42 :]
        mask = np.zeros((SIDE, SIDE), np.uint8)
        for x, y, _ in outline:
            cv2.circle(mask, (round(float(x)), round(float(y))), 6, 1, -1)
        left, right = seen[hands : hands + 21], seen[hands + 21 : hands + 42]
        perceptions.append(Perception(f"view{view}", pose, left, right, face, mask.astype(np.float32)))
    return perceptions


def _without_some_hands(perceptions: list[Perception]) -> list[Perception]:
    """The photos as MediaPipe finds hands round a body: the hand behind the body is not found
    from the side (the right hand from the left, views 1-3; the left from the right, views 5-7)."""
    unseen = {
        1: "right_hand",
        2: "right_hand",
        3: "right_hand",
        5: "left_hand",
        6: "left_hand",
        7: "left_hand",
    }
    return [
        dataclasses.replace(seen, **{unseen[view]: None}) if view in unseen else seen
        for view, seen in enumerate(perceptions)
    ]


def _sfm_cameras() -> SfmCameras:
    """The photos' true cameras as structure-from-motion places them: in a frame of its own,
    x_sfm = s R x + o, with a focal length of SFM_FOCAL."""
    quaternion = np.array([0.8, 0.2, -0.5, 0.26])
    rotation = quaternion_to_matrix(quaternion / np.linalg.norm(quaternion))
    scale, offset = 0.37, np.array([0.4, -1.2, 2.0])
    intrinsics = np.array([[SFM_FOCAL * SIDE, 0, SIDE / 2], [0, SFM_FOCAL * SIDE, SIDE / 2], [0, 0, 1]])
    cameras = {}
    for view, azimuth in enumerate(AZIMUTHS):
        viewmat = _viewmat(azimuth)
        # x_cam = V x = V R^T (x_sfm - o) / s, and camera units scaled by s.
        moved = np.eye(4)
        moved[:3, :3] = viewmat[:3, :3] @ rotation.T
        moved[:3, 3] = scale * viewmat[:3, 3] - moved[:3, :3] @ offset
        position = -moved[:3, :3].T @ moved[:3, 3]
        cameras[f"view{view}"] = Camera(f"view{view}", position, moved, intrinsics, SIDE, SIDE)
    return SfmCameras(
        cameras, np.zeros((60, 3), np.float32), np.zeros((60, 3), np.float32), len(AZIMUTHS), 0.5
    )


@pytest.fixture(scope="module")
def known_body(model_file, module_cache, synthetic_vertices, one_thread):
    """A body with known betas and pose, its synthetic perceptions and the fit to them."""
    rng = np.random.default_rng(0)
    truth = SmplxBody(model_file, cache_dir() / "bodies", face_seen=True)
    betas = rng.normal(0.0, 0.7, 10)
    rotvecs = rng.normal(0.0, 0.2, (55, 3)) * truth.free
    rotvecs[0] = 0.0  # the world is the body's: the cameras carry its orientation
    rotvecs[NAMES.index("jaw")] = [0.3, 0.0, 0.0]  # the mouth open by 17 degrees
    with torch.no_grad():
        truth.shape[:] = torch.as_tensor(betas)
        posed = truth.posed(torch.as_tensor(rotvecs, dtype=torch.float32))
    perceptions = _perceptions(posed.points.double().numpy(), posed.vertices.double().numpy())
    choice = body_choice("smplx", model_file)
    fit = fit_body(perceptions, steps=preset("preview").body_steps, body=choice)
    return {"betas": betas, "rotvecs": rotvecs, "perceptions": perceptions, "choice": choice, "fit": fit}


def _joints(rig, rotvecs: np.ndarray) -> np.ndarray:
    axis_angles = rotvecs @ SMPLX_TO_BLENDER
    pose = smplx_pose_to_pose(
        rig, axis_angles[0], axis_angles[1:22], axis_angles[22], axis_angles[25:40], axis_angles[40:55],
        leye_pose=axis_angles[23], reye_pose=axis_angles[24],
    )  # fmt: skip
    return forward_kinematics(rig, pose).world[:, :3, 3]


def _joint_errors(fit, known_body, model_file) -> np.ndarray:
    """[55] each joint's distance (m) from the truth, after the rigid motion that the cameras leave
    free (the body's turn against all the cameras')."""
    truth = _joints(
        smplx_rig(model_file, cache_dir() / "bodies", betas=known_body["betas"]), known_body["rotvecs"]
    )
    fitted = forward_kinematics(fit.rig, fit.pose).world[:, :3, 3]
    return np.linalg.norm(umeyama_similarity(fitted, truth, with_scale=False).apply(fitted) - truth, axis=1)


def test_fit_recovers_a_known_body(known_body, model_file, module_cache):
    """All 55 joints within 1.5 cm (median) and 4 cm (worst) of the truth.

    The landmarks are exact, so what is left is the fit's own bias: the pose and betas priors
    pull towards the rest pose, the silhouette's outline lies 6 px (about 2.5 cm) outside the
    vertices, and joints no landmark names (spine, collars, neck) follow only from their children.
    (The toy model's triangles share no edge, so its outline is matched to the nearest vertex.)
    This body's figures: median 0.75 cm, worst joint 3.1 cm (the left foot), landmark error
    1.3 px, the jaw at 21 degrees; before the outline was taken at the mask's edge rather than at
    its last pixels' centres, half a pixel inside, 0.66 and 1.9 cm (with 0.01 px of noise on the
    landmarks, four draws: medians of 0.6-0.7 cm, worst joints of 1.7-1.9 cm, landmark errors of
    1.2-1.4 px, the jaw at 18-22 degrees). The jaw's truth is 17 degrees; its vertices are drawn
    in the masks, so the silhouettes see it as well as the three photos' lips (with the lips
    weighted 0 it still came to 22). Other
    bodies (seeds 1-5 of the truth) gave medians of 0.6-1.3 cm and worst joints of 2.1-3.8 cm.
    The body at rest, where the fit starts, is about ten times further off (checked below).
    """
    fit = known_body["fit"]
    errors = _joint_errors(fit, known_body, model_file)
    assert np.median(errors) < 0.015, f"median joint error {np.median(errors) * 100:.1f} cm"
    assert errors.max() < 0.04, f"{NAMES[errors.argmax()]} is {errors.max() * 100:.1f} cm off"
    truth = _joints(
        smplx_rig(model_file, cache_dir() / "bodies", betas=known_body["betas"]), known_body["rotvecs"]
    )
    rest = _joints(smplx_rig(model_file, cache_dir() / "bodies"), np.zeros((55, 3)))
    rest_errors = np.linalg.norm(
        umeyama_similarity(rest, truth, with_scale=False).apply(rest) - truth, axis=1
    )
    assert np.median(rest_errors) > 5 * np.median(errors)

    assert fit.report["landmark_error_px_median"] < 3.0
    assert 8.0 < fit.report["jaw_deg"] < 30.0
    assert fit.rig.body_model == "smplx" and fit.rig.joint_names == NAMES
    assert fit.expressions.shape == (len(fit.rig.expression_names),) and not fit.expressions.any()
    assert [view.source for view in fit.views] == [seen.source for seen in known_body["perceptions"]]


def test_photos_without_some_hands_fit_as_well(known_body, model_file, monkeypatch):
    """Each hand found in five of the eight photos, the face in three: the fit weighs the hands a
    photo lacks 0, the ones it has as found, and recovers the body as from every landmark.

    Measured as in the test above: medians of 0.5-0.6 cm, worst joints of 1.4-1.6 cm, landmark
    errors of 1.2-1.5 px. The robust loss bounds what a wrong landmark can do (when tried,
    weighting the missing hands as if found at the image's corner left every joint within 2 cm),
    so the weights the fit used are checked themselves.
    """
    perceptions = _without_some_hands(known_body["perceptions"])
    used = []

    def recorded(*arguments):
        used.append(landmark_targets(*arguments))
        return used[-1]

    monkeypatch.setattr(optimise, "landmark_targets", recorded)
    fit = fit_body(perceptions, steps=preset("preview").body_steps, body=known_body["choice"])

    (weights,) = [targets.weights for targets in used]
    body = len(BODY_JOINTS) + len(BODY_SURFACE_INDICES)
    left, right = slice(body, body + HAND_LANDMARKS), slice(body + HAND_LANDMARKS, body + 2 * HAND_LANDMARKS)
    for view, seen in enumerate(perceptions):
        np.testing.assert_array_equal(weights[view, left], 0.0 if seen.left_hand is None else HAND_WEIGHT)
        np.testing.assert_array_equal(weights[view, right], 0.0 if seen.right_hand is None else HAND_WEIGHT)
    assert sum(hand is not None for seen in perceptions for hand in (seen.left_hand, seen.right_hand)) == 10
    errors = _joint_errors(fit, known_body, model_file)
    assert np.median(errors) < 0.015, f"median joint error {np.median(errors) * 100:.1f} cm"
    assert errors.max() < 0.04, f"{NAMES[errors.argmax()]} is {errors.max() * 100:.1f} cm off"
    assert fit.report["landmark_error_px_median"] < 3.0


def test_no_steps_give_the_starting_fit(known_body):
    """With 0 steps the fit is its start: the body at rest with betas 0, seen by the starting
    cameras, here structure-from-motion's. SfM's cameras are the true ones, so the photos that took
    them sit as the truth's, all moved by one rotation; the others keep the direction search's."""
    start = fit_body(known_body["perceptions"], steps=0, sfm=_sfm_cameras(), body=known_body["choice"])
    assert start.rig.body_parameters["betas"] == [0.0] * 10
    # Zero rotation vectors are zero axis-angles in every joint's frame: exactly the rest pose.
    np.testing.assert_array_equal(start.pose.rotations, Pose.rest(55).rotations)
    used = int(start.report["cameras"].split()[2])  # "structure-from-motion for N photo(s)"
    assert used >= 6  # SfM is used only when most photos agree with it (`optimise.use_sfm`)
    # Per photo, fit world -> truth world; float32 cameras, so equal to about 1e-7.
    turns = [
        _viewmat(azimuth)[:3, :3].T @ view.camera.viewmat[:3, :3]
        for view, azimuth in zip(start.views, AZIMUTHS, strict=True)
    ]
    agreeing = [sum(np.allclose(turn, other, atol=1e-6) for other in turns) for turn in turns]
    assert max(agreeing) == used
    # SfM's focal length for its photos, the starting one for the others; stored as a float32
    # logarithm, so to about 1e-7.
    focals = [view.camera.intrinsics[0, 0] / SIDE for view in start.views]
    assert sum(focal == pytest.approx(SFM_FOCAL, rel=1e-6) for focal in focals) == used
    assert sum(focal == pytest.approx(FOCAL, rel=1e-6) for focal in focals) == len(focals) - used
    # The start is well off the landmarks: for this body 72 px (other bodies: 16-33 px), against
    # the fit's 1.2-1.4 px.
    assert start.report["landmark_error_px_median"] > 5 * known_body["fit"].report["landmark_error_px_median"]


def test_cached_fit_comes_back_on_the_same_body(known_body):
    """The fit_body stage saved and loaded again gives the same SMPL-X rig, pose and cameras."""
    fit, seen = known_body["fit"], known_body["perceptions"]
    meta, _ = pipeline._save_body(fit)
    photos = [SimpleNamespace(source=view.source, pixels=None) for view in fit.views]
    loaded = pipeline._load_body(meta, photos, seen, known_body["choice"])
    assert loaded.rig.body_parameters == fit.rig.body_parameters
    np.testing.assert_array_equal(loaded.rig.vertices, fit.rig.vertices)  # the same rig, rebuilt
    # The capture pose is kept to 6 decimals (5e-7), then read into float32 (6e-8 more).
    np.testing.assert_allclose(loaded.pose.rotations, fit.pose.rotations, rtol=0, atol=1e-6)
    for loaded_view, view in zip(loaded.views, fit.views, strict=True):  # float64 through JSON: exact
        np.testing.assert_array_equal(loaded_view.camera.viewmat, view.camera.viewmat)


def test_model_files_the_fit_cannot_use(tmp_path):
    arrays = synthetic_smplx_arrays()
    small = write_model(tmp_path / "small.npz", arrays)
    with pytest.raises(BodyModelError, match="10,475-vertex"):
        SmplxBody(small, tmp_path / "cache", face_seen=True, vertices=SMPLX_VERTICES)
    del arrays["lmk_faces_idx"], arrays["lmk_bary_coords"]
    bare = write_model(tmp_path / "bare.npz", arrays)
    with pytest.raises(BodyModelError, match="no facial landmarks"):
        SmplxBody(bare, tmp_path / "cache", face_seen=True, vertices=SYNTHETIC_VERTICES)
    assert max(SMPLX_VERTICES.values()) < 10_475


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--body", "smplx"], "--body smplx needs the SMPL-X model file"),
        (["--smplx", "{tmp}/SMPLX_NEUTRAL.pkl"], "pickle release"),
        (["--smplx", "{tmp}/missing.npz"], "does not exist"),
        (["--body", "smplx", "--smplx", "{tmp}/broken.npz"], "not a readable"),
        (["--body", "anny", "--smplx", "{model}"], "an Anny build does not use"),
    ],
    ids=["no model file", "pkl", "missing", "damaged", "anny with a model file"],
)
def test_cli_refuses_unusable_smplx_choices(arguments, message, model_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LCA_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "SMPLX_NEUTRAL.pkl").write_bytes(b"\x80\x04not looked at")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    arguments = [argument.format(tmp=tmp_path, model=model_file) for argument in arguments]
    status = main(["--progress", "none", "build", str(tmp_path), "-o", str(tmp_path / "a.lca"), *arguments])
    assert status == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not (tmp_path / "a.lca").exists()


def test_cache_key_tells_the_body_models_apart(model_file, tmp_path, monkeypatch):
    """Anny and SMPL-X builds (and builds on two SMPL-X files) never share cached stages."""
    monkeypatch.setenv("LCA_CACHE_DIR", str(tmp_path / "cache"))
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"the same photo")
    other_file = write_model(tmp_path / "SMPLX_MALE.npz", synthetic_smplx_arrays(seed=1))
    settings = preset("preview")
    keys = {
        pipeline.build_key([photo], pipeline.build_settings(settings, 0, choice))
        for choice in (BodyChoice(), body_choice("smplx", model_file), body_choice("smplx", other_file))
    }
    assert len(keys) == 3
    again = pipeline.build_key(
        [photo], pipeline.build_settings(settings, 0, body_choice("smplx", model_file))
    )
    assert again in keys
