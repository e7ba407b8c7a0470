"""Image metrics for scoring avatars: masked PSNR and SSIM (the alignment is `maths/alignment.py`).

numpy only (no torch, no bpy), so any environment can score.

- PSNR over a mask: 10 log10(peak^2 / MSE), the MSE taken over the masked pixels and all channels.
- SSIM (Wang, Bovik, Sheikh and Simoncelli 2004, "Image quality assessment: from error visibility
  to structural similarity"): local means, variances and covariance under an 11x11 Gaussian window
  of standard deviation 1.5 px, C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L the data range,
  SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
  per channel, averaged over channels. The image is padded by reflection so the map has the
  image's size; the masked score averages the map inside the mask.
"""

from __future__ import annotations

import numpy as np

SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5


def _check_images(first: np.ndarray, second: np.ndarray, mask: np.ndarray | None) -> None:
    if first.shape != second.shape or first.ndim not in (2, 3):
        raise ValueError(
            f"Images must have the same [H, W] or [H, W, C] shape, found {first.shape}, {second.shape}."
        )
    if mask is not None and mask.shape != first.shape[:2]:
        raise ValueError(f"The mask must be [H, W] = {first.shape[:2]}, found {mask.shape}.")


def masked_mse(first: np.ndarray, second: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error over the pixels where `mask` [H, W] is true (all pixels when None)."""
    _check_images(first, second, mask)
    difference = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    if difference.ndim == 2:
        difference = difference[..., None]
    if mask is not None:
        difference = difference[np.asarray(mask, bool)]
    if difference.size == 0:
        raise ValueError("The mask selects no pixels.")
    return float(np.mean(difference * difference))


def masked_psnr(
    first: np.ndarray, second: np.ndarray, mask: np.ndarray | None = None, peak: float = 1.0
) -> float:
    """PSNR in dB of two images [H, W] or [H, W, C] over `mask` [H, W] (inf when they are equal)."""
    mse = masked_mse(first, second, mask)
    return float("inf") if mse == 0 else float(10 * np.log10(peak * peak / mse))


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(SSIM_WINDOW_SIZE) - SSIM_WINDOW_SIZE // 2
    weights = np.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return weights / weights.sum()


def _blur(image: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur of [H, W, C] with reflected borders; the output keeps the shape."""
    weights = _gaussian_window()
    half = SSIM_WINDOW_SIZE // 2
    for axis in (0, 1):
        padding = [(0, 0)] * image.ndim
        padding[axis] = (half, half)
        padded = np.pad(image, padding, mode="reflect")
        length = image.shape[axis]
        blurred = np.zeros_like(image)
        for tap, weight in enumerate(weights):
            blurred += weight * np.take(padded, np.arange(tap, tap + length), axis=axis)
        image = blurred
    return image


def ssim_map(first: np.ndarray, second: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """[H, W] SSIM of two images [H, W] or [H, W, C], averaged over channels (module docstring)."""
    _check_images(first, second, None)
    if min(first.shape[:2]) <= SSIM_WINDOW_SIZE // 2:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW_SIZE // 2 + 1} pixels a side.")
    x = np.asarray(first, np.float64)
    y = np.asarray(second, np.float64)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mean_x, mean_y = _blur(x), _blur(y)
    variance_x = _blur(x * x) - mean_x * mean_x
    variance_y = _blur(y * y) - mean_y * mean_y
    covariance = _blur(x * y) - mean_x * mean_y
    similarity = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
        (mean_x * mean_x + mean_y * mean_y + c1) * (variance_x + variance_y + c2)
    )
    return similarity.mean(axis=2)


def masked_ssim(
    first: np.ndarray, second: np.ndarray, mask: np.ndarray | None = None, data_range: float = 1.0
) -> float:
    """The SSIM map of two images averaged over `mask` [H, W] (all pixels when None)."""
    _check_images(first, second, mask)
    similarity = ssim_map(first, second, data_range)
    if mask is None:
        return float(similarity.mean())
    selected = similarity[np.asarray(mask, bool)]
    if selected.size == 0:
        raise ValueError("The mask selects no pixels.")
    return float(selected.mean())
