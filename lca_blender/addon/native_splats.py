"""An avatar's splats in Blender 5.3's native Gaussian-splat conventions, for the node group that poses them.

Blender 5.3 renders a PointCloud of type 'GAUSSIAN_SPLAT' from these point attributes, as its own
3DGS `.ply` importer writes them (checked in bpy 5.3.0):
- `position`; `rotation` (QUATERNION, w x y z); `scale` (linear standard deviations);
- `radiance:base` (FLOAT4): the degree-0 spherical-harmonic coefficient of each channel (3DGS's
  f_dc_0..2, not a colour) and the linear opacity;
- `radiance:sh_{k}` (FLOAT_VECTOR), k = 0 .. B-2: the RGB of SH coefficient k + 1.

An imported avatar's splats mesh keeps its 3DGS attributes and binding (`blender_data`); on 5.3 it
also carries `radiance:base` and, for the Geometry Nodes group that poses the Gaussians on the
body's evaluated triangles (mean = barycentric point + offset * normal, rotation = triangle frame
* local rotation, scale = scale factor * triangle size, as `deform` does):
- `lca_local_rotation` (QUATERNION): each Gaussian's rotation in its triangle's frame;
- `lca_scale_factor` (FLOAT_VECTOR): exp(log-scale), its scale per unit of triangle size.
"""

from __future__ import annotations

import numpy as np

from ..avatar import GaussianAvatar

RADIANCE_BASE = "radiance:base"
LOCAL_ROTATION = "lca_local_rotation"
SCALE_FACTOR = "lca_scale_factor"


def radiance_base(sh: np.ndarray, opacities: np.ndarray) -> np.ndarray:
    """[N, 4] float32 `radiance:base`: the degree-0 coefficients of `sh` [N, B, 3] and `opacities` [N]."""
    base = np.empty((sh.shape[0], 4), np.float32)
    base[:, :3] = sh[:, 0, :]
    base[:, 3] = opacities
    return base


def sh_sources(coefficients: int) -> list[tuple[str, tuple[str, str, str]]]:
    """Each `radiance:sh_{k}` attribute and the 3DGS `f_rest_*` attributes (red, green, blue) it is
    made of, for `coefficients` SH coefficients per channel (f_rest is channel-major, as INRIA
    writes it: index = channel * (B - 1) + coefficient - 1)."""
    rest = coefficients - 1
    return [
        (f"radiance:sh_{k}", tuple(f"f_rest_{channel * rest + k}" for channel in range(3)))
        for k in range(rest)
    ]


def binding_attributes(avatar: GaussianAvatar) -> dict[str, np.ndarray]:
    """The node group's per-Gaussian inputs beyond the splats mesh's own: `lca_local_rotation`
    [N, 4] and `lca_scale_factor` [N, 3], float32."""
    return {
        LOCAL_ROTATION: np.ascontiguousarray(avatar.rotations, np.float32),
        SCALE_FACTOR: np.exp(avatar.log_scales.astype(np.float64)).astype(np.float32),
    }
