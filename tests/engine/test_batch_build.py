"""`lca-avatar batch` with the real engine: six subjects, two of them broken, then a rerun.

Each subject's build is a real engine process (`quick_engine.py`: every stage runs, the fits take
fewer steps), two at a time; the example subject's photos, two different ones per subject, are
the people. tests/core/test_batch.py covers the batch's machinery with a stand-in engine.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("anny")
pytest.importorskip("mediapipe")

from PIL import Image  # noqa: E402

from lca_blender.addon.engine_process import ENGINE_COMMAND_VARIABLE  # noqa: E402
from lca_blender.batch.report import REPORT_NAME, read_report  # noqa: E402
from lca_blender.cli import main  # noqa: E402
from lca_blender.formats.lca import read_avatar  # noqa: E402
from lca_blender.render.cast import LABEL_HEIGHT, TILE_HEIGHT, TILE_WIDTH  # noqa: E402

HERE = Path(__file__).resolve().parent
EXAMPLE_PHOTOS = HERE.parents[1] / "examples" / "subject" / "photos"
EXIT_BAD_INPUT = 2
PEOPLE = ("ann", "ben", "cat", "dan")  # in name order with the broken ones: ann ben cat dan nobody unreadable


@pytest.fixture
def cast_folder(tmp_path: Path) -> Path:
    """Four people (two photos each, front and back, a different pair for each), one folder of
    photos without a person and one of files that are not readable photos."""
    root = tmp_path / "cast"
    photos = sorted(EXAMPLE_PHOTOS.glob("*.png"))
    for index, name in enumerate(PEOPLE):
        folder = root / name
        folder.mkdir(parents=True)
        for photo in (photos[index], photos[index + len(photos) // 2]):
            shutil.copyfile(photo, folder / photo.name)
    nobody = root / "nobody"
    nobody.mkdir()
    gradient = np.linspace(0, 255, 256 * 256 * 3).reshape(256, 256, 3).astype(np.uint8)
    Image.fromarray(gradient).save(nobody / "wall.png")
    Image.fromarray(gradient[::-1]).save(nobody / "floor.png")
    unreadable = root / "unreadable"
    unreadable.mkdir()
    (unreadable / "front.jpg").write_bytes(b"\xff\xd8\xff\xe0 these are not the bytes of a photo")
    (unreadable / "back.png").write_bytes((EXAMPLE_PHOTOS / "input_00.png").read_bytes()[:300])
    return root


def test_a_cast_of_six_with_two_broken_yields_four_avatars_a_report_and_a_contact_sheet(
    cast_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(ENGINE_COMMAND_VARIABLE, shlex.join([sys.executable, str(HERE / "quick_engine.py")]))
    output = tmp_path / "avatars"
    arguments = [
        "--progress", "none", "batch", str(cast_folder), "-o", str(output),
        "--quality", "preview", "--device", "cpu", "--cache", str(tmp_path / "cache"), "--jobs", "2",
    ]  # fmt: skip

    assert main(arguments) == EXIT_BAD_INPUT  # some subjects failed: the exit says so
    error = capsys.readouterr().err
    assert "2 of 6 subjects failed. nobody: " in error and " unreadable: " in error

    avatars = sorted(output.glob("*.lca"))
    assert [path.stem for path in avatars] == list(PEOPLE)
    for path in avatars:
        avatar = read_avatar(path)
        assert avatar.gaussian_count == 2_000 and avatar.rig.joint_count > 100

    report = read_report(output)
    assert report.state == "finished" and report.summary() == "4 built, 0 skipped, 2 failed"
    statuses = {record.name: record.status for record in report.subjects}
    assert statuses == {**dict.fromkeys(PEOPLE, "built"), "nobody": "failed", "unreadable": "failed"}
    nobody, unreadable = report.record("nobody"), report.record("unreadable")
    # The engine's own words, naming each photo and what is wrong with it.
    assert "wall.png: no person found" in nobody.reason and "floor.png: no person found" in nobody.reason
    assert "no usable photo" in unreadable.reason
    assert "front.jpg" in unreadable.reason and "back.png" in unreadable.reason
    assert all(record.seconds > 0 and "build" in record.command for record in report.subjects)
    raw = json.loads((output / REPORT_NAME).read_text())
    assert raw["counts"]["built"] == 4 and raw["jobs"] == 2 and raw["seconds"] > 0

    # The contact sheet: six tiles in a row, a person in each avatar's, nothing in the failed ones.
    assert report.cast == "cast.png"
    sheet = np.asarray(Image.open(output / "cast.png").convert("RGB")).astype(np.int32)
    assert sheet.shape == (TILE_HEIGHT + LABEL_HEIGHT, 6 * TILE_WIDTH, 3)
    background = sheet[0, 0]
    for index, name in enumerate(sorted(statuses)):
        picture = sheet[:TILE_HEIGHT, index * TILE_WIDTH : (index + 1) * TILE_WIDTH]
        covered = (np.abs(picture - background).sum(-1) > 30).mean()
        label = sheet[TILE_HEIGHT:, index * TILE_WIDTH : (index + 1) * TILE_WIDTH]
        assert (np.abs(label - background).sum(-1) > 30).any(), f"{name} has no name under it"
        if statuses[name] == "built":
            assert 0.05 < covered < 0.6, f"{name}: {covered:.2f} of the tile covered"
        else:
            assert covered == 0.0, name

    # A rerun builds nothing new: the four avatars are up to date, the two broken subjects fail again.
    written = {path.name: path.stat().st_mtime_ns for path in avatars}
    assert main(arguments) == EXIT_BAD_INPUT
    capsys.readouterr()
    rerun = read_report(output)
    assert rerun.summary() == "0 built, 4 skipped, 2 failed"
    assert all(rerun.record(name).reason == "up to date" for name in PEOPLE)
    assert {path.name: path.stat().st_mtime_ns for path in sorted(output.glob("*.lca"))} == written
    assert rerun.record("nobody").reason == nobody.reason
    assert (output / "cast.png").is_file()
