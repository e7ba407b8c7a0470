"""The 3DGS projection in numpy: Blender's view to the engine's camera, covariances, screen ellipses.

Blender loads this module (numpy only). The viewport's vertex shader (`viewport/shaders.py`) runs
the same projection per vertex; the engine's differentiable twin is `render/projection.py`, which
takes its constants from here. Both are held to each other by the tests.

Cameras. Blender gives a view matrix V (world to camera, OpenGL axes: x right, y up, looking down
-z) and a projection matrix P (camera to clip). The engine takes OpenCV cameras (x right, y down,
looking down +z) with pixel intrinsics K. For a perspective P over a W x H image:

    viewmat = diag(1, -1, -1, 1) V,
    fx = P00 W / 2,  fy = P11 H / 2,  cx = (1 - P02) W / 2,  cy = (1 + P12) H / 2,

the principal point from the lens shift that P carries in P02 and P12. The GLSL works in OpenGL
pixels (origin bottom left), where the y principal point is (1 - P12) H / 2 and the covariance's
off-diagonal changes sign with y; the image is the same one mirrored, so nothing else changes.

Antialiased splats. The low-pass filter widens every Gaussian by 0.3 px^2 whatever its size, so a
Gaussian seen edge-on (a disc at a silhouette) covers a pixel-wide band it does not fill, and the
outline of a surface of discs stands out by about a pixel. Splats fitted as "antialiased" (as
Mip-Splatting's 2D filter and gsplat's "antialiased" mode do) keep the filter but scale each
opacity by sqrt(det Sigma / det(Sigma + 0.3 I)), the share of the widened Gaussian's peak its own
footprint explains: a large Gaussian keeps its opacity, an edge-on one fades. The fit makes
avatars this way, and the .lca records it (`GaussianAvatar.antialiased`, schema 3); older files,
and .ply files without a header comment that says so, are rendered classic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rotations import quaternion_to_matrix

LOW_PASS = 0.3  # px^2 added to every 2D covariance (3DGS's screen-space low-pass filter)
MIN_ALPHA = 1.0 / 255.0  # fragments below this are discarded, as 3DGS skips them
FOV_CLAMP = 1.3  # the Jacobian's x/z, y/z are clamped to this many half fields of view (gsplat)

_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def opencv_camera(
    view_matrix: np.ndarray, projection_matrix: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """The engine's camera (viewmat [4, 4], K [3, 3], float64) of a Blender perspective view.

    view_matrix: [4, 4] world to camera (Blender / OpenGL); projection_matrix: [4, 4] perspective.
    """
    view = np.asarray(view_matrix, dtype=np.float64)
    projection = np.asarray(projection_matrix, dtype=np.float64)
    if abs(projection[3, 3]) > 1e-9:
        raise ValueError("The engine's cameras are pinholes; an orthographic projection has no K.")
    K = np.array(
        [
            [projection[0, 0] * width / 2, 0.0, (1 - projection[0, 2]) * width / 2],
            [0.0, projection[1, 1] * height / 2, (1 + projection[1, 2]) * height / 2],
            [0.0, 0.0, 1.0],
        ]
    )
    return _OPENGL_TO_OPENCV @ view, K


def covariances(rotations: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """[N, 6] upper triangles (xx, xy, xz, yy, yz, zz) of Sigma = (Q S)(Q S)^T.

    rotations: [N, 4] quaternions (w, x, y, z), normalised here; scales: [N, 3] standard deviations.
    """
    factors = quaternion_to_matrix(np.asarray(rotations, np.float64)) * np.asarray(scales)[:, None, :]
    sigma = factors @ np.swapaxes(factors, 1, 2)
    return sigma[:, [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]


@dataclass(frozen=True)
class ScreenGaussians:
    """Gaussians as one camera sees them (the numpy twin of the shader's vertex stage)."""

    means2d: np.ndarray  # [N, 2] pixel coordinates, OpenCV (origin top left, pixel centres at +0.5)
    conics: np.ndarray  # [N, 3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
    depths: np.ndarray  # [N] camera-space z (distance along the view axis)
    half_extents: np.ndarray  # [N, 2] half sizes of the screen quad, pixels
    opacities: np.ndarray  # [N] the opacities blended: compensated when antialiased


def project_gaussians(
    means: np.ndarray,  # [N, 3]
    covariance_triangles: np.ndarray,  # [N, 6] from `covariances`
    opacities: np.ndarray,  # [N]
    viewmat: np.ndarray,  # [4, 4] world to camera, OpenCV
    K: np.ndarray,  # [3, 3]
    width: int,
    height: int,
    antialiased: bool = False,
) -> ScreenGaussians:
    """EWA projection of 3D Gaussians, as the viewport's vertex shader and `render/projection.py` do.

    Sigma' = J W Sigma W^T J^T + 0.3 I with J the pinhole Jacobian at the clamped camera position,
    and a quad of half extents e sqrt(diag Sigma'), e = sqrt(2 ln(255 o)) at most 3.33: outside it
    alpha = o exp(-d^2 / 2) is below 1/255 and would be discarded anyway. `antialiased`: o is the
    opacity compensated for the low-pass filter (see the module docstring).
    """
    rotation, translation = viewmat[:3, :3], viewmat[:3, 3]
    camera = means @ rotation.T + translation
    x, y, z = camera[:, 0], camera[:, 1], camera[:, 2]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    margin_x = (FOV_CLAMP - 1.0) * 0.5 * width / fx
    margin_y = (FOV_CLAMP - 1.0) * 0.5 * height / fy
    clamped_x = z * np.clip(x / z, -(cx / fx + margin_x), (width - cx) / fx + margin_x)
    clamped_y = z * np.clip(y / z, -(cy / fy + margin_y), (height - cy) / fy + margin_y)
    jacobian = np.zeros((len(z), 2, 3))
    jacobian[:, 0, 0] = fx / z
    jacobian[:, 0, 2] = -fx * clamped_x / (z * z)
    jacobian[:, 1, 1] = fy / z
    jacobian[:, 1, 2] = -fy * clamped_y / (z * z)
    sigma = _full_covariances(covariance_triangles)
    camera_sigma = rotation @ sigma @ rotation.T
    sigma2d = jacobian @ camera_sigma @ np.swapaxes(jacobian, 1, 2)
    cov_xx, cov_xy, cov_yy = sigma2d[:, 0, 0] + LOW_PASS, sigma2d[:, 0, 1], sigma2d[:, 1, 1] + LOW_PASS
    determinant = cov_xx * cov_yy - cov_xy * cov_xy
    conics = np.stack([cov_yy, -cov_xy, cov_xx], axis=1) / determinant[:, None]
    blended = np.asarray(opacities, np.float64)
    if antialiased:
        blended = blended * antialiasing_compensation(sigma2d[:, 0, 0], sigma2d[:, 0, 1], sigma2d[:, 1, 1])
    extent = quad_extent(blended)  # the shader sizes the quad by the opacity it blends
    return ScreenGaussians(
        means2d=np.stack([fx * x / z + cx, fy * y / z + cy], axis=1),
        conics=conics,
        depths=z,
        half_extents=extent[:, None] * np.sqrt(np.stack([cov_xx, cov_yy], axis=1)),
        opacities=blended,
    )


def antialiasing_compensation(xx, xy, yy):
    """sqrt(det Sigma / det(Sigma + 0.3 I)) from the entries of the 2D covariance Sigma before the
    low-pass filter (numpy arrays or torch tensors): the factor on an antialiased Gaussian's opacity.
    (From the filtered entries the unfiltered determinant would be a difference of near-equal
    numbers for thin Gaussians, too coarse in float32.)"""
    ratio = (xx * yy - xy * xy) / ((xx + LOW_PASS) * (yy + LOW_PASS) - xy * xy)
    return ratio.clip(1e-12, 1.0) ** 0.5  # not 0: the square root's gradient there is infinite


def quad_extent(opacities: np.ndarray) -> np.ndarray:
    """[N] Mahalanobis radius beyond which alpha = o exp(-d^2 / 2) < 1/255 (3.33 at o = 1)."""
    ratio = np.maximum(np.asarray(opacities, np.float64), MIN_ALPHA) / MIN_ALPHA
    return np.sqrt(2.0 * np.log(np.minimum(ratio, 1.0 / MIN_ALPHA)))


def _full_covariances(triangles: np.ndarray) -> np.ndarray:
    xx, xy, xz, yy, yz, zz = np.moveaxis(np.asarray(triangles, np.float64), -1, 0)
    return np.stack([xx, xy, xz, xy, yy, yz, xz, yz, zz], axis=-1).reshape(-1, 3, 3)
