"""Real spherical harmonics in torch, differentiable: the twins of `sh.py`, and the 3DGS colour.

The bases, their conventions and constants are documented in `sh.py`.
"""

from __future__ import annotations

import torch

from .sh import SH_C0, SH_C1, SH_C2, SH_C3, check_degree, coefficient_count


def sh_basis(directions: torch.Tensor, degree: int) -> torch.Tensor:
    """[..., (degree+1)^2] the 3DGS colour basis at unit `directions` [..., 3], degree 0..3."""
    check_degree(degree)
    x, y, z = directions.unbind(-1)
    basis = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        basis += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        basis += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        basis += [
            SH_C3[0] * y * (3 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4 * zz - xx - yy),
            SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            SH_C3[4] * x * (4 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(basis, dim=-1)


def irradiance_basis(directions: torch.Tensor) -> torch.Tensor:
    """[..., 9] the standard real SH up to l = 2 (no Condon-Shortley phase) at unit `directions` [..., 3]."""
    x, y, z = directions.unbind(-1)
    return torch.stack(
        [
            torch.full_like(x, SH_C0),
            SH_C1 * y,
            SH_C1 * z,
            SH_C1 * x,
            SH_C2[0] * x * y,
            SH_C2[0] * y * z,
            SH_C2[2] * (3 * z * z - 1),
            SH_C2[0] * x * z,
            SH_C2[4] * (x * x - y * y),
        ],
        dim=-1,
    )


def sh_to_color(
    sh: torch.Tensor,  # [..., B, D] coefficients, B >= (degree+1)^2 (only the first ones are used)
    directions: torch.Tensor,  # [..., 3] unit directions from the camera to the Gaussian
    degree: int,
) -> torch.Tensor:
    """[..., D] the 3DGS colour: max(0.5 + sum_lm sh_lm Y_lm(direction), 0)."""
    count = coefficient_count(degree)
    if sh.shape[-2] < count:
        raise ValueError(f"SH degree {degree} needs {count} coefficients, found {sh.shape[-2]}.")
    basis = sh_basis(directions, degree)
    return ((basis[..., None] * sh[..., :count, :]).sum(-2) + 0.5).clamp_min(0.0)
