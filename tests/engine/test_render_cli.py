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


def test_lights_file_and_pose(small_avatar, tmp_path):
    lights = tmp_path / "scene.json"
    lights.write_text(
        json.dumps(
            {
                "ambient": {"color": [1, 1, 1], "strength": 0.2},
                "lights": [{"type": "sun", "direction": [0, 1, -1], "color": [0.6, 0.7, 1], "strength": 3}],
            }
        )
    )
    output = tmp_path / "posed.png"
    result = lca(
        "render", str(small_avatar), "-o", str(output), "--size", "64", "--look", "relit",
        "--lights", str(lights), "--pose", "wave", "--expression", "jawOpen=0.7",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert output.stat().st_size > 0


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
