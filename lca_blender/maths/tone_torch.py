"""The tone curves' encode in torch, differentiable: the twin of `tone.py`'s `ToneCurve.encode`.

Gradients stay finite everywhere: the log2 and the powers see inputs clamped away from 0, and the
clips pass no gradient where they clip (as the numpy encode, the display is flat there).
"""

from __future__ import annotations

import torch

from .colour_torch import linear_to_srgb
from .tone import ToneCurve


def _odd_power(values: torch.Tensor, exponent: float) -> torch.Tensor:
    return values.sign() * values.abs().clamp_min(1e-12).pow(exponent)


def encode(curve: ToneCurve, linear: torch.Tensor) -> torch.Tensor:
    """Display values in [0, 1] of linear Rec.709 colours, as `curve.encode` gives them.

    linear: Tensor  # [..., 3]; the result has its shape, dtype and device
    """
    if curve.model is None:
        return linear_to_srgb(linear.clamp(0.0, 1.0))
    model = curve.model

    def matrix(rows: tuple) -> torch.Tensor:
        return torch.tensor(rows, dtype=linear.dtype, device=linear.device)

    lo, hi = model.log2_range
    mixed = linear @ matrix(model.input_matrix).T
    normalised = (torch.log2(mixed.clamp(2.0**lo, 2.0**hi)) - lo) / (hi - lo)
    knots = matrix(model.curve)
    position = normalised.clamp(0.0, 1.0) * (knots.numel() - 1)
    lower = position.detach().floor().clamp(max=knots.numel() - 2).long()
    fraction = position - lower
    shaped = knots[lower] * (1 - fraction) + knots[lower + 1] * fraction
    outset = _odd_power(shaped @ matrix(model.outset_matrix).T, model.power)
    return linear_to_srgb((outset @ matrix(model.output_matrix).T).clamp(0.0, 1.0))
