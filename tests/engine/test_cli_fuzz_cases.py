"""`lca-avatar` on the inputs that once broke the readers (tests/data/fuzz_cases/): a message that
names the file and says what is wrong, exit code 2, no traceback; as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXIT_BAD_INPUT = 2
CASES = Path(__file__).resolve().parents[1] / "data" / "fuzz_cases"
REFUSED_AVATARS = sorted((CASES / "lca").glob("*.lca"))
# Photos ingest skips, each with its reason; png_broken_exif_struct_error.bin decodes (its pixels
# are intact) and is checked in tests/core/test_fuzz_cases.py.
SKIPPED_PHOTOS = sorted(path for path in (CASES / "images").glob("*.bin") if "broken_exif" not in path.name)


def _cli(folder: Path, *args: object) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HOME": str(folder), "XDG_CACHE_HOME": str(folder / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "lca_blender.cli", "--progress", "none", *map(str, args)],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_refused(result: subprocess.CompletedProcess, *names: str) -> None:
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("lca-avatar: error: ")  # after logged warnings
    for name in names:
        assert name in result.stderr, (name, result.stderr)


@pytest.mark.parametrize("path", REFUSED_AVATARS, ids=lambda path: path.name)
def test_info_refuses_each_broken_avatar(path: Path, tmp_path: Path):
    result = _cli(tmp_path, "info", path)
    _assert_refused(result, path.name)
    assert "Re-export" in result.stderr or "re-export" in result.stderr  # what to do about it


def test_info_reads_the_huge_quaternion_splats(tmp_path: Path):
    result = _cli(tmp_path, "info", CASES / "ply" / "huge_quaternions_load_as_zero.ply", "--json")
    assert result.returncode == 0, result.stderr
    assert '"splats": 5000' in result.stdout


def test_build_names_each_unusable_photo_and_why(tmp_path: Path):
    pytest.importorskip("torch")
    pytest.importorskip("PIL")
    output = tmp_path / "avatar.lca"
    result = _cli(tmp_path, "build", *SKIPPED_PHOTOS, "-o", output, "--stop-after", "ingest", "--no-cache")
    _assert_refused(result, "no usable photo", *(path.name for path in SKIPPED_PHOTOS))
    assert "far too small for the 10000 x 10000 pixels" in result.stderr
    assert "100000000 x 1 pixels, more than a photo needs" in result.stderr
    assert not output.exists()
