"""Ingest: every kind of photo decodes upright and linear; bad inputs are named and skipped."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from lca_blender.maths.colour import linear_to_srgb, srgb_to_linear
from lca_blender.reconstruct import ingest as ingest_module
from lca_blender.reconstruct.ingest import IngestError, ingest

# Pillow is the engine's; Blender's Python (where the numpy-only core tests also run) has none.
Image = pytest.importorskip("PIL.Image")


def save(image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def gradient(width: int = 64, height: int = 48):
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 128)], axis=2))


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height pixels, with no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_every_photo_kind_decodes_to_linear_rgb(tmp_path):
    base = gradient()
    save(base, tmp_path / "a_rgb.jpg", quality=95)
    save(base.convert("L"), tmp_path / "b_grey.png")
    save(base.convert("CMYK"), tmp_path / "c_cmyk.jpg")
    save(base.convert("P"), tmp_path / "d_palette.png")
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))))
    save(rgba, tmp_path / "e_alpha.png")
    sixteen = (np.asarray(base.convert("L"), np.uint16) * 257).astype(np.uint16)
    save(Image.fromarray(sixteen), tmp_path / "f_16bit.png")

    result = ingest([tmp_path], max_side=512)
    assert result.skipped == {}
    assert [photo.source for photo in result.photos] == sorted(p.name for p in tmp_path.iterdir())
    expected = srgb_to_linear(np.asarray(base, np.float32) / 255.0)
    for photo in result.photos:
        assert photo.pixels.shape == (48, 64, 3) and photo.pixels.dtype == np.float32
        assert 0.0 <= photo.pixels.min() and photo.pixels.max() <= 1.0
    np.testing.assert_allclose(result.photos[0].pixels, expected, atol=0.03)  # JPEG loss
    grey = srgb_to_linear(np.asarray(base.convert("L"), np.float32) / 255.0)
    np.testing.assert_allclose(result.photos[1].pixels[..., 0], grey, atol=1e-6)
    np.testing.assert_allclose(result.photos[5].pixels[..., 0], grey, atol=1e-5)  # 16-bit
    alpha = result.photos[4].alpha
    assert alpha is not None and alpha[:, 0].max() < 0.01 and alpha[:, -1].min() > 0.99


# Where EXIF orientation 1-8 shows the stored pixel (row, column) of an image `height` x `width`,
# from the standard's words "the 0th row is the visual <side>, the 0th column is the visual <side>".
def displayed_position(orientation: int, row: int, column: int, height: int, width: int) -> tuple[int, int]:
    return {
        1: (row, column),  # top, left
        2: (row, width - 1 - column),  # top, right
        3: (height - 1 - row, width - 1 - column),  # bottom, right
        4: (height - 1 - row, column),  # bottom, left
        5: (column, row),  # left, top
        6: (column, height - 1 - row),  # right, top
        7: (width - 1 - column, height - 1 - row),  # right, bottom
        8: (width - 1 - column, row),  # left, bottom
    }[orientation]


def displayed(stored: np.ndarray, orientation: int) -> np.ndarray:
    """The picture a viewer that honours EXIF shows for `stored` [H, W, ...], pixel by pixel."""
    height, width = stored.shape[:2]
    shape = (height, width) if orientation <= 4 else (width, height)
    shown = np.zeros(shape + stored.shape[2:], stored.dtype)
    for row in range(height):
        for column in range(width):
            shown[displayed_position(orientation, row, column, height, width)] = stored[row, column]
    return shown


def with_orientation(pixels: np.ndarray, orientation: int, path: Path, **options) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(Image.fromarray(pixels), path, exif=exif.tobytes(), **options)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_puts_every_pixel_where_it_is_shown(tmp_path, orientation):
    # Every pixel different (no symmetry can hide a wrong turn or mirror), losslessly stored.
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    stored[..., 0] = rng.permutation(256)[:35].reshape(5, 7)
    (photo,) = ingest([with_orientation(stored, orientation, tmp_path / "photo.png")]).photos
    expected = srgb_to_linear(displayed(stored, orientation).astype(np.float32) / 255.0)
    assert photo.pixels.shape == expected.shape
    np.testing.assert_allclose(photo.pixels, expected, rtol=0, atol=1e-7)  # float32 rounding only
    assert photo.original_size == expected.shape[1::-1]  # (width, height), upright


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_of_a_jpeg(tmp_path, orientation):
    # A 3 x 2 grid of 16-pixel blocks of clearly different colours; JPEG's loss stays inside a block.
    colours = np.array(
        [[[230, 30, 30], [30, 200, 30], [30, 30, 230]], [[220, 220, 40], [40, 210, 210], [200, 40, 200]]]
    )
    stored = np.kron(colours, np.ones((16, 16, 1))).astype(np.uint8)
    path = with_orientation(stored, orientation, tmp_path / "photo.jpg", quality=95, subsampling=0)
    (photo,) = ingest([path]).photos
    shown_grid = displayed(colours, orientation)
    assert photo.pixels.shape == (16 * shown_grid.shape[0], 16 * shown_grid.shape[1], 3)
    display = linear_to_srgb(photo.pixels) * 255
    for row, column in np.ndindex(shown_grid.shape[:2]):
        block = display[16 * row + 4 : 16 * row + 12, 16 * column + 4 : 16 * column + 12]
        # JPEG at quality 95 without chroma subsampling moves a flat block's centre by <= 1 level.
        np.testing.assert_allclose(block.mean((0, 1)), shown_grid[row, column], atol=4)


def test_large_photos_are_resized_to_the_preset(tmp_path):
    save(gradient(1600, 1200), tmp_path / "big.png")
    (photo,) = ingest([tmp_path], max_side=400).photos
    assert photo.pixels.shape == (300, 400, 3) and photo.original_size == (1600, 1200)


def test_corrupt_photo_among_good_ones_is_named_and_skipped(tmp_path):
    save(gradient(), tmp_path / "good1.jpg")
    save(gradient(), tmp_path / "good2.jpg")
    data = (tmp_path / "good1.jpg").read_bytes()
    (tmp_path / "broken.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "notes.txt").write_text("not a photo")
    result = ingest([tmp_path], min_photos=2)
    assert [photo.source for photo in result.photos] == ["good1.jpg", "good2.jpg"]
    assert set(result.skipped) == {"broken.jpg", "notes.txt"}
    assert "damaged" in result.skipped["broken.jpg"] and "not an image" in result.skipped["notes.txt"]


def test_too_few_usable_photos_is_an_error_naming_each_file(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(IngestError) as caught:
        ingest([tmp_path])
    message = str(caught.value)
    assert "no usable photo" in message and "a.txt" in message and "b.jpg" in message


def test_empty_folder_and_missing_path(tmp_path):
    with pytest.raises(IngestError, match="No files found"):
        ingest([tmp_path])
    with pytest.raises(IngestError, match="does not exist"):
        ingest([tmp_path / "missing"])


def test_a_20000_pixel_square_header_is_refused_before_decoding(tmp_path):
    png_header_only(tmp_path / "huge.png", 20_000, 20_000)
    save(gradient(), tmp_path / "ok.png")
    result = ingest([tmp_path])
    assert [photo.source for photo in result.photos] == ["ok.png"]
    assert "resize" in result.skipped["huge.png"]


def test_video_frames_are_sampled_evenly(tmp_path, monkeypatch):
    imageio = pytest.importorskip("imageio.v3")
    pytest.importorskip("imageio_ffmpeg")
    frames = np.zeros((12, 32, 32, 3), np.uint8)
    frames[:, :, :, 0] = (np.arange(12) * 20)[:, None, None]  # red rises frame by frame
    video = tmp_path / "turn.mp4"
    imageio.imwrite(video, frames, fps=12, codec="libx264", quality=10, macro_block_size=1)
    monkeypatch.setattr(ingest_module, "MAX_VIDEO_FRAMES", 4)
    result = ingest([video])
    assert [photo.source for photo in result.photos] == [f"turn.mp4#frame {i}" for i in (0, 4, 7, 11)]
    reds = [photo.pixels[..., 0].mean() for photo in result.photos]
    assert reds == sorted(reds) and reds[-1] > reds[0] + 0.3


def test_unreadable_video_is_skipped(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    save(gradient(), tmp_path / "ok.png")
    result = ingest([tmp_path])
    assert "broken.mp4" in result.skipped and len(result.photos) == 1
