"""Per-camera screen-space Gaussians: EWA projection, tight bounds and the per-Gaussian features to blend.

Shared by every backend, so that they differ only in how they rasterize. The maths follows 3DGS and
gsplat's pinhole projection:

- camera-space mean t = R m + T (viewmat = [R | T], world to camera, OpenCV axes: x right, y down,
  z forward); pixel mean (fx t_x / t_z + cx, fy t_y / t_z + cy), pixel centres at +0.5;
- 2D covariance Sigma' = J R Sigma R^T J^T + 0.3 I (EWA splatting; the 0.3 px^2 is 3DGS's low-pass
  filter), Sigma = (Q S)(Q S)^T from the unit quaternion Q and the linear scales S; J is the
  projection's Jacobian at t with t_x / t_z, t_y / t_z clamped to 1.3 times the half field of view
  (off-screen Gaussians would otherwise blow up), exactly as gsplat does;
- culled: t_z <= near or t_z >= far, opacity < 1/255, and Gaussians whose bounds miss the image;
- bounds: the half extents e sqrt(Sigma'_xx), e sqrt(Sigma'_yy) with e = sqrt(2 ln(255 o)), the
  Mahalanobis radius beyond which alpha = o exp(-d^2 / 2) is below 1/255 and is skipped anyway
  (at o = 1, e = 3.33: the "3 sigma" of 3DGS, made opacity-aware as in gsplat). Every pixel a
  Gaussian contributes to lies inside them, so tiling changes no pixel;
- compensation: sqrt(det Sigma / det(Sigma + 0.3 I)), the factor on the opacities of antialiased
  splats (`maths/projection.py`; gsplat's "antialiased" mode). The bounds use the uncompensated
  opacity, which is never smaller, so they hold for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..maths.projection import FOV_CLAMP, LOW_PASS, MIN_ALPHA, antialiasing_compensation
from ..maths.rotations_torch import quaternion_to_matrix
from ..maths.sh_torch import sh_to_color

MAX_ALPHA = 0.99  # alpha is clamped here, as in 3DGS (gsplat clamps at 0.999)
MIN_TRANSMITTANCE = 1e-4  # a pixel stops at the Gaussian that would bring T below this (3DGS)


@dataclass(frozen=True)
class ScreenGaussians:
    """Gaussians as every camera sees them; entries of culled Gaussians are finite but unused."""

    means2d: torch.Tensor  # [C, N, 2] pixel coordinates of the centres
    conics: torch.Tensor  # [C, N, 3] (a, b, c): the inverse 2D covariance [[a, b], [b, c]]
    depths: torch.Tensor  # [C, N] camera-space z
    half_extents: torch.Tensor  # [C, N, 2] screen bounds around means2d (no gradient)
    in_depth_range: torch.Tensor  # [C, N] bool: near < z < far
    visible: torch.Tensor  # [C, N] bool: in depth range, opaque enough, and touching the image
    compensation: torch.Tensor  # [C, N] the antialiased opacity's factor (differentiable)


def project_gaussians(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4] (w, x, y, z), normalised here
    scales: torch.Tensor,  # [N, 3] linear standard deviations
    opacities: torch.Tensor,  # [N]
    viewmats: torch.Tensor,  # [C, 4, 4] world to camera
    Ks: torch.Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near: float,
    far: float,
) -> ScreenGaussians:
    """Project 3D Gaussians into C pinhole cameras (see the module docstring for the maths)."""
    rotation, translation = viewmats[:, :3, :3], viewmats[:, :3, 3]
    camera_means = torch.einsum("cij,nj->cni", rotation, means) + translation[:, None, :]
    x, y, z = camera_means.unbind(-1)
    in_depth_range = (z > near) & (z < far)
    # Culled Gaussians get z = 1 so that no NaN or infinity reaches the gradients through torch.where.
    z = torch.where(in_depth_range, z, torch.ones_like(z))

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    margin_x = (FOV_CLAMP - 1.0) * 0.5 * width / fx
    margin_y = (FOV_CLAMP - 1.0) * 0.5 * height / fy
    clamped_x = z * torch.minimum(torch.maximum(x / z, -(cx / fx + margin_x)), (width - cx) / fx + margin_x)
    clamped_y = z * torch.minimum(torch.maximum(y / z, -(cy / fy + margin_y)), (height - cy) / fy + margin_y)
    zeros = torch.zeros_like(z)
    jacobian = torch.stack(
        [fx / z, zeros, -fx * clamped_x / (z * z), zeros, fy / z, -fy * clamped_y / (z * z)], dim=-1
    ).reshape(z.shape + (2, 3))

    factors = quaternion_to_matrix(quats) * scales[:, None, :]  # Q S, [N, 3, 3]
    world_covariances = factors @ factors.transpose(1, 2)
    camera_covariances = rotation[:, None] @ world_covariances[None] @ rotation.transpose(1, 2)[:, None]
    covariances2d = jacobian @ camera_covariances @ jacobian.transpose(-1, -2)
    cov_xx = covariances2d[..., 0, 0] + LOW_PASS
    cov_xy = covariances2d[..., 0, 1]
    cov_yy = covariances2d[..., 1, 1] + LOW_PASS
    determinant = cov_xx * cov_yy - cov_xy * cov_xy
    conics = torch.stack([cov_yy, -cov_xy, cov_xx], dim=-1) / determinant[..., None]
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)

    with torch.no_grad():
        opaque = opacities >= MIN_ALPHA
        extent = torch.sqrt(2.0 * torch.log(opacities.clamp_min(MIN_ALPHA) / MIN_ALPHA))
        extent = extent.clamp_max(math.sqrt(2.0 * math.log(1.0 / MIN_ALPHA)))
        half_extents = extent[None, :, None] * torch.stack([cov_xx, cov_yy], dim=-1).sqrt()
        low, high = means2d - half_extents, means2d + half_extents
        on_image = (high[..., 0] > 0) & (low[..., 0] < width) & (high[..., 1] > 0) & (low[..., 1] < height)
        visible = in_depth_range & opaque[None, :] & on_image & (determinant > 0)
    return ScreenGaussians(
        means2d=means2d,
        conics=conics,
        depths=z,
        half_extents=half_extents,
        in_depth_range=in_depth_range,
        visible=visible,
        compensation=antialiasing_compensation(
            covariances2d[..., 0, 0], covariances2d[..., 0, 1], covariances2d[..., 1, 1]
        ),
    )


def camera_centres(viewmats: torch.Tensor) -> torch.Tensor:
    """[C, 3] world positions of the cameras of world-to-camera `viewmats` [C, 4, 4]: -R^T T."""
    rotation, translation = viewmats[:, :3, :3], viewmats[:, :3, 3]
    return -torch.einsum("cji,cj->ci", rotation, translation)


def gaussian_features(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4]
    scales: torch.Tensor,  # [N, 3]
    colors_or_sh: torch.Tensor,  # [N, D] or [C, N, D] colours, or [N, B, 3] SH when sh_degree is set
    sh_degree: int | None,
    viewmats: torch.Tensor,  # [C, 4, 4]
    depths: torch.Tensor,  # [C, N] camera-space z
) -> torch.Tensor:
    """[C, N, D + 4] what each camera blends per Gaussian: colour (D), depth z (1), normal (3).

    The normal is the world-space axis of the Gaussian's smallest scale, turned towards the camera.
    """
    camera_count, count = viewmats.shape[0], means.shape[0]
    centres = camera_centres(viewmats)
    to_gaussians = means[None] - centres[:, None, :]  # [C, N, 3] camera -> Gaussian
    if sh_degree is None:
        colors = colors_or_sh if colors_or_sh.dim() == 3 else colors_or_sh[None]
        colors = colors.expand(camera_count, count, colors.shape[-1])
    else:
        directions = to_gaussians / to_gaussians.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        colors = sh_to_color(colors_or_sh[None], directions, sh_degree)
    axes = quaternion_to_matrix(quats)  # columns are the Gaussian's axes
    thinnest = scales.argmin(dim=1)
    normals = torch.gather(axes, 2, thinnest[:, None, None].expand(count, 3, 1))[..., 0]
    facing_away = (normals[None] * to_gaussians).sum(-1, keepdim=True) > 0
    normals = torch.where(facing_away, -normals[None], normals[None])
    return torch.cat([colors, depths[..., None], normals], dim=-1)
