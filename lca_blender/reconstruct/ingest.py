"""Ingest: photos, folders or a video in; checked, upright, size-capped linear-light images out.

Every input is decoded defensively: Pillow's decompression-bomb limit applies before any pixel
is decoded, EXIF orientation is applied, 16-bit, CMYK, palette, grey and alpha images become
8-bit-equivalent RGB floats, and an alpha channel is kept as a hint of the person's mask. A file
that cannot be read is reported by name and skipped; the build stops only when too few usable
photos remain. Colours go from sRGB to linear light, which is what fitting compares against.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AvatarError
from ..maths.colour import srgb_to_linear
from ..progress import Progress

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"})
MAX_PIXELS = 100_000_000  # ~ a 12k x 8k photo; Pillow refuses larger images before decoding them
MAX_INPUT_FILES = 2000
MAX_VIDEO_FRAMES = 200


class IngestError(AvatarError):
    """The inputs hold too few usable photos (the message lists what was wrong with each)."""


@dataclass(frozen=True)
class Photo:
    """One usable input image."""

    source: str  # file name, or "video.mp4#frame 12"
    pixels: np.ndarray  # [H, W, 3] float32 linear light in [0, 1]
    alpha: np.ndarray | None  # [H, W] float32 coverage from the file's alpha channel, if any
    original_size: tuple[int, int]  # (width, height) before resizing


@dataclass
class IngestResult:
    """The usable photos and, for every input that was skipped, why."""

    photos: list[Photo] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # source -> reason


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The files to read: folders are listed (images and videos, sorted by name), files kept."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise IngestError(f"'{path}' does not exist. Give a folder of photos, image files or a video.")
    if not files:
        raise IngestError("No files found in the inputs. Give a folder of photos, image files or a video.")
    if len(files) > MAX_INPUT_FILES:
        raise IngestError(
            f"{len(files)} files are more than the {MAX_INPUT_FILES} a build reads; pick fewer."
        )
    return files


def ingest(
    inputs: Sequence[str | os.PathLike],
    max_side: int = 512,
    min_photos: int = 1,
    progress: Progress | None = None,
) -> IngestResult:
    """Decode every input into linear-light photos no larger than `max_side` pixels.

    Raises IngestError when fewer than `min_photos` are usable, naming each skipped file and why.
    """
    progress = progress or Progress()
    files = collect_inputs(inputs)
    result = IngestResult()
    for index, path in enumerate(files):
        for source, loaded in _decode(path, max_side):
            if isinstance(loaded, str):
                result.skipped[source] = loaded
                logger.warning("Skipping %s: %s", source, loaded)
            else:
                result.photos.append(loaded)
        progress.update((index + 1) / len(files), path.name)
    if len(result.photos) < min_photos:
        reasons = "; ".join(f"{source}: {reason}" for source, reason in result.skipped.items())
        found = f"{len(result.photos)} usable photo(s)" if result.photos else "no usable photo"
        raise IngestError(
            f"Found {found}, {min_photos} needed. " + (f"Skipped {reasons}." if reasons else "")
        )
    return result


def _decode(path: Path, max_side: int) -> Iterable[tuple[str, Photo | str]]:
    """(source, Photo) for each image in the file, or (source, reason) when it cannot be used."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        yield from _decode_video(path, max_side)
        return
    yield path.name, _decode_image(path, max_side)


def _decode_image(path: Path, max_side: int) -> Photo | str:
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x its limit and refuses above; treat both as too large.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    return f"the image is {width} x {height} pixels, more than a photo needs; resize it"
                image = ImageOps.exif_transpose(image)
                return _photo_from_image(path.name, image, max_side)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "the image declares more pixels than a photo needs; resize it"
    except UnidentifiedImageError:
        return "not an image Pillow can read (JPEG, PNG, TIFF, WebP, BMP)"
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        return f"the image is damaged or truncated ({error})"


def _photo_from_image(source: str, image, max_side: int) -> Photo:
    """A Photo from an opened Pillow image of any mode."""
    original_size = image.size
    alpha = None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey (Pillow opens some 16-bit PNGs as 32-bit "I"): scale by the 16-bit range
        # unless the values need the 32-bit one.
        grey = np.asarray(image, dtype=np.float64)
        grey = grey / (65535.0 if grey.max(initial=0) <= 65535 else 2.0**32 - 1)
        rgb = np.repeat(np.clip(grey, 0, 1).astype(np.float32)[..., None], 3, axis=2)
        return _finish(source, rgb, None, original_size, max_side)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba, dtype=np.float32)[..., 3] / 255.0
        rgb = np.asarray(rgba.convert("RGB"), dtype=np.float32) / 255.0
    else:
        # CMYK, YCbCr, palette, grey, 1-bit: Pillow's conversions to RGB.
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return _finish(source, rgb, alpha, original_size, max_side)


def _finish(
    source: str, rgb: np.ndarray, alpha: np.ndarray | None, original_size: tuple[int, int], max_side: int
) -> Photo:
    from PIL import Image

    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(width, height))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # Resize in 8-bit display space with a proper low-pass (LANCZOS), then linearise.
        rgb_image = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))
        rgb = np.asarray(rgb_image.resize(size, Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
        if alpha is not None:
            alpha_image = Image.fromarray((alpha * 255 + 0.5).astype(np.uint8))
            alpha = np.asarray(alpha_image.resize(size, Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
    linear = srgb_to_linear(rgb).astype(np.float32)
    return Photo(source=source, pixels=linear, alpha=alpha, original_size=original_size)


def _decode_video(path: Path, max_side: int) -> Iterable[tuple[str, Photo | str]]:
    """Evenly spaced frames of a video, decoded by the ffmpeg that imageio-ffmpeg bundles."""
    try:
        import imageio_ffmpeg
    except ImportError:
        yield path.name, "reading videos needs the 'imageio[ffmpeg]' package in the engine's environment"
        return
    from PIL import Image

    try:
        frame_count, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
        reader = imageio_ffmpeg.read_frames(str(path))
        width, height = next(reader)["size"]
    except (RuntimeError, OSError, StopIteration, KeyError) as error:
        yield path.name, f"not a video that can be decoded ({error})"
        return
    if frame_count <= 0:
        yield path.name, "the video has no frames"
        return
    wanted = set(
        np.linspace(0, frame_count - 1, min(MAX_VIDEO_FRAMES, frame_count)).round().astype(int).tolist()
    )
    try:
        for index, raw in enumerate(reader):
            if index in wanted:
                frame = np.frombuffer(raw, np.uint8).reshape(height, width, 3)
                source = f"{path.name}#frame {index}"
                yield source, _photo_from_image(source, Image.fromarray(frame), max_side)
    finally:
        reader.close()
