"""`render()`: Gaussians and cameras in, colour, alpha, depth and normal images out, differentiable."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..errors import AvatarError
from .dense import rasterize_dense
from .gsplat_backend import gsplat_available, rasterize_gsplat
from .projection import gaussian_features, project_gaussians
from .tiles import rasterize_tiles

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "gsplat")
_logged_choices: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class RenderResult:
    """Images of C cameras; every tensor is differentiable with respect to the Gaussians."""

    color: torch.Tensor  # [C, H, W, D] blended colours, background composited (D = 3 for SH)
    alpha: torch.Tensor  # [C, H, W, 1] accumulated opacity, sum_i w_i
    depth: torch.Tensor  # [C, H, W, 1] expected camera z: sum_i w_i z_i / alpha (0 where alpha = 0)
    normal: torch.Tensor  # [C, H, W, 3] alpha-blended world-space normals (not renormalised)
    backend: str  # "torch", "gsplat" or "dense"


def render(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4]
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    colors_or_sh: torch.Tensor,  # [N, D] or [C, N, D] colours; [N, B, 3] SH when sh_degree is set
    viewmats: torch.Tensor,  # [C, 4, 4]
    Ks: torch.Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    background: torch.Tensor | None = None,  # [D] or [C, D]
    backend: str = "auto",
    near: float = 0.01,
    far: float = 100.0,
    antialiased: bool = False,
) -> RenderResult:
    """Render 3D Gaussians into C pinhole cameras, front to back, differentiably (like gsplat's
    `rasterization`).

    Gaussians: `means` in world units; `quats` rotations (w, x, y, z), normalised here; `scales`
    linear standard deviations along the rotated axes; `opacities` in [0, 1]. Appearance: with
    `sh_degree` None, `colors_or_sh` holds D channels per Gaussian (any D), shared by the cameras or
    per camera; with `sh_degree` in 0..3 it holds 3DGS spherical harmonics [N, B, 3],
    B >= (sh_degree+1)^2, evaluated along the ray from each camera centre to each Gaussian
    (colour = max(0.5 + SH, 0); see `sh.py`).

    Cameras (OpenCV / gsplat convention): `viewmats` are world-to-camera 4x4 matrices; the camera
    looks down +Z with x right and y down; `Ks` are pixel intrinsics [[fx, 0, cx], [0, fy, cy],
    [0, 0, 1]]; pixel (i, j) (row, column) has its centre at (j + 0.5, i + 0.5). Gaussians with
    camera z outside (near, far) are dropped.

    Per pixel, Gaussians are blended front to back by camera depth with weights w_i = alpha_i T_i,
    alpha_i = min(0.99, o_i exp(-d_i^2 / 2)) (d_i the Mahalanobis distance under the EWA-projected
    covariance plus 0.3 px^2; contributions under 1/255 skipped), T_i = prod_{j<i} (1 - alpha_j),
    stopping before T falls under 1e-4 (3DGS's rules; see `projection.py`). With `antialiased`,
    o_i is scaled by sqrt(det Sigma / det(Sigma + 0.3 I)) per camera (Mip-Splatting's 2D filter,
    gsplat's "antialiased" mode; `maths/projection.py` says why). `background` is
    composited as color + (1 - alpha) background. A Gaussian's normal is the axis of its smallest
    scale, turned towards the camera.

    backend: "torch" (portable tiled rasterizer, any device), "gsplat" (CUDA only) or "auto"
    (gsplat when CUDA and gsplat are available, else torch; the choice is logged once).
    """
    _check_inputs(means, quats, scales, opacities, colors_or_sh, viewmats, Ks, sh_degree, background)
    chosen = _choose_backend(backend, means.device)
    screen_or_depths, features = _features(
        means, quats, scales, opacities, colors_or_sh, viewmats, Ks, width, height, sh_degree, near, far
    )
    if chosen == "gsplat":
        blended, alpha = rasterize_gsplat(
            means, quats, scales, opacities, features, viewmats, Ks, width, height, near, far, antialiased
        )
    else:
        blended, alpha = rasterize_tiles(
            screen_or_depths,
            _blended_opacities(screen_or_depths, opacities, antialiased),
            features,
            width,
            height,
        )
    return _result(blended, alpha, features.shape[-1] - 4, background, chosen)


def render_dense_reference(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4]
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    colors_or_sh: torch.Tensor,  # [N, D], [C, N, D] or [N, B, 3] (see `render`)
    viewmats: torch.Tensor,  # [C, 4, 4]
    Ks: torch.Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    background: torch.Tensor | None = None,  # [D] or [C, D]
    near: float = 0.01,
    far: float = 100.0,
    antialiased: bool = False,
) -> RenderResult:
    """`render` evaluated densely: every pixel against every Gaussian in the depth range, plain
    autograd. The slow, obviously correct reference for tests and benchmarks (small scenes only)."""
    _check_inputs(means, quats, scales, opacities, colors_or_sh, viewmats, Ks, sh_degree, background)
    screen, features = _features(
        means, quats, scales, opacities, colors_or_sh, viewmats, Ks, width, height, sh_degree, near, far
    )
    blended, alpha = rasterize_dense(
        screen, _blended_opacities(screen, opacities, antialiased), features, width, height
    )
    return _result(blended, alpha, features.shape[-1] - 4, background, "dense")


def _features(
    means, quats, scales, opacities, colors_or_sh, viewmats, Ks, width, height, sh_degree, near, far
):
    screen = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, near, far)
    features = gaussian_features(means, quats, scales, colors_or_sh, sh_degree, viewmats, screen.depths)
    return screen, features


def _blended_opacities(screen, opacities: torch.Tensor, antialiased: bool) -> torch.Tensor:
    """[N] the opacities as given, or [C, N] compensated per camera for antialiased splats."""
    return opacities[None] * screen.compensation if antialiased else opacities


def _result(blended, alpha, channels, background, backend) -> RenderResult:
    color = blended[..., :channels]
    depth = torch.where(alpha > 0, blended[..., channels : channels + 1] / alpha.clamp_min(1e-12), 0.0)
    if background is not None:
        background = background if background.dim() == 2 else background[None]
        color = color + (1.0 - alpha) * background[:, None, None, :]
    return RenderResult(
        color=color, alpha=alpha, depth=depth, normal=blended[..., channels + 1 :], backend=backend
    )


def _choose_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"Unknown render backend '{backend}'; choose one of {', '.join(BACKENDS)}.")
    if backend == "gsplat" and not (device.type == "cuda" and gsplat_available()):
        raise AvatarError(
            "The gsplat renderer needs an NVIDIA GPU with CUDA and the gsplat package; "
            "use the portable renderer (backend 'torch') on this machine."
        )
    if backend == "auto":
        chosen = "gsplat" if device.type == "cuda" and gsplat_available() else "torch"
        if (chosen, device.type) not in _logged_choices:
            _logged_choices.add((chosen, device.type))
            logger.info("Rendering with the %s backend on %s.", chosen, device.type)
        return chosen
    return backend


def _check_inputs(means, quats, scales, opacities, colors_or_sh, viewmats, Ks, sh_degree, background):
    count, cameras = means.shape[0], viewmats.shape[0]
    expected = {
        "means": (means, (count, 3)),
        "quats": (quats, (count, 4)),
        "scales": (scales, (count, 3)),
        "opacities": (opacities, (count,)),
        "viewmats": (viewmats, (cameras, 4, 4)),
        "Ks": (Ks, (cameras, 3, 3)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"'{name}' must have shape {list(shape)}, found {list(tensor.shape)}.")
    if sh_degree is None:
        if colors_or_sh.dim() not in (2, 3) or colors_or_sh.shape[-2] != count:
            found = list(colors_or_sh.shape)
            raise ValueError(f"colours must have shape [N, D] or [C, N, D], found {found}.")
        if colors_or_sh.dim() == 3 and colors_or_sh.shape[0] != cameras:
            raise ValueError(f"per-camera colours need {cameras} cameras, found {colors_or_sh.shape[0]}.")
    elif colors_or_sh.dim() != 3 or colors_or_sh.shape[0] != count or colors_or_sh.shape[2] != 3:
        raise ValueError(f"SH coefficients must have shape [N, B, 3], found {list(colors_or_sh.shape)}.")
    if background is not None and background.dim() not in (1, 2):
        raise ValueError(f"'background' must have shape [D] or [C, D], found {list(background.shape)}.")
