"""The CUDA backend: gsplat's fused rasterizer, imported only when it is asked for on a CUDA device.

gsplat blends the same per-Gaussian features as the torch backend (colour, depth, normal as extra
colour channels), so that only the rasterization differs. Differences from the torch backend, both
only at extremes: gsplat clamps alpha at 0.999 (3DGS and the torch backend: 0.99) and stops a pixel
when T <= 1e-4 (3DGS: T < 1e-4).
"""

from __future__ import annotations

import torch


def gsplat_available() -> bool:
    """True when CUDA is present and gsplat imports (gsplat is never imported without CUDA:
    it tries to compile its kernels at import time otherwise)."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def rasterize_gsplat(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4]
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    features: torch.Tensor,  # [C, N, F]
    viewmats: torch.Tensor,  # [C, 4, 4]
    Ks: torch.Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near: float,
    far: float,
    antialiased: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend `features` with gsplat: ([C, H, W, F] sum_i w_i f_i, [C, H, W, 1] sum_i w_i).
    `antialiased`: gsplat's "antialiased" mode, the opacities compensated as the torch backend does."""
    from gsplat import rasterization

    image, alpha, _ = rasterization(
        means,
        quats,
        scales,
        opacities,
        features,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near,
        far_plane=far,
        eps2d=0.3,
        sh_degree=None,
        packed=False,
        render_mode="RGB",
        rasterize_mode="antialiased" if antialiased else "classic",
        camera_model="pinhole",
    )
    return image, alpha
