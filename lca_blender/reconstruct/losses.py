"""Image losses for fitting in torch: L1, a differentiable SSIM, PSNR and the sRGB encoding.

Images are [C, H, W, D] tensors (channels last, as the renderer returns them), values in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11  # the Gaussian window of Wang et al. 2004: 11 x 11 taps, sigma 1.5
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2  # (K1 L)^2 with K1 = 0.01 and a dynamic range L of 1
SSIM_C2 = 0.03**2  # (K2 L)^2 with K2 = 0.03


def _gaussian_taps(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    offsets = torch.arange(SSIM_WINDOW, device=device, dtype=dtype) - SSIM_WINDOW // 2
    taps = torch.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return taps / taps.sum()


def _blur(images: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of [B, D, H, W] images, each channel on its own ('valid' borders)."""
    channels = images.shape[1]
    horizontal = taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    return F.conv2d(F.conv2d(images, horizontal, groups=channels), vertical, groups=channels)


def ssim_map(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[C, H - 10, W - 10, D] the local SSIM of two [C, H, W, D] images (Gaussian window, no padding)."""
    taps = _gaussian_taps(prediction.device, prediction.dtype)
    x, y = prediction.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2)
    mean_x, mean_y = _blur(x, taps), _blur(y, taps)
    var_x = _blur(x * x, taps) - mean_x**2
    var_y = _blur(y * y, taps) - mean_y**2
    covariance = _blur(x * y, taps) - mean_x * mean_y
    numerator = (2 * mean_x * mean_y + SSIM_C1) * (2 * covariance + SSIM_C2)
    denominator = (mean_x**2 + mean_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return (numerator / denominator).permute(0, 2, 3, 1)


def ssim(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean SSIM of two [C, H, W, D] images (1 when equal)."""
    return ssim_map(prediction, target).mean()


def psnr(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Peak signal-to-noise ratio in dB of [..., D] images in [0, 1], over the pixels where `mask`
    [...] (the images' shape without D) is true, or all of them."""
    error = (prediction - target) ** 2
    if mask is not None:
        error = error[mask.bool()]
    mse = float(error.mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))
