"""The sRGB encoding in torch, differentiable: the twin of `colour.py` (same odd extension).

The power branch is evaluated on input clamped to the straight segment's end, so its gradient
stays finite at 0 and on the branch `torch.where` discards.
"""

from __future__ import annotations

import torch

from .colour import SRGB_LINEAR_LIMIT, SRGB_SLOPE


def _encode(linear: torch.Tensor) -> torch.Tensor:
    curve = 1.055 * linear.clamp_min(SRGB_LINEAR_LIMIT).pow(1 / 2.4) - 0.055
    return torch.where(linear <= SRGB_LINEAR_LIMIT, SRGB_SLOPE * linear, curve)


def linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    """Display values of linear-light `linear` (any shape)."""
    return torch.where(linear < 0, -_encode(-linear), _encode(linear))
