"""A batch's cast on one contact sheet: a front render of each avatar above its name.

Engine only (renders with torch, draws with Pillow). Each avatar's render is kept in the output
folder's `.thumbnails/` and drawn again only when the avatar is newer, so a rerun that builds
nothing redraws the sheet in seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..batch.report import BUILT, FAILED, SKIPPED, BatchReport
from ..errors import AvatarError
from ..formats.atomic import atomic_output

logger = logging.getLogger(__name__)

CAST_NAME = "cast.png"
THUMBNAILS = ".thumbnails"
TILE_WIDTH, TILE_HEIGHT = 192, 256  # a standing body fills a 3:4 portrait
LABEL_HEIGHT = 28
COLUMNS = 6
BACKGROUND = (0.15, 0.15, 0.15)
TEXT, FAILED_TEXT = (235, 235, 235), (255, 120, 110)


def front_render(avatar_path: Path, width: int = TILE_WIDTH, height: int = TILE_HEIGHT) -> np.ndarray:
    """[H, W, 3] uint8 sRGB: the avatar at rest seen from the front, captured look."""
    from ..formats.lca import read_avatar
    from ..maths.deform import pose_avatar
    from .pictures import framed_cameras, render_views

    avatar = read_avatar(avatar_path)
    splats = pose_avatar(avatar)
    cameras = framed_cameras(splats, [("front", 0.0)], width, height)
    image = render_views(avatar, splats, cameras, background=BACKGROUND)[0]
    return (np.clip(image[..., :3], 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def thumbnail(avatar_path: Path, folder: Path) -> np.ndarray:
    """The avatar's front render, from `folder` when it is newer than the avatar, else drawn and kept."""
    from PIL import Image

    kept = folder / f"{avatar_path.stem}.png"
    if kept.is_file() and kept.stat().st_mtime_ns >= avatar_path.stat().st_mtime_ns:
        with Image.open(kept) as image:
            if image.size == (TILE_WIDTH, TILE_HEIGHT):
                return np.asarray(image.convert("RGB"))
    pixels = front_render(avatar_path)
    folder.mkdir(exist_ok=True)
    with atomic_output(kept) as temporary:
        Image.fromarray(pixels).save(temporary, format="PNG")
    return pixels


def cast_sheet(report: BatchReport, folder: Path) -> str | None:
    """Draw `folder`/cast.png: every subject with an avatar (and each failed one, as an empty tile
    marked failed), in the report's order. Returns the sheet's file name; None when there is no
    subject to show. An avatar that cannot be drawn gets an empty tile and a logged reason."""
    from PIL import Image, ImageDraw, ImageFont

    shown = [record for record in report.subjects if record.status in (BUILT, SKIPPED, FAILED)]
    if not shown:
        return None
    columns = min(len(shown), COLUMNS)
    rows = -(-len(shown) // columns)
    step = TILE_HEIGHT + LABEL_HEIGHT
    background = tuple(round(value * 255) for value in BACKGROUND)
    sheet = Image.new("RGB", (columns * TILE_WIDTH, rows * step), background)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    for index, record in enumerate(shown):
        row, column = divmod(index, columns)
        left, top = column * TILE_WIDTH, row * step
        label, colour = record.name, TEXT
        if record.status == FAILED or record.avatar is None:
            label, colour = f"{record.name} (failed)", FAILED_TEXT
        else:
            try:
                picture = thumbnail(folder / record.avatar, folder / THUMBNAILS)
                sheet.paste(Image.fromarray(picture), (left, top))
            except AvatarError as error:
                logger.warning("No picture of %s on the contact sheet: %s", record.name, error)
                label, colour = f"{record.name} (unreadable)", FAILED_TEXT
        draw.text(
            (left + TILE_WIDTH / 2, top + TILE_HEIGHT + LABEL_HEIGHT / 2),
            _fit(draw, label, font, TILE_WIDTH - 8),
            fill=colour,
            font=font,
            anchor="mm",
        )
    with atomic_output(folder / CAST_NAME) as temporary:
        sheet.save(temporary, format="PNG")
    return CAST_NAME


def _fit(draw, text: str, font, width: int) -> str:
    """`text`, cut with an ellipsis where it is wider than `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
