"""An avatar's splats in Blender 5.3's native Gaussian-splat conventions, for the node group that poses them.

Blender 5.3 renders a PointCloud of type 'GAUSSIAN_SPLAT' from these point attributes, as its own
3DGS `.ply` importer writes them (checked in bpy 5.3.0):
- `position`; `rotation` (QUATERNION, w x y z); `scale` (linear standard deviations);
- `radiance:base` (FLOAT4; a FLOAT_COLOR of the same name renders the same): the degree-0
  spherical-harmonic coefficient of each channel (3DGS's f_dc_0..2, not a colour) and the linear
  opacity; Blender shows the colour srgb_to_linear(0.5 + SH_C0 * coefficient), above 1 too;
- `radiance:sh_{k}` (FLOAT_VECTOR), k = 0 .. B-2: the RGB of SH coefficient k + 1.

An imported avatar's splats mesh keeps its 3DGS attributes and binding (`blender_data`); on 5.3 it
also carries, for the Geometry Nodes group that poses the Gaussians on the body's evaluated
triangles (mean = barycentric point + offset * normal, rotation = triangle frame * local rotation,
scale = scale factor * triangle size, as `deform` does) and makes their radiance:
- `lca_local_rotation` (QUATERNION): each Gaussian's rotation in its triangle's frame;
- `lca_scale_factor` (FLOAT_VECTOR): exp(log-scale), its scale per unit of triangle size;
- `lca_relit_base` (FLOAT_VECTOR), written by the add-on while the look is "relit": the degree-0
  coefficients of the relit colours (`relit_coefficients`), which replace the captured SH.
The group's radiance: `radiance:base` = (f_dc_0..2, or `lca_relit_base` when relit;
clamp(sigmoid(opacity) * the opacity slider, 0, 1)), the higher SH zero when relit.
"""

from __future__ import annotations

import numpy as np

from ..avatar import GaussianAvatar
from ..maths.colour import linear_to_srgb
from ..maths.sh import SH_C0

RADIANCE_BASE = "radiance:base"
LOCAL_ROTATION = "lca_local_rotation"
SCALE_FACTOR = "lca_scale_factor"
RELIT_BASE = "lca_relit_base"


def relit_coefficients(colors: np.ndarray) -> np.ndarray:
    """[N, 3] float32 degree-0 SH coefficients that Blender renders as the linear `colors` [N, 3]
    (negative colours, which no light makes, become black)."""
    display = linear_to_srgb(np.maximum(np.asarray(colors, np.float64), 0.0))
    return ((display - 0.5) / SH_C0).astype(np.float32)


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
        SCALE_FACTOR: np.exp(avatar.log_scales),  # float32: within an ulp of float64's, 4x faster
    }
