"""Animation previews: an avatar playing an animation clip, rendered frame by frame to .mp4 or PNGs.

Engine only (torch, through the renderer). The camera stays still, framed on everything the body
covers over the whole clip, so root motion is seen as motion. Frames are posed and rendered one
at a time and streamed to the video encoder, so a long clip needs no more memory than one frame.
The output appears whole or not at all: a video through `atomic_output`, a folder of frames
renamed into place when every frame is written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..avatar import GaussianAvatar, Splats
from ..errors import AvatarError, AvatarWriteError
from ..formats.animation import AnimationClip
from ..formats.atomic import atomic_output
from ..maths.cameras import Camera
from ..maths.deform import bind, pose_avatar, pose_vertices
from ..maths.lights import Lighting
from ..progress import Progress
from .pictures import NAMED_VIEWS, framed_cameras, render_views, save_png

VIDEO_SUFFIXES = (".mp4",)


def output_kind(path: Path) -> str:
    """ "video" for an .mp4, "frames" for a folder (no suffix, or an existing folder)."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    if path.is_dir() or not path.suffix:
        return "frames"
    raise AvatarError(
        f"An animation is written as .mp4 or as a folder of PNG frames; got '{path.name}'. "
        "Give a name ending in .mp4, or a folder."
    )


def check_output(path: Path) -> str:
    """The output's kind, after checking it can be written (before any work is done)."""
    kind = output_kind(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise AvatarError(f"Cannot write '{path}': the folder '{folder}' does not exist.")
    if kind == "frames" and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise AvatarError(f"'{path}' already holds files; give a new or empty folder for the frames.")
    return kind


def clip_camera(avatar: GaussianAvatar, clip: AnimationClip, view: str, width: int, height: int) -> Camera:
    """A still camera from a named view (front, side, back) framing the body over the whole clip."""
    if view not in NAMED_VIEWS:
        raise AvatarError(f"Unknown camera '{view}'. Use one of: {', '.join(NAMED_VIEWS)}.")
    rig = avatar.rig
    low = np.full(3, np.inf)
    high = np.full(3, -np.inf)
    for frame in range(clip.frame_count):
        vertices = pose_vertices(rig, clip.pose(frame), clip.expression_weights[frame])
        low, high = np.minimum(low, vertices.min(0)), np.maximum(high, vertices.max(0))
    # Splats loose around the body reach a little beyond the mesh.
    margin = 0.03 * (high - low).max()
    corners = np.stack([low - margin, high + margin]).astype(np.float32)
    bounds = Splats(
        means=corners,
        rotations=np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (2, 1)),
        scales=np.full((2, 3), 1e-3, np.float32),
        opacities=np.ones(2, np.float32),
        sh=np.zeros((2, 1, 3), np.float32),
    )
    return framed_cameras(bounds, [(view, NAMED_VIEWS[view])], width, height)[0]


def render_animation(
    avatar: GaussianAvatar,
    clip: AnimationClip,
    output: str | os.PathLike,
    view: str = "front",
    size: tuple[int, int] = (512, 512),
    look: str = "captured",
    lighting: Lighting | None = None,
    background: Sequence[float] = (0.15, 0.15, 0.15),
    backend: str = "auto",
    progress: Progress | None = None,
) -> int:
    """Render `clip` on `avatar` into `output` (.mp4 at the clip's frame rate, or a folder of
    frame_0000.png, ...); returns the frames written. A cancel leaves nothing behind."""
    progress = progress or Progress()
    path = Path(output)
    kind = check_output(path)
    clip.check_rig(avatar.rig)
    width, height = size
    if kind == "video":  # H.264 in yuv420p wants even sides
        width, height = width + width % 2, height + height % 2
    camera = clip_camera(avatar, clip, view, width, height)
    binding = bind(avatar)
    progress.stage("render", f"Rendering {clip.frame_count} frames ({look} look)")

    def frames():
        for index in range(clip.frame_count):
            splats = pose_avatar(avatar, clip.pose(index), clip.expression_weights[index], binding)
            image = render_views(avatar, splats, [camera], look, lighting, background, backend)[0]
            yield image
            progress.update((index + 1) / clip.frame_count, f"frame {index + 1} of {clip.frame_count}")

    if kind == "video":
        _write_video(path, frames(), (width, height), clip.frame_rate)
    else:
        _write_frames(path, frames())
    progress.done(f"Wrote {path}")
    return clip.frame_count


def _write_video(path: Path, images, size: tuple[int, int], frame_rate: float) -> None:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise AvatarWriteError(
            "Writing .mp4 needs the 'imageio[ffmpeg]' package in the engine's environment; "
            "write the frames to a folder instead."
        ) from None
    with atomic_output(path) as temporary:
        writer = imageio_ffmpeg.write_frames(
            str(temporary),
            size,
            fps=frame_rate,
            codec="libx264",
            macro_block_size=1,
            ffmpeg_log_level="error",
        )
        writer.send(None)  # starts ffmpeg
        try:
            for image in images:
                pixels = (np.clip(image[..., :3], 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
                writer.send(np.ascontiguousarray(pixels))
        finally:
            writer.close()


def _write_frames(path: Path, images) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=parent))
    except OSError as error:
        raise AvatarWriteError(f"Cannot write into '{parent}': {error.strerror}.") from None
    try:
        for index, image in enumerate(images):
            save_png(staging / f"frame_{index:04d}.png", image)
        os.chmod(staging, 0o777 & ~_umask())
        os.replace(staging, path)  # onto an empty folder, or a new name
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise AvatarWriteError(f"Cannot write the frames to '{path}': {error.strerror or error}.") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
