"""The slow, obviously correct twin of the tiled rasterizer: every pixel against every Gaussian.

No tiles, no bounds and no culling except the depth range; the same per-pixel maths (alpha =
min(0.99, o exp(power)) skipped below 1/255, stopping before transmittance falls under 1e-4),
differentiated by plain autograd. Tests compare the fast backends with it; the benchmark uses it
as the baseline. Memory grows as pixels x Gaussians: keep it to small scenes.
"""

from __future__ import annotations

import torch

from ..maths.projection import MIN_ALPHA
from .projection import MAX_ALPHA, MIN_TRANSMITTANCE, ScreenGaussians


def rasterize_dense(
    screen: ScreenGaussians,
    opacities: torch.Tensor,  # [N], or [C, N] per camera
    features: torch.Tensor,  # [C, N, F]
    width: int,
    height: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend `features` front to back: ([C, H, W, F] sum_i w_i f_i, [C, H, W, 1] sum_i w_i)."""
    device, dtype = features.device, features.dtype
    rows, columns = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) + 0.5,
        torch.arange(width, device=device, dtype=dtype) + 0.5,
        indexing="ij",
    )
    pixels = torch.stack([columns.reshape(-1), rows.reshape(-1)], dim=-1)  # [P, 2] (x, y)
    images, alphas = [], []
    opacities = opacities.expand(features.shape[0], features.shape[1])
    for camera in range(features.shape[0]):
        kept = screen.in_depth_range[camera].nonzero().squeeze(1)
        kept = kept[torch.argsort(screen.depths[camera, kept].detach(), stable=True)]
        offsets = pixels[:, None, :] - screen.means2d[camera, kept][None]  # [P, n, 2]
        a, b, c = screen.conics[camera, kept].unbind(-1)
        dx, dy = offsets[..., 0], offsets[..., 1]
        power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
        raw = opacities[camera, kept] * torch.exp(power)
        alpha = torch.where(raw < MIN_ALPHA, torch.zeros_like(raw), raw.clamp_max(MAX_ALPHA))
        inclusive = torch.cumprod(1.0 - alpha, dim=1)
        exclusive = torch.cat([torch.ones_like(inclusive[:, :1]), inclusive[:, :-1]], dim=1)
        weights = torch.where(inclusive >= MIN_TRANSMITTANCE, alpha * exclusive, torch.zeros_like(alpha))
        images.append((weights @ features[camera, kept]).reshape(height, width, -1))
        alphas.append(weights.sum(1).reshape(height, width, 1))
    return torch.stack(images), torch.stack(alphas)
