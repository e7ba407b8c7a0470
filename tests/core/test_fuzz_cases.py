"""Inputs that once broke the readers' promise (tests/data/fuzz_cases/) are refused with an
AvatarError that says what is wrong, or load correctly; so are pipes, devices, folders and bombs."""

from __future__ import annotations

import os
import signal
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fuzzing import honest_bomb, lca_seeds

from lca_blender.errors import AvatarError, AvatarFileError
from lca_blender.formats import lca, ply

CASES = Path(__file__).resolve().parents[1] / "data" / "fuzz_cases"

# What each regression input now gets, in the words of its refusal.
LCA_REFUSALS = {
    "LZMAError.lca": "compressed in a way LCA files never are",
    "loads_but_singular_rest_transforms.lca": "'rest_transforms' must be rigid bone frames",
    "manifest_huge_integer_ValueError.lca": "its manifest is not valid JSON",
    "npy_header_TypeError.lca": "has a damaged header",
    "special_bomb_lying_1GiB.lca": "'rig/expression_deltas' is truncated or has extra bytes",
    "zip_version_NotImplementedError.lca": "is not an LCA avatar (.lca) file, or it is damaged",
    "zlib_error.lca": "the entry 'arrays/rig/uvs.npy' is damaged",  # zlib's words, or 3.13's zipfile's
}
PHOTO_SKIPS = {
    "jpeg_claims_10000x10000_hang.bin": "far too small for the 10000 x 10000 pixels it declares",
    "memoryerror_2.bin": "the image is damaged or truncated",
    "png_100000000x1_MemoryError.bin": "the image is 100000000 x 1 pixels, more than a photo needs",
    "tiff_stripoffsets_TypeError.bin": "the image is damaged or truncated",
}


def test_every_case_is_covered():
    found = {path.name for path in CASES.glob("*/*") if path.name != "README.md"}
    covered = {
        *LCA_REFUSALS,
        *PHOTO_SKIPS,
        "huge_quaternions_load_as_zero.ply",
        "png_broken_exif_struct_error.bin",
    }
    assert found == covered


@pytest.mark.parametrize("name", sorted(LCA_REFUSALS))
def test_lca_cases_are_refused_with_what_is_wrong(name):
    path = CASES / "lca" / name
    with pytest.raises(AvatarFileError) as caught:
        lca.read_avatar(path)
    message = str(caught.value)
    assert name in message and LCA_REFUSALS[name] in message, message
    try:  # the rig alone reads, or is refused as well when the damage is in it
        lca.read_rig(path)
    except AvatarFileError as error:
        assert name in str(error)


def test_a_size_field_that_lies_allocates_nothing():
    """The entry claims 1 GiB and holds 83 compressed bytes: memory follows what is read."""
    tracemalloc.start()
    try:
        with pytest.raises(AvatarFileError):
            lca.read_avatar(CASES / "lca" / "special_bomb_lying_1GiB.lca")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024**2, peak


def test_an_honest_bomb_is_read_once_in_bounded_chunks(tmp_path):
    """Arrays that really inflate to 96 MiB cost about that once, not twice (read, then copied)."""
    inflated = 96 * 1024**2
    bomb = tmp_path / "bomb.lca"
    honest_bomb(bomb, lca_seeds(tmp_path / "seed")[0], inflated)
    assert bomb.stat().st_size < inflated // 100
    tracemalloc.start()
    try:
        with pytest.raises(AvatarFileError, match="skin_weights"):  # zeros: read, then refused
            lca.read_avatar(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * inflated, peak / inflated


def test_a_bomb_beyond_the_cap_is_refused_before_inflating(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.lca"
    honest_bomb(bomb, lca_seeds(tmp_path / "seed")[0], 64 * 1024**2)
    monkeypatch.setattr(lca, "MAX_INFLATED_BYTES", 16 * 1024**2)
    tracemalloc.start()
    try:
        with pytest.raises(AvatarFileError, match="larger than any avatar could be"):
            lca.read_avatar(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024**2, peak


def test_huge_double_quaternions_load_as_unit_quaternions():
    path = CASES / "ply" / "huge_quaternions_load_as_zero.ply"
    splats = ply.read_ply(path)
    data = path.read_bytes()
    header = data[: data.index(b"end_header\n") + len(b"end_header\n")].decode()
    assert f"element vertex {splats.count}" in header  # no splat was dropped
    norms = np.linalg.norm(splats.rotations, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-6)
    names = [line.split()[-1] for line in header.splitlines() if line.startswith("property")]
    types = [line.split()[1] for line in header.splitlines() if line.startswith("property")]
    row = [(name, "<f8" if kind == "double" else "<f4") for name, kind in zip(names, types, strict=True)]
    rows = np.frombuffer(data[len(header) :], row)
    stored = np.stack([rows[f"rot_{i}"] for i in range(4)], axis=1)
    assert np.abs(stored).max() >= 1e154  # the case still holds what broke the reader
    scaled = stored / np.abs(stored).max(axis=1, keepdims=True)
    expected = scaled / np.linalg.norm(scaled, axis=1, keepdims=True)
    np.testing.assert_allclose(splats.rotations, expected, atol=1e-6)


@pytest.fixture
def ingest_one() -> Callable[[Path], object]:
    pytest.importorskip("PIL")
    from lca_blender.reconstruct.ingest import ingest

    return lambda path: ingest([path])


@pytest.mark.parametrize("name", sorted(PHOTO_SKIPS))
def test_photo_cases_are_skipped_with_their_reason(name, ingest_one):
    path = CASES / "images" / name
    with pytest.raises(AvatarError) as caught:
        ingest_one(path)
    message = str(caught.value)
    assert f"Skipped {name}: " in message and PHOTO_SKIPS[name] in message, message


def test_intact_pixels_under_broken_exif_still_make_a_photo(ingest_one):
    (photo,) = ingest_one(CASES / "images" / "png_broken_exif_struct_error.bin").photos
    assert photo.pixels.shape[2] == 3 and np.isfinite(photo.pixels).all()


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail, rather than hang the suite, if a read blocks for 10 s (a pipe with no writer)."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        pytest.skip("needs SIGALRM in the main thread")

    def expire(signum, frame):
        raise TimeoutError("the reader blocked")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _not_regular_files(tmp_path: Path) -> list[tuple[str, Path]]:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    return [("pipe", fifo), ("device", Path("/dev/zero")), ("folder", folder)]


@pytest.mark.skipif(sys.platform == "win32", reason="named pipes and /dev/zero are POSIX")
@pytest.mark.parametrize("read", [lca.read_avatar, lca.read_rig, ply.read_ply], ids=lambda f: f.__name__)
def test_pipes_devices_and_folders_are_refused_without_waiting(read, tmp_path, deadline):
    for kind, path in _not_regular_files(tmp_path):
        with pytest.raises(AvatarFileError) as caught:
            read(path)
        wanted = "folder" if kind == "folder" else "not a regular file"
        assert wanted in str(caught.value), (kind, str(caught.value))


@pytest.mark.skipif(sys.platform == "win32", reason="named pipes and /dev/zero are POSIX")
def test_a_photo_that_is_a_pipe_is_refused_without_waiting(tmp_path, deadline):
    pytest.importorskip("PIL")
    from lca_blender.reconstruct.ingest import IngestError, _decode_image, _PixelBudget, ingest

    for kind, path in _not_regular_files(tmp_path)[:2]:
        with pytest.raises(IngestError, match="not a file"):
            ingest([path])
        # As a photo already listed (it became a pipe after the folder was read): skipped.
        assert "not a regular file" in _decode_image(path, 512, _PixelBudget()), kind


def test_photos_beyond_the_builds_pixel_budget_are_skipped(tmp_path, monkeypatch):
    Image = pytest.importorskip("PIL.Image")
    from lca_blender.reconstruct import ingest as ingest_module

    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (40, 30), "grey").save(tmp_path / name)
    monkeypatch.setattr(ingest_module, "MAX_BUILD_PIXELS", 2 * 40 * 30)
    result = ingest_module.ingest([tmp_path])
    assert [photo.source for photo in result.photos] == ["a.png", "b.png"]
    assert "give fewer or smaller photos" in result.skipped["c.png"]


def test_a_large_jpeg_decodes_at_a_reduced_scale_to_the_same_photo(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    from lca_blender.maths.colour import linear_to_srgb
    from lca_blender.reconstruct.ingest import ingest

    x = np.linspace(0, 1, 2400)[None, :, None]
    y = np.linspace(0, 1, 1800)[:, None, None]
    smooth = np.concatenate([x + 0 * y, y + 0 * x, 0.5 + 0.4 * np.sin(6 * x) * np.cos(5 * y)], axis=2)
    picture = Image.fromarray((smooth * 255).astype(np.uint8))
    picture.save(tmp_path / "large.jpg", quality=95)
    (photo,) = ingest([tmp_path / "large.jpg"], max_side=300).photos
    assert photo.pixels.shape == (225, 300, 3) and photo.original_size == (2400, 1800)
    reference = np.asarray(picture.resize((300, 225), Image.Resampling.LANCZOS), np.float32) / 255
    np.testing.assert_allclose(linear_to_srgb(photo.pixels), reference, atol=0.02)
