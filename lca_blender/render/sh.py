"""The 3DGS colour model: real spherical harmonics of degree 0..3 evaluated along viewing rays.

The basis is the real SH with the Condon-Shortley phase, ordered m = -l..l within each degree, which
is what the reference 3DGS implementation (`sh_utils.py`) and gsplat evaluate; written out in
Cartesian form on the unit direction (x, y, z) from the camera to the Gaussian:

    l = 0:  C0
    l = 1:  -C1 y,  C1 z,  -C1 x
    l = 2:  C2[0] xy,  C2[1] yz,  C2[2] (2zz - xx - yy),  C2[3] xz,  C2[4] (xx - yy)
    l = 3:  C3[0] y (3xx - yy),  C3[1] xyz,  C3[2] y (4zz - xx - yy),  C3[3] z (2zz - 3xx - 3yy),
            C3[4] x (4zz - xx - yy),  C3[5] z (xx - yy),  C3[6] x (xx - 3yy)

and a Gaussian's colour is max(0.5 + sum_lm sh_lm Y_lm(d), 0) per channel.
"""

from __future__ import annotations

import torch

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def coefficient_count(degree: int) -> int:
    """Number of SH coefficients per channel up to `degree`: (degree + 1)^2."""
    return (degree + 1) ** 2


def sh_basis(directions: torch.Tensor, degree: int) -> torch.Tensor:
    """[..., (degree+1)^2] the 3DGS SH basis at unit `directions` [..., 3], degree 0..3."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be 0..3, got {degree}.")
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
