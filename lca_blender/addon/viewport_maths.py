"""The viewport's splat maths in numpy: sort order, screen quads, and Blender's lights for the shader.

Blender loads this module (numpy and the standard library only). The projection it draws with is
`maths/projection.py`; the lights are packed as `maths/shading.py` packs them for the engine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..maths.lights import AmbientSH, AreaLight, Light, Lighting, PointLight, SpotLight, SunLight
from ..maths.shading import LightArrays, pack_lighting

MAX_SHADER_LIGHTS = 64  # lights.MAX_LIGHTS: the uniform buffer holds this many
LIGHT_ROWS = 4  # vec4 rows per light in the uniform buffer (see `shader_light_rows`)
LIGHT_TYPES = {"SUN": 0, "POINT": 1, "SPOT": 2, "AREA": 3}


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

    def add(kind, positions, colors, directions=0.0, radii=0.0, cos_half=0.0, blends=0.0, areas=0.0) -> None:
        # Fields a light type lacks stay 0 (a point light has no direction, a sun no position).
        count = len(colors)
        block = np.zeros((count, 4, 4))
        block[:, 0, :3], block[:, 0, 3] = positions, LIGHT_TYPES[kind]
        block[:, 1, :3], block[:, 1, 3] = directions, np.asarray(radii) ** 2
        block[:, 2, :3], block[:, 2, 3] = colors, cos_half
        block[:, 3, 0], block[:, 3, 1] = blends, areas
        rows.append(block)

    add("SUN", 0.0, arrays.sun_irradiance, directions=arrays.sun_directions)
    add("POINT", arrays.point_positions, arrays.point_intensity, radii=arrays.point_radii)
    spot_cones = {"cos_half": arrays.spot_cos_half_angles, "blends": arrays.spot_blends}
    add(
        "SPOT",
        arrays.spot_positions,
        arrays.spot_intensity,
        arrays.spot_directions,
        arrays.spot_radii,
        **spot_cones,
    )
    add("AREA", arrays.area_positions, arrays.area_intensity, arrays.area_directions, areas=arrays.area_sizes)
    lights = np.concatenate(rows, axis=0)[:MAX_SHADER_LIGHTS]
    buffer = np.zeros((9 + 1 + LIGHT_ROWS * MAX_SHADER_LIGHTS, 4), dtype=np.float32)
    buffer[:9, :3] = arrays.ambient_sh
    buffer[9, 0] = len(lights)
    buffer[10 : 10 + LIGHT_ROWS * len(lights)] = lights.reshape(-1, 4)
    return buffer
