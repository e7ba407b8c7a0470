"""Pictures of an avatar: framed cameras, the two looks, PNG stills, contact sheets and turntables.

Engine only (torch, through the renderer). The cameras (`maths/cameras.py`) follow the
renderer's OpenCV convention: a world-to-camera matrix, +Z forward, +Y down. Images are returned
in display space (sRGB): the "captured" look is already display-encoded (3DGS colours are), the
"relit" look is linear light from the shading model and is encoded here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..avatar import GaussianAvatar, Splats
from ..errors import AvatarError, AvatarWriteError
from ..formats.atomic import atomic_output
from ..maths.cameras import Camera, look_at, orbit_direction
from ..maths.colour import linear_to_srgb
from ..maths.lights import AmbientSH, Lighting, SunLight
from ..maths.sh import degree_of
from ..maths.shading import relight_splats, skin_normals
from ..progress import Progress
from .rendering import render

LOOKS = ("captured", "relit")
NAMED_VIEWS = {"front": 0.0, "side": 90.0, "back": 180.0}  # azimuth in degrees; 90 = from +X
MAX_IMAGE_SIDE = 8192


def studio_lighting() -> Lighting:
    """The default for the relit look: a warm key from the front left, a cool rim from behind."""
    return Lighting(
        ambient=AmbientSH.uniform((1.0, 1.0, 1.0), 0.25),
        lights=(
            SunLight(direction=(0.45, 0.8, -0.55), color=(1.0, 0.86, 0.72), strength_w_m2=3.2),
            SunLight(direction=(-0.5, -0.85, -0.2), color=(0.62, 0.76, 1.0), strength_w_m2=2.4),
        ),
    )


def view_azimuths(spec: str) -> list[tuple[str, float]]:
    """Named azimuths from a camera spec: front, side, back, orbit:N, or a comma list of them."""
    views: list[tuple[str, float]] = []
    for part in spec.split(","):
        part = part.strip()
        if part in NAMED_VIEWS:
            views.append((part, NAMED_VIEWS[part]))
        elif part.startswith("orbit:"):
            count_text = part.partition(":")[2]
            if not count_text.isdigit() or not 1 <= int(count_text) <= 360:
                raise AvatarError(f"'{part}': orbit needs a number of views from 1 to 360, e.g. orbit:8.")
            count = int(count_text)
            views += [(f"orbit{index:03d}", 360.0 * index / count) for index in range(count)]
        else:
            raise AvatarError(
                f"Unknown camera '{part}'. Use front, side, back or orbit:N (several with commas)."
            )
    return views


def framed_cameras(
    splats: Splats,
    views: Sequence[tuple[str, float]],
    width: int,
    height: int,
    fov_deg: float = 30.0,
    elevation_deg: float = 5.0,
) -> list[Camera]:
    """Cameras round the body's vertical axis that frame the whole body with a margin.

    Azimuth 0 looks at the face (from -Y), 90 from the body's left (+X), 180 from behind.
    """
    for side in (width, height):
        if not 16 <= side <= MAX_IMAGE_SIDE:
            raise AvatarError(f"Image sizes must be between 16 and {MAX_IMAGE_SIDE} pixels, got {side}.")
    low, high = splats.means.min(0).astype(np.float64), splats.means.max(0).astype(np.float64)
    centre = 0.5 * (low + high)
    half_extent = 0.5 * (high - low)
    vertical_fov = math.radians(fov_deg)
    focal = 0.5 * height / math.tan(vertical_fov / 2)
    horizontal_fov = 2 * math.atan(0.5 * width / focal)
    # Far enough that the tall extent fits the vertical field and the wide one the horizontal.
    radius = float(np.linalg.norm(half_extent[:2]))
    distance = (
        1.1 * max(half_extent[2] / math.tan(vertical_fov / 2), radius / math.tan(horizontal_fov / 2)) + radius
    )
    intrinsics = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    cameras = []
    for name, azimuth in views:
        angle, elevation = math.radians(azimuth), math.radians(elevation_deg)
        position = centre + distance * orbit_direction(angle, elevation)
        cameras.append(Camera(name, position, look_at(position, centre), intrinsics, width, height))
    return cameras


def render_views(
    avatar: GaussianAvatar,
    splats: Splats,
    cameras: Sequence[Camera],
    look: str = "captured",
    lighting: Lighting | None = None,
    background: Sequence[float] = (0.15, 0.15, 0.15),
    backend: str = "auto",
    progress: Progress | None = None,
) -> np.ndarray:
    """[C, H, W, 4] float display-space RGBA images of posed Gaussians, one per camera.

    RGB has the background composited; A is the coverage, for compositing elsewhere.
    """
    if look not in LOOKS:
        raise AvatarError(f"Unknown look '{look}'. Use one of: {', '.join(LOOKS)}.")
    progress = progress or Progress()
    lighting = lighting or studio_lighting()
    device = "cuda" if torch.cuda.is_available() and backend != "torch" else "cpu"

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=device)

    means, quats, scales, opacities = (
        tensor(splats.means),
        tensor(splats.rotations),
        tensor(splats.scales),
        tensor(splats.opacities),
    )
    normals = skin_normals(avatar, splats) if look == "relit" else None  # the same for every view
    images = []
    for index, camera in enumerate(cameras):
        if look == "captured":
            appearance, sh_degree = tensor(splats.sh), degree_of(splats.sh.shape[1])
        else:
            # Relight in linear light, encode for display: the SH path is display-encoded already.
            linear = relight_splats(avatar, splats, lighting, camera.position, normals)
            appearance, sh_degree = tensor(linear_to_srgb(np.clip(linear, 0.0, 1.0))), None
        with torch.no_grad():
            result = render(
                means,
                quats,
                scales,
                opacities,
                appearance,
                tensor(camera.viewmat)[None],
                tensor(camera.intrinsics)[None],
                camera.width,
                camera.height,
                sh_degree=sh_degree,
                background=tensor(np.asarray(background)),
                backend=backend,
                antialiased=splats.antialiased,
            )
        rgba = torch.cat([result.color[0].clamp(0, 1), result.alpha[0].clamp(0, 1)], dim=-1)
        images.append(rgba.cpu().numpy())
        progress.update((index + 1) / len(cameras), f"{camera.name} ({look})")
    return np.stack(images)


def contact_sheet(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """[H', W', 4] the images [C, H, W, 4] tiled left to right, top to bottom."""
    count, height, width, channels = images.shape
    columns = columns or min(count, 6)
    rows = math.ceil(count / columns)
    sheet = np.zeros((rows * height, columns * width, channels), images.dtype)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        sheet[row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    return sheet


def _to_bytes(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def save_png(path: str | os.PathLike, image: np.ndarray, transparent: bool = False) -> None:
    """Write a [H, W, 4] display-space image as PNG (RGBA when `transparent`), atomically."""
    from PIL import Image

    pixels = _to_bytes(image if transparent else image[..., :3])
    with atomic_output(path) as temporary:
        Image.fromarray(pixels).save(temporary, format="PNG")


def save_animation(path: str | os.PathLike, frames: np.ndarray, fps: int = 24) -> None:
    """Write frames [T, H, W, 4] as an animated .gif or .webp (Pillow), or .mp4 (imageio-ffmpeg)."""
    suffix = Path(path).suffix.lower()
    pixels = _to_bytes(frames[..., :3])
    if suffix in (".gif", ".webp"):
        from PIL import Image

        pictures = [Image.fromarray(frame) for frame in pixels]
        with atomic_output(path) as temporary:
            pictures[0].save(
                temporary,
                format=suffix[1:].upper(),
                save_all=True,
                append_images=pictures[1:],
                duration=round(1000 / fps),
                loop=0,
            )
        return
    if suffix == ".mp4":
        try:
            import imageio.v3 as imageio
        except ImportError:
            raise AvatarWriteError(
                "Writing .mp4 needs the 'imageio[ffmpeg]' package in the engine's environment; "
                "write a .gif or .webp instead."
            ) from None
        with atomic_output(path) as temporary:
            imageio.imwrite(temporary, pixels, extension=".mp4", fps=fps, codec="libx264", macro_block_size=1)
        return
    raise AvatarWriteError(f"Cannot write '{Path(path).name}': turntables are .gif, .webp or .mp4.")
