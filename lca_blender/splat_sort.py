"""The viewport's splat maths in numpy: cameras, 3DGS projection, sort order and light packing.

Blender loads this module (numpy and the standard library only). The GLSL in `viewport/shaders.py`
runs the same projection per vertex; `project_gaussians` here is its CPU twin, held to the engine's
torch projection (`render/projection.py`) by the tests.

Cameras. Blender gives a view matrix V (world to camera, OpenGL axes: x right, y up, looking down
-z) and a projection matrix P (camera to clip). The engine takes OpenCV cameras (x right, y down,
looking down +z) with pixel intrinsics K. For a perspective P over a W x H image:

    viewmat = diag(1, -1, -1, 1) V,
    fx = P00 W / 2,  fy = P11 H / 2,  cx = (1 - P02) W / 2,  cy = (1 + P12) H / 2,

the principal point from the lens shift that P carries in P02 and P12. The GLSL works in OpenGL
pixels (origin bottom left), where the y principal point is (1 - P12) H / 2 and the covariance's
off-diagonal changes sign with y; the image is the same one mirrored, so nothing else changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .lights import AmbientSH, AreaLight, Light, Lighting, PointLight, SpotLight, SunLight
from .rotations import quaternion_to_matrix
from .shading import LightArrays, pack_lighting

LOW_PASS = 0.3  # px^2 added to every 2D covariance (3DGS's screen-space low-pass filter)
MIN_ALPHA = 1.0 / 255.0  # fragments below this are discarded, as 3DGS skips them
FOV_CLAMP = 1.3  # the Jacobian's x/z, y/z are clamped to this many half fields of view (gsplat)
MAX_SHADER_LIGHTS = 64  # lights.MAX_LIGHTS: the uniform buffer holds this many
LIGHT_ROWS = 4  # vec4 rows per light in the uniform buffer (see `shader_light_rows`)
LIGHT_TYPES = {"SUN": 0, "POINT": 1, "SPOT": 2, "AREA": 3}

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


def project_gaussians(
    means: np.ndarray,  # [N, 3]
    covariance_triangles: np.ndarray,  # [N, 6] from `covariances`
    opacities: np.ndarray,  # [N]
    viewmat: np.ndarray,  # [4, 4] world to camera, OpenCV
    K: np.ndarray,  # [3, 3]
    width: int,
    height: int,
) -> ScreenGaussians:
    """EWA projection of 3D Gaussians, as the viewport's vertex shader and `render/projection.py` do.

    Sigma' = J W Sigma W^T J^T + 0.3 I with J the pinhole Jacobian at the clamped camera position,
    and a quad of half extents e sqrt(diag Sigma'), e = sqrt(2 ln(255 o)) at most 3.33: outside it
    alpha = o exp(-d^2 / 2) is below 1/255 and would be discarded anyway.
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
    extent = quad_extent(opacities)
    return ScreenGaussians(
        means2d=np.stack([fx * x / z + cx, fy * y / z + cy], axis=1),
        conics=conics,
        depths=z,
        half_extents=extent[:, None] * np.sqrt(np.stack([cov_xx, cov_yy], axis=1)),
    )


def quad_extent(opacities: np.ndarray) -> np.ndarray:
    """[N] Mahalanobis radius beyond which alpha = o exp(-d^2 / 2) < 1/255 (3.33 at o = 1)."""
    ratio = np.maximum(np.asarray(opacities, np.float64), MIN_ALPHA) / MIN_ALPHA
    return np.sqrt(2.0 * np.log(np.minimum(ratio, 1.0 / MIN_ALPHA)))


def _full_covariances(triangles: np.ndarray) -> np.ndarray:
    xx, xy, xz, yy, yz, zz = np.moveaxis(np.asarray(triangles, np.float64), -1, 0)
    return np.stack([xx, xy, xz, xy, yy, yz, xz, yz, zz], axis=-1).reshape(-1, 3, 3)


def back_to_front(means: np.ndarray, view_matrix: np.ndarray) -> np.ndarray:
    """[N] int indices of `means` [N, 3] from the farthest to the nearest along Blender's view axis.

    The depth is the distance along the view axis (what the rasterizer sorts by), not to the eye;
    a stable sort keeps equal depths in their stored order, so redraws do not flicker.
    """
    view = np.asarray(view_matrix, dtype=np.float64)
    distance = -(np.asarray(means, np.float64) @ view[2, :3] + view[2, 3])
    return np.argsort(-distance, kind="stable")


class SortCache:
    """A back-to-front order, recomputed only when its key (view matrix, data version, ...) changes."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.order: np.ndarray | None = None
        self.sort_count = 0  # how many sorts have run (tests and profiling read it)

    def order_for(self, means: np.ndarray, view_matrix: np.ndarray, version: int) -> tuple[np.ndarray, bool]:
        """The order for this view and version, and whether it was recomputed now."""
        key = (np.asarray(view_matrix, np.float64).tobytes(), version)
        if key == self.key and self.order is not None:
            return self.order, False
        self.order = back_to_front(means, view_matrix)
        self.key = key
        self.sort_count += 1
        return self.order, True


def quad_triangles(order: np.ndarray) -> np.ndarray:
    """[N, 2, 3] uint32 vertex indices of two triangles per Gaussian, drawn in `order`.

    Gaussian i owns vertices 4i..4i+3 (its quad's corners, see `QUAD_CORNERS`).
    """
    first = 4 * np.asarray(order, dtype=np.uint32)[:, None, None]
    return first + np.array([[0, 1, 2], [0, 2, 3]], dtype=np.uint32)


QUAD_CORNERS = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=np.float32)


def per_corner(values: np.ndarray) -> np.ndarray:
    """[4 N, ...] float32: each Gaussian's row repeated for its quad's four corners."""
    return np.repeat(np.ascontiguousarray(values, dtype=np.float32), 4, axis=0)


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """The sRGB decoding (IEC 61966-2-1), extended linearly below 0 and as the power law above 1."""
    values = np.asarray(values)
    magnitude = np.abs(values)
    decoded = np.where(magnitude <= 0.04045, magnitude / 12.92, ((magnitude + 0.055) / 1.055) ** 2.4)
    return np.sign(values) * decoded


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """The sRGB encoding (IEC 61966-2-1), the inverse of `srgb_to_linear`."""
    values = np.asarray(values)
    magnitude = np.abs(values)
    encoded = np.where(magnitude <= 0.0031308, magnitude * 12.92, 1.055 * magnitude ** (1 / 2.4) - 0.055)
    return np.sign(values) * encoded


@dataclass(frozen=True)
class BlenderLight:
    """What the viewport reads of one Blender light object (plain values, so tests need no Blender)."""

    kind: str  # Blender's light type: SUN, POINT, SPOT or AREA
    matrix_world: np.ndarray  # [4, 4] the object's world matrix
    color: tuple[float, float, float]  # linear
    energy: float  # W/m^2 for a sun (Blender's "Strength"), W for the others (its "Power")
    radius: float = 0.0  # shadow_soft_size, point and spot
    spot_size: float = math.radians(45.0)  # radians, full cone
    spot_blend: float = 0.15
    shape: str = "SQUARE"  # area lights
    size: float = 1.0
    size_y: float = 1.0


def lighting_from_blender(
    lights: Iterable[BlenderLight], world_color: tuple[float, float, float], world_strength: float
) -> Lighting:
    """The `Lighting` of a Blender scene: its lights in Blender's units and a uniform world.

    A light shines along its object's local -Z axis. An area light's size is scaled by its object's
    X and Y scale, as Blender does. Lights beyond `MAX_SHADER_LIGHTS` are dropped (the first ones kept).
    """
    converted: list[Light] = []
    for light in lights:
        matrix = np.asarray(light.matrix_world, dtype=np.float64)
        position = tuple(matrix[:3, 3])
        direction = tuple(-matrix[:3, 2])
        if light.kind == "SUN":
            converted.append(SunLight(direction, light.color, light.energy))
        elif light.kind == "POINT":
            converted.append(PointLight(position, light.color, light.energy, light.radius))
        elif light.kind == "SPOT":
            converted.append(
                SpotLight(
                    position,
                    direction,
                    light.color,
                    light.energy,
                    min(max(light.spot_size, 1e-4), math.pi),
                    light.spot_blend,
                    light.radius,
                )
            )
        elif light.kind == "AREA":
            scale_x, scale_y = np.linalg.norm(matrix[:3, 0]), np.linalg.norm(matrix[:3, 1])
            square = light.shape in ("SQUARE", "DISK")
            size_x = light.size * scale_x
            size_y = (light.size if square else light.size_y) * scale_y
            shape = light.shape
            if square and not math.isclose(size_x, size_y, rel_tol=1e-6):
                shape = "RECTANGLE" if shape == "SQUARE" else "ELLIPSE"
            converted.append(AreaLight(position, direction, light.color, light.energy, size_x, size_y, shape))
    return Lighting(AmbientSH.uniform(world_color, world_strength), tuple(converted[:MAX_SHADER_LIGHTS]))


def shader_light_rows(lighting: Lighting) -> np.ndarray:
    """[9 + 1 + 4 * MAX_SHADER_LIGHTS, 4] float32: the viewport shader's light uniform buffer.

    Rows: the ambient SH [9] (rgb, 0); a header (light count, 0, 0, 0); then per light four rows
        (position, type), (direction, radius^2), (rgb sun irradiance or intensity, cos(size / 2)),
        (spot blend, area m^2, 0, 0)
    in the units of `shading.LightArrays`, the types as in `LIGHT_TYPES`.
    """
    arrays: LightArrays = pack_lighting(lighting)
    rows = [np.zeros((0, 4, 4))]

    def add(kind, positions, directions, colors, radii, cos_half, blends, areas) -> None:
        count = len(colors)
        block = np.zeros((count, 4, 4))
        block[:, 0, :3], block[:, 0, 3] = positions, LIGHT_TYPES[kind]
        block[:, 1, :3], block[:, 1, 3] = directions, np.asarray(radii) ** 2
        block[:, 2, :3], block[:, 2, 3] = colors, cos_half
        block[:, 3, 0], block[:, 3, 1] = blends, areas
        rows.append(block)

    suns = len(arrays.sun_irradiance)
    add("SUN", np.zeros((suns, 3)), arrays.sun_directions, arrays.sun_irradiance, np.zeros(suns), 0, 0, 0)
    add("POINT", arrays.point_positions, np.zeros_like(arrays.point_positions), arrays.point_intensity,
        arrays.point_radii, 0, 0, 0)  # fmt: skip
    add("SPOT", arrays.spot_positions, arrays.spot_directions, arrays.spot_intensity, arrays.spot_radii,
        arrays.spot_cos_half_angles, arrays.spot_blends, 0)  # fmt: skip
    no_radii = np.zeros(len(arrays.area_sizes))
    add("AREA", arrays.area_positions, arrays.area_directions, arrays.area_intensity, no_radii, 0, 0,
        arrays.area_sizes)  # fmt: skip
    lights = np.concatenate(rows, axis=0)[:MAX_SHADER_LIGHTS]
    buffer = np.zeros((9 + 1 + LIGHT_ROWS * MAX_SHADER_LIGHTS, 4), dtype=np.float32)
    buffer[:9, :3] = arrays.ambient_sh
    buffer[9, 0] = len(lights)
    buffer[10 : 10 + LIGHT_ROWS * len(lights)] = lights.reshape(-1, 4)
    return buffer
