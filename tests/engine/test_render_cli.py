"""`lca-avatar render` end to end: stills, contact sheets, looks, lights, turntables and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("anny")


def lca(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lca_blender.cli", "--progress", "none", *arguments],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def small_avatar(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("render") / "small.lca"
    result = lca("new", "-o", str(path), "--gaussians", "6000")
    assert result.returncode == 0, result.stderr
    return path


def test_front_still_shows_the_body_centred(small_avatar, tmp_path):
    output = tmp_path / "front.png"
    result = lca("render", str(small_avatar), "-o", str(output), "--size", "96x128", "--transparent")
    assert result.returncode == 0, result.stderr
    image = np.asarray(Image.open(output))
    assert image.shape == (128, 96, 4)
    alpha = image[..., 3] > 128
    assert not alpha[:, :5].any() and not alpha[:, -5:].any(), "the body must not touch the sides"
    rows, columns = np.nonzero(alpha)
    # Framed: the body spans most of the height and sits in the middle.
    assert np.ptp(rows) > 0.6 * 128
    assert abs(columns.mean() - 48) < 6


def test_contact_sheet_views_differ_and_looks_differ(small_avatar, tmp_path):
    sheet = tmp_path / "sheet.png"
    assert (
        lca(
            "render", str(small_avatar), "-o", str(sheet), "--camera", "front,back", "--size", "64"
        ).returncode
        == 0
    )
    pixels = np.asarray(Image.open(sheet)).astype(float)
    assert pixels.shape == (64, 128, 3)
    front, back = pixels[:, :64], pixels[:, 64:]
    assert np.abs(front - back).mean() > 1.0  # the face and the back of the head are not the same picture

    relit = tmp_path / "relit.png"
    warm_key = "sun:direction=0.4,0.8,-0.5;color=1,0.8,0.6;strength=4"
    result = lca(
        "render", str(small_avatar), "-o", str(relit), "--size", "64", "--look", "relit", "--light", warm_key
    )
    assert result.returncode == 0, result.stderr
    captured = np.asarray(Image.open(sheet))[:, :64].astype(float)
    relit_pixels = np.asarray(Image.open(relit)).astype(float)
    body = np.abs(captured - 0.15 * 255).sum(-1) > 30
    # A warm key light makes the lit body redder than blue compared with the captured colours.
    warmth = (relit_pixels[..., 0] - relit_pixels[..., 2])[body].mean()
    assert warmth > (captured[..., 0] - captured[..., 2])[body].mean()


WIDTH, HEIGHT = 120, 160


def _still(avatar: Path, output: Path, *arguments: str) -> np.ndarray:
    """[H, W, 3 or 4] uint8 pixels of a front still rendered by the CLI."""
    result = lca("render", str(avatar), "-o", str(output), "--size", f"{WIDTH}x{HEIGHT}", *arguments)
    assert result.returncode == 0, result.stderr
    return np.asarray(Image.open(output))


def _front_view(avatar_path: Path, pose_name: str = "rest", expressions: dict | None = None):
    """What the CLI renders for a pose: the posed splats, joints and the framed front camera."""
    from lca_blender.formats.lca import read_avatar
    from lca_blender.formats.poses import load_pose
    from lca_blender.maths.deform import forward_kinematics, pose_avatar
    from lca_blender.render.pictures import framed_cameras, view_azimuths

    avatar = read_avatar(avatar_path)
    pose, preset_expressions = load_pose(avatar.rig, pose_name)
    splats = pose_avatar(avatar, pose, {**preset_expressions, **(expressions or {})})
    (camera,) = framed_cameras(splats, view_azimuths("front"), WIDTH, HEIGHT)
    joints = forward_kinematics(avatar.rig, pose).world[:, :3, 3]
    return avatar, splats, camera, joints


def _pixels(camera, points: np.ndarray) -> np.ndarray:
    """[N, 2] (row, column) integer pixels where `camera` sees world `points` [N, 3]."""
    in_camera = points @ camera.viewmat[:3, :3].T + camera.viewmat[:3, 3]
    projected = in_camera @ camera.intrinsics.T
    columns, rows = (projected[:, :2] / projected[:, 2:]).T
    return np.stack([np.floor(rows), np.floor(columns)], 1).astype(int)


def _coverage_near(alpha: np.ndarray, pixel: np.ndarray) -> float:
    """Mean coverage of the 3 x 3 pixels round `pixel` (the arm is ~5 px wide here)."""
    row, column = pixel
    return float(alpha[row - 1 : row + 2, column - 1 : column + 2].mean())


def test_a_raised_arm_covers_the_air_above_the_shoulder_and_leaves_the_side(small_avatar, tmp_path):
    rest_alpha = _still(small_avatar, tmp_path / "rest.png", "--transparent")[..., 3] / 255
    wave_alpha = _still(small_avatar, tmp_path / "wave.png", "--transparent", "--pose", "wave")[..., 3] / 255
    avatar, _, rest_camera, rest_joints = _front_view(small_avatar)
    _, _, wave_camera, wave_joints = _front_view(small_avatar, "wave")
    wrist, shoulder = avatar.rig.joint_index("wrist.R"), avatar.rig.joint_index("upperarm01.R")

    # The preset lifts the right hand above the shoulder (world Z up): the premise of the checks.
    assert wave_joints[wrist, 2] > rest_joints[shoulder, 2] + 0.1
    # Where the hand is now (the camera frames the posed body, so each render uses its own camera):
    # covered in the wave, empty air in the rest pose.
    assert _coverage_near(wave_alpha, _pixels(wave_camera, wave_joints[[wrist]])[0]) > 0.9
    assert _coverage_near(rest_alpha, _pixels(rest_camera, wave_joints[[wrist]])[0]) < 0.05
    # Where the hand hung at rest: covered then, empty now.
    assert _coverage_near(rest_alpha, _pixels(rest_camera, rest_joints[[wrist]])[0]) > 0.9
    assert _coverage_near(wave_alpha, _pixels(wave_camera, rest_joints[[wrist]])[0]) < 0.05
    # The other hand stays where it was.
    left = avatar.rig.joint_index("wrist.L")
    assert _coverage_near(wave_alpha, _pixels(wave_camera, wave_joints[[left]])[0]) > 0.9


def test_jaw_open_changes_only_the_face(small_avatar, tmp_path):
    rest = _still(small_avatar, tmp_path / "rest.png").astype(int)
    jaw = _still(small_avatar, tmp_path / "jaw.png", "--expression", "jawOpen=1").astype(int)
    _, rest_splats, rest_camera, _ = _front_view(small_avatar)
    _, jaw_splats, jaw_camera, _ = _front_view(small_avatar, expressions={"jawOpen": 1.0})
    np.testing.assert_array_equal(jaw_camera.viewmat, rest_camera.viewmat)  # the jaw moves no bound

    changed = np.abs(jaw - rest).sum(-1) > 0
    assert changed.sum() >= 20, "jawOpen changed nothing"
    # Every changed pixel lies in the box of the Gaussians jawOpen moves, grown by 3 px for their
    # footprints (each is at most ~2 px across at this size).
    moved = np.linalg.norm(jaw_splats.means - rest_splats.means, axis=1) > 1e-6
    footprint = np.concatenate(
        [_pixels(rest_camera, rest_splats.means[moved]), _pixels(jaw_camera, jaw_splats.means[moved])]
    )
    low, high = footprint.min(0) - 3, footprint.max(0) + 3
    rows, columns = np.nonzero(changed)
    assert (
        rows.min() >= low[0]
        and rows.max() <= high[0]
        and columns.min() >= low[1]
        and columns.max() <= high[1]
    )
    assert high[0] - low[0] < 0.15 * HEIGHT  # and that box is a face, not the body


SUN = "sun:direction=0.3,1,-0.4;strength=3"  # from the camera's side, so the front is lit


def test_a_coloured_light_tints_the_relit_image_in_its_colour(small_avatar, tmp_path):
    relit = ("--look", "relit", "--background", "0,0,0")
    white = _still(small_avatar, tmp_path / "white.png", *relit, "--light", f"{SUN};color=1,1,1")
    red = _still(small_avatar, tmp_path / "red.png", *relit, "--light", f"{SUN};color=1,0,0")
    assert (white[..., 0] > 0).sum() > 1000  # the lit body
    # Without ambient light, a red sun leaves green and blue dark and red as the white sun has it
    # (each channel is shaded on its own, so exactly the same values).
    np.testing.assert_array_equal(red[..., 1:], 0)
    np.testing.assert_array_equal(red[..., 0], white[..., 0])
    assert (white[..., 1] > 0).sum() > 1000


def test_a_lights_file_is_the_same_scene_as_the_light_specs(small_avatar, tmp_path):
    scene = {
        "ambient": {"color": [0.2, 0.3, 0.4], "strength": 0.5},
        "lights": [{"type": "sun", "direction": [0.3, 1, -0.4], "color": [0.6, 0.7, 1], "strength": 3}],
    }
    lights = tmp_path / "scene.json"
    lights.write_text(json.dumps(scene))
    relit = ("--look", "relit", "--background", "0,0,0")
    from_file = _still(small_avatar, tmp_path / "file.png", *relit, "--lights", str(lights))
    specs = ("--light", f"{SUN};color=0.6,0.7,1", "--light", "ambient:color=0.2,0.3,0.4;strength=0.5")
    from_specs = _still(small_avatar, tmp_path / "specs.png", *relit, *specs)
    np.testing.assert_array_equal(from_file, from_specs)
    # A sun from behind leaves the front in the dark: the light's direction matters.
    behind = _still(
        small_avatar, tmp_path / "behind.png", *relit, "--light", "sun:direction=-0.3,-1,-0.4;strength=3"
    )
    front = _still(small_avatar, tmp_path / "front.png", *relit, "--light", SUN)
    assert front.mean() > 4 * behind.mean()


def test_turntable_gif_has_every_frame(small_avatar, tmp_path):
    output = tmp_path / "turn.gif"
    result = lca("render", str(small_avatar), "-o", str(output), "--turntable", "4", "--size", "48")
    assert result.returncode == 0, result.stderr
    with Image.open(output) as animation:
        assert animation.n_frames == 4


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["--camera", "top"], "Unknown camera"),
        (["--camera", "orbit:0"], "orbit"),
        (["--light", "laser:power=3"], "laser"),
        (["--light", "sun:direction=0,0,0;strength=1"], "direction"),
        (["--lights", "{tmp}/missing.json"], "missing.json"),
        (["--turntable", "3"], ".gif"),
        (["--background", "1,2"], "--background"),
    ],
    ids=[
        "unknown-camera", "empty-orbit", "unknown-light", "zero-direction", "missing-lights",
        "png-turntable", "short-background",
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error(small_avatar, tmp_path, arguments, fragment):
    output = tmp_path / "out.png"
    arguments = [argument.replace("{tmp}", str(tmp_path)) for argument in arguments]
    result = lca("render", str(small_avatar), "-o", str(output), "--size", "32", *arguments)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()
    assert not list(tmp_path.glob("*.partial*"))
