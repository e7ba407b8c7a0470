"""Real spherical harmonics in numpy: the 3DGS colour basis (degree 0..3) and the L2 irradiance basis.

Two bases, each used where its convention is the standard one:

- **The 3DGS colour basis** (`sh_basis`): the real SH with the Condon-Shortley phase, ordered
  m = -l..l within each degree, as the reference 3DGS implementation (`sh_utils.py`) and gsplat
  evaluate it, on the unit direction (x, y, z) from the camera to the Gaussian:

      l = 0:  C0
      l = 1:  -C1 y,  C1 z,  -C1 x
      l = 2:  C2[0] xy,  C2[1] yz,  C2[2] (2zz - xx - yy),  C2[3] xz,  C2[4] (xx - yy)
      l = 3:  C3[0] y (3xx - yy),  C3[1] xyz,  C3[2] y (4zz - xx - yy),  C3[3] z (2zz - 3xx - 3yy),
              C3[4] x (4zz - xx - yy),  C3[5] z (xx - yy),  C3[6] x (xx - 3yy)

  A Gaussian's colour is max(0.5 + sum_lm sh_lm Y_lm(d), 0) per channel, so a flat colour c has
  the single coefficient (c - 0.5) / C0.
- **The irradiance basis** (`irradiance_basis`): the standard real SH up to l = 2 without the phase
  (Y_1,-1 = C1 y, ...), in which `lights.AmbientSH` stores the world's radiance (Ramamoorthi and
  Hanrahan's convention).

The torch twins are in `sh_torch.py`; the viewport's GLSL formats its constants from these.
"""

from __future__ import annotations

import math

import numpy as np

SH_C0 = 0.28209479177387814  # Y_0^0 = 1 / (2 sqrt(pi))
SH_C1 = 0.4886025119029199  # sqrt(3 / (4 pi))
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
MAX_DEGREE = 3


def coefficient_count(degree: int) -> int:
    """Number of SH coefficients per channel up to `degree`: (degree + 1)^2."""
    return (degree + 1) ** 2


def degree_of(count: int) -> int:
    """The degree whose basis has `count` coefficients (1, 4, 9 or 16)."""
    degree = math.isqrt(count) - 1
    if coefficient_count(degree) != count or not 0 <= degree <= MAX_DEGREE:
        raise ValueError(f"{count} is not a 3DGS coefficient count (1, 4, 9 or 16).")
    return degree


def check_degree(degree: int) -> None:
    """Raise ValueError unless 0 <= degree <= 3."""
    if not 0 <= degree <= MAX_DEGREE:
        raise ValueError(f"SH degree must be 0..{MAX_DEGREE}, got {degree}.")


def sh_basis(directions: np.ndarray, degree: int) -> np.ndarray:
    """[..., (degree+1)^2] the 3DGS colour basis at unit `directions` [..., 3], degree 0..3."""
    check_degree(degree)
    x, y, z = directions[..., 0], directions[..., 1], directions[..., 2]
    basis = [np.full_like(x, SH_C0)]
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
    return np.stack(basis, axis=-1)


def irradiance_basis(directions: np.ndarray) -> np.ndarray:
    """[..., 9] the standard real SH up to l = 2 (no Condon-Shortley phase) at unit `directions` [..., 3]."""
    x, y, z = directions[..., 0], directions[..., 1], directions[..., 2]
    return np.stack(
        [
            np.full_like(x, SH_C0),
            SH_C1 * y,
            SH_C1 * z,
            SH_C1 * x,
            SH_C2[0] * x * y,
            SH_C2[0] * y * z,
            SH_C2[2] * (3 * z * z - 1),
            SH_C2[0] * x * z,
            SH_C2[4] * (x * x - y * y),
        ],
        axis=-1,
    )
