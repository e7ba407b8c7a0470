"""Ingest: photos, folders or a video in; checked, upright, size-capped linear-light images out.

Every input is decoded defensively. Only regular files in the formats cameras and phones write
(JPEG, PNG, TIFF, WebP, BMP; HEIC when pillow-heif is installed) are opened, from bytes read
with a cap; each photo's pixel count (and the build's total) is checked from its header before
any pixel is decoded, and JPEGs decode straight at a reduced scale near the preset's size. EXIF
orientation is applied, 16-bit, CMYK, palette, grey and alpha images become 8-bit-equivalent RGB
floats, and an alpha channel is kept as a hint of the person's mask. A file that cannot be read,
whatever the decoder raises on it, is reported by name and skipped; the build stops only when too
few usable photos remain. Colours go from sRGB to linear light, which is what fitting compares
against.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AvatarError
from ..formats.reading import open_regular_file
from ..maths.colour import srgb_to_linear
from ..progress import Progress

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"})
PHOTO_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP")  # Pillow's names; JPEG includes MPO
MAX_PIXELS = 100_000_000  # ~ a 12k x 8k photo, checked from the header before decoding
MAX_PHOTO_SIDE = 30_000  # wider than any camera's frame; a 100,000,000 x 1 "photo" is refused
MAX_BUILD_PIXELS = 10_000_000_000  # all the photos of one build together (100 of the largest)
MAX_PHOTO_BYTES = 1024**3  # a 100-megapixel 16-bit RGB TIFF is 600 MB
MAX_INPUT_FILES = 2000
JPEG_MAX_PIXELS_PER_BYTE = 512
"""A Huffman-coded JPEG (what cameras write) spends at least a bit on each 8 x 8 block, so a file
with fewer bytes than its pixels / 512 has lost most of its data (libjpeg fills it in silently)."""
MAX_VIDEO_FRAMES = 200

# EXIF orientation -> the Pillow transpose that shows the picture upright (as ImageOps.exif_transpose).
_UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
            7: "TRANSVERSE", 8: "ROTATE_90"}  # fmt: skip


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


@dataclass
class _PixelBudget:
    """The pixels a build may still decode, spent photo by photo from their headers."""

    left: int = field(default_factory=lambda: MAX_BUILD_PIXELS)

    def spend(self, pixels: int) -> str | None:
        """None when the photo fits (and is paid for), else why it is skipped."""
        if pixels > self.left:
            return (
                f"the photos before it already hold {(MAX_BUILD_PIXELS - self.left) / 1e6:,.0f} megapixels, "
                f"and one build reads at most {MAX_BUILD_PIXELS / 1e6:,.0f}; give fewer or smaller photos"
            )
        self.left -= pixels
        return None


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The files to read: folders are listed (images and videos, sorted by name), files kept."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise IngestError(f"'{path}' is a pipe, socket or device, not a file; give photo files.")
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
    budget = _PixelBudget()
    for index, path in enumerate(files):
        for source, loaded in _decode(path, max_side, budget):
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


def _decode(path: Path, max_side: int, budget: _PixelBudget) -> Iterable[tuple[str, Photo | str]]:
    """(source, Photo) for each image in the file, or (source, reason) when it cannot be used."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        yield from _decode_video(path, max_side)
        return
    yield path.name, _decode_image(path, max_side, budget)


@functools.cache
def _photo_formats() -> tuple[str, ...]:
    """PHOTO_FORMATS, and HEIF (iPhones' HEIC) when pillow-heif is installed."""
    try:
        import pillow_heif
    except ImportError:
        return PHOTO_FORMATS
    pillow_heif.register_heif_opener()
    return (*PHOTO_FORMATS, "HEIF")


def _format_names() -> str:
    return ", ".join("HEIC" if name == "HEIF" else name.replace("WEBP", "WebP") for name in _photo_formats())


def _refusal(image, file_bytes: int, budget: _PixelBudget) -> str | None:
    """Why an opened photo cannot be decoded, from its header alone, or None (its pixels are then
    taken from the build's budget)."""
    width, height = image.size
    if width * height > MAX_PIXELS or max(width, height) > MAX_PHOTO_SIDE:
        return (
            f"the image is {width} x {height} pixels, more than a photo needs (at most "
            f"{MAX_PIXELS / 1e6:.0f} megapixels and {MAX_PHOTO_SIDE} pixels a side); resize it"
        )
    if min(width, height) < 1:
        return "the image has no pixels"
    if image.format in ("JPEG", "MPO") and file_bytes * JPEG_MAX_PIXELS_PER_BYTE < width * height:
        return f"the file is far too small for the {width} x {height} pixels it declares: it is truncated"
    return budget.spend(width * height)


def _decode_image(path: Path, max_side: int, budget: _PixelBudget) -> Photo | str:
    from PIL import Image, UnidentifiedImageError

    try:
        with open_regular_file(path) as handle:
            if os.fstat(handle.fileno()).st_size > MAX_PHOTO_BYTES:
                return (
                    f"the file is over {MAX_PHOTO_BYTES >> 20} MB, more than a photo needs; save it as a JPEG"
                )
            # In memory, Pillow's reads past the end (a chunk length that lies) allocate nothing.
            data = handle.read(MAX_PHOTO_BYTES)
    except OSError as error:
        return f"the file cannot be read ({error.strerror or error})"
    except MemoryError:
        return "there is not enough memory to read it"
    # Pillow's own decompression-bomb limit backs up the checks below (it warns between 1x and 2x
    # its limit and refuses above; both mean too large).
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's notes on damaged metadata mean nothing to artists
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_photo_formats()) as image:
                problem = _refusal(image, len(data), budget)
                if problem:
                    return problem
                width, height = image.size
                # A JPEG decodes straight at 1/2, 1/4 or 1/8 scale, still at least max_side.
                image.draft(None, (max_side, max_side))
                image.load()
                image, turned = _upright(image)
                original_size = (height, width) if turned else (width, height)
                rgb, alpha = _pixels(image, max_side)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "the image declares more pixels than a photo needs; resize it"
    except UnidentifiedImageError:
        return f"not an image in a format LCA Avatars reads ({_format_names()})"
    except MemoryError:
        return "there is not enough memory to decode it; close other programs or resize it"
    except Exception as error:
        # Pillow's decoders meet damaged files with whatever their parsing raises (OSError,
        # SyntaxError, TypeError, struct.error, ...): for the artist all of it is a damaged photo.
        logger.debug("Pillow could not decode %s", path, exc_info=True)
        return f"the image is damaged or truncated ({error or type(error).__name__})"
    return _photo(path.name, rgb, alpha, original_size)


def _upright(image):
    """The image turned as its EXIF orientation says, and whether its sides swapped. Orientation
    that cannot be read (damaged EXIF around intact pixels) leaves the image as stored."""
    from PIL import ExifTags, Image

    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # the EXIF parser, like the decoders, raises anything on damaged data
        logger.warning("Ignoring the unreadable EXIF orientation of a photo", exc_info=True)
        return image, False
    method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    if method is None:
        return image, False
    return image.transpose(Image.Transpose[method]), orientation >= 5


def _pixels(image, max_side: int) -> tuple[np.ndarray, np.ndarray | None]:
    """[H, W, 3] float32 display-referred RGB in [0, 1] and [H, W] alpha (or None) of a loaded
    Pillow image of any mode, no larger than `max_side` (resized in Pillow, before any float
    copy of the full image exists)."""
    from PIL import Image

    width, height = image.size
    scale = min(1.0, max_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))

    def fitted(picture):
        # A proper low-pass (LANCZOS) in the image's own values, after a box reduction to within 3x
        # of the size (Pillow's reducing_gap), which makes large reductions fast at no visible cost.
        if picture.size == size:
            return picture
        return picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey (Pillow opens some 16-bit PNGs as 32-bit "I"): scale by the 16-bit range
        # unless the values need the 32-bit one.
        high = image.getextrema()[1]
        grey = np.asarray(fitted(image.convert("F")), dtype=np.float32)
        grey = np.clip(grey / (65535.0 if high <= 65535 else 2.0**32 - 1), 0, 1)
        return np.repeat(grey[..., None], 3, axis=2), None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        # Colour and coverage resized apart: Pillow would premultiply an RGBA resize.
        alpha = np.asarray(fitted(rgba.getchannel("A")), dtype=np.float32) / 255.0
        return np.asarray(fitted(rgba.convert("RGB")), dtype=np.float32) / 255.0, alpha
    # CMYK, YCbCr, palette, grey, 1-bit: Pillow's conversions to RGB.
    return np.asarray(fitted(image.convert("RGB")), dtype=np.float32) / 255.0, None


def _photo(source: str, rgb: np.ndarray, alpha: np.ndarray | None, original_size: tuple[int, int]) -> Photo:
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
                rgb, _ = _pixels(Image.fromarray(frame), max_side)
                yield source, _photo(source, rgb, None, (width, height))
    finally:
        reader.close()
