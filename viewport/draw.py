"""Draws the previewed splats: the 3D viewport's POST_VIEW handler and offscreen draws for final frames.

Each splats object's `state.SplatPreview` becomes GPU vertex buffers (4 vertices a Gaussian, filled
from numpy with `attr_fill`), re-uploaded only when its version changes; the back-to-front order
(numpy argsort on the CPU, premultiplied "over" blending) and the "as captured" colours (spherical
harmonics evaluated in numpy for the eye) only when the view or the version changes. Splats are
depth-tested against the scene (LESS_EQUAL, no depth write), so meshes in front hide them.
Colours reach the framebuffer scene-linear and premultiplied (see `viewport/shaders.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import bpy
import gpu
import numpy as np

from ..lca_blender.addon.viewport_maths import (
    QUAD_CORNERS,
    BlenderLight,
    SortCache,
    lighting_from_blender,
    per_corner,
    quad_triangles,
    shader_light_rows,
)
from ..lca_blender.maths.colour import srgb_to_linear
from ..lca_blender.maths.lights import Lighting
from ..lca_blender.maths.projection import covariances
from ..lca_blender.maths.shading import captured_colors, gaussian_normals, view_directions
from . import state
from .shaders import COLOR_ATTRIBUTES, GEOMETRY_ATTRIBUTES, splat_shader, vertex_format

_GPU_KEY = "gpu"  # SplatPreview.extras entry holding a preview's `_GpuSplats`


@dataclass(frozen=True)
class DrawSettings:
    """How one splats object is drawn (its `Object.lca` settings)."""

    look: str = "CAPTURED"  # CAPTURED or RELIT
    splat_scale: float = 1.0
    opacity: float = 1.0
    antialiased: bool = False  # opacities compensated for the low-pass filter (maths/projection.py)


def object_settings(object_name: str) -> DrawSettings | None:
    """The draw settings of a splats object; None when its preview is off."""
    obj = bpy.data.objects.get(object_name)
    settings = getattr(obj, "lca", None)
    if settings is None:
        return DrawSettings()
    if not settings.preview:
        return None
    return DrawSettings(settings.look, settings.splat_scale, settings.opacity, settings.antialiased)


def scene_lighting(scene: bpy.types.Scene, *, for_render: bool = False) -> Lighting:
    """The scene's lights (visible in the viewport, or enabled for renders) and its world colour."""
    lights = []
    for obj in scene.objects:
        visible = not obj.hide_render if for_render else obj.visible_get()
        if obj.type != "LIGHT" or not visible:
            continue
        light = obj.data
        lights.append(
            BlenderLight(
                kind=light.type,
                matrix_world=np.array(obj.matrix_world),
                color=tuple(light.color),
                energy=light.energy,
                radius=getattr(light, "shadow_soft_size", 0.0),
                spot_size=getattr(light, "spot_size", 0.0),
                spot_blend=getattr(light, "spot_blend", 0.0),
                shape=getattr(light, "shape", "SQUARE"),
                size=getattr(light, "size", 1.0),
                size_y=getattr(light, "size_y", 1.0),
            )
        )
    color, strength = world_ambient(scene.world)
    return lighting_from_blender(lights, color, strength)


def world_ambient(world: bpy.types.World | None) -> tuple[tuple[float, float, float], float]:
    """The world's uniform colour and strength: its Background node's, else its viewport colour."""
    if world is None:
        return (0.0, 0.0, 0.0), 0.0
    if _world_uses_nodes(world):
        for node in world.node_tree.nodes:
            if node.type == "BACKGROUND":
                return tuple(node.inputs["Color"].default_value)[:3], float(
                    node.inputs["Strength"].default_value
                )
    return tuple(world.color), 1.0


def _world_uses_nodes(world: bpy.types.World) -> bool:
    # Blender 5.0 renders every world with its nodes and deprecates `use_nodes` (gone in 6.0).
    if bpy.app.version >= (5, 0, 0):
        return world.node_tree is not None
    return world.use_nodes and world.node_tree is not None


class _GpuSplats:
    """A preview's GPU buffers and sort order, each rebuilt only when what it depends on changed."""

    def __init__(self) -> None:
        self.sort = SortCache()
        self.geometry: gpu.types.GPUVertBuf | None = None
        self.geometry_version: int | None = None
        self.colors: gpu.types.GPUVertBuf | None = None
        self.colors_key: tuple | None = None
        self.batch: gpu.types.GPUBatch | None = None

    def batch_for(
        self, preview: state.SplatPreview, view_matrix: np.ndarray, look: str
    ) -> gpu.types.GPUBatch:
        changed = False
        if self.geometry_version != preview.version:
            self.geometry = _geometry_buffer(preview)
            self.geometry_version = preview.version
            changed = True
        order, sorted_now = self.sort.order_for(preview.means, view_matrix, preview.version)
        colors_key = (look, preview.version, self.sort.key if look == "CAPTURED" else None)
        if self.colors_key != colors_key:
            self.colors = _color_buffer(preview, view_matrix, look)
            self.colors_key = colors_key
            changed = True
        if changed or sorted_now or self.batch is None:
            indices = gpu.types.GPUIndexBuf(type="TRIS", seq=quad_triangles(order).reshape(-1, 3))
            self.batch = gpu.types.GPUBatch(type="TRIS", buf=self.geometry, elem=indices)
            self.batch.vertbuf_add(self.colors)
        return self.batch


def _geometry_buffer(preview: state.SplatPreview) -> gpu.types.GPUVertBuf:
    count = len(preview.means)
    buffer = gpu.types.GPUVertBuf(vertex_format(GEOMETRY_ATTRIBUTES), 4 * count)
    triangles = covariances(preview.rotations, preview.scales)
    normals = gaussian_normals(preview.rotations, preview.scales) * preview.outward_signs[:, None]
    material = np.stack([preview.opacities, preview.roughness, preview.specular], axis=1)
    buffer.attr_fill("corner", np.tile(QUAD_CORNERS, (count, 1)))
    buffer.attr_fill("center", per_corner(preview.means))
    buffer.attr_fill("cov_a", per_corner(triangles[:, :3]))
    buffer.attr_fill("cov_b", per_corner(triangles[:, 3:]))
    buffer.attr_fill("normal", per_corner(normals))
    buffer.attr_fill("material", per_corner(material))
    return buffer


def _color_buffer(preview: state.SplatPreview, view_matrix: np.ndarray, look: str) -> gpu.types.GPUVertBuf:
    if look == "RELIT":
        colors = preview.albedo
    else:
        colors = srgb_to_linear(captured_colors(preview.sh, _view_dirs(preview.means, view_matrix)))
    buffer = gpu.types.GPUVertBuf(vertex_format(COLOR_ATTRIBUTES), 4 * len(preview.means))
    buffer.attr_fill("color", per_corner(colors))
    return buffer


def _view_dirs(means: np.ndarray, view_matrix: np.ndarray) -> np.ndarray:
    """[N, 3] unit directions from the Gaussians towards the eye of `view_matrix`."""
    return view_directions(means.astype(np.float64), _eye_position(view_matrix))


def _eye_position(view_matrix: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.asarray(view_matrix, np.float64))[:3, 3]


def _frame_uniforms(
    view_matrix: np.ndarray,
    projection_matrix: np.ndarray,
    viewport: Sequence[float],
    lighting: Lighting,
) -> gpu.types.GPUUniformBuf:
    view = np.asarray(view_matrix, np.float64)
    projection = np.asarray(projection_matrix, np.float64)
    if abs(projection[3, 3]) > 1e-9:  # orthographic: the eye is at infinity behind the view
        eye = np.append(np.linalg.inv(view)[:3, 2], 0.0)
    else:
        eye = np.append(_eye_position(view), 1.0)
    data = np.concatenate(
        [
            view.T.ravel(),  # std140 matrices are column-major
            projection.T.ravel(),
            np.asarray(viewport, np.float64),
            eye,
            shader_light_rows(lighting).ravel(),
        ]
    ).astype(np.float32)
    return gpu.types.GPUUniformBuf(data.tobytes())


def draw_previews(
    previews: Mapping[str, state.SplatPreview],
    view_matrix: np.ndarray,  # [4, 4] world to camera, Blender
    projection_matrix: np.ndarray,  # [4, 4] camera to clip
    viewport: Sequence[float],  # (x, y, width, height) of the region in the bound framebuffer
    lighting: Lighting,
    settings: Mapping[str, DrawSettings | None],
) -> None:
    """Draw the previews into the bound framebuffer over its colour and against its depth."""
    shader = splat_shader()
    view_matrix = np.asarray(view_matrix, np.float64)
    uniforms = _frame_uniforms(view_matrix, projection_matrix, viewport, lighting)
    gpu.state.blend_set("ALPHA_PREMULT")
    gpu.state.depth_test_set("LESS_EQUAL")
    gpu.state.depth_mask_set(False)
    try:
        shader.bind()
        shader.uniform_block("frame", uniforms)
        for name, preview in previews.items():
            look = settings.get(name)
            if look is None or len(preview.means) == 0:
                continue
            splats = preview.extras.setdefault(_GPU_KEY, _GpuSplats())
            batch = splats.batch_for(preview, view_matrix, look.look)
            shader.uniform_float(
                "object_params",
                (look.splat_scale**2, look.opacity, float(look.look == "RELIT"), float(look.antialiased)),
            )
            batch.draw(shader)
    finally:
        gpu.state.blend_set("NONE")
        gpu.state.depth_test_set("NONE")
        gpu.state.depth_mask_set(True)


def sort_count(preview: state.SplatPreview) -> int:
    """How many times the preview's splats have been sorted (0 before its first draw)."""
    splats = preview.extras.get(_GPU_KEY)
    return splats.sort.sort_count if splats else 0


def draw_offscreen(
    previews: Mapping[str, state.SplatPreview],
    view_matrix: np.ndarray,  # [4, 4] world to camera, Blender
    projection_matrix: np.ndarray,  # [4, 4] camera to clip
    width: int,
    height: int,
    *,
    lighting: Lighting | None = None,
    settings: Mapping[str, DrawSettings | None] | None = None,
    occluders: Iterable[np.ndarray] = (),  # [T, 3, 3] world-space triangles that hide splats
) -> np.ndarray:
    """[H, W, 4] float32 scene-linear premultiplied RGBA of the splats alone, top row first.

    The viewport's shader drawn into a float `GPUOffScreen`. `lighting` defaults to the context
    scene's, `settings` to each object's `Object.lca`. `occluders` are drawn into the depth buffer
    only, so that meshes of the scene hide the splats behind them. Needs a GPU context.
    """
    if lighting is None:
        lighting = scene_lighting(bpy.context.scene, for_render=True)
    if settings is None:
        settings = {name: object_settings(name) for name in previews}
    offscreen = gpu.types.GPUOffScreen(width, height, format="RGBA32F")
    try:
        with offscreen.bind():
            framebuffer = gpu.state.active_framebuffer_get()
            framebuffer.clear(color=(0.0, 0.0, 0.0, 0.0), depth=1.0)
            _draw_depth_only(occluders, view_matrix, projection_matrix)
            draw_previews(previews, view_matrix, projection_matrix, (0, 0, width, height), lighting, settings)
            pixels = framebuffer.read_color(0, 0, width, height, 4, 0, "FLOAT")
            pixels.dimensions = width * height * 4
            image = np.array(pixels, dtype=np.float32).reshape(height, width, 4)
    finally:
        offscreen.free()
    return image[::-1].copy()


def _draw_depth_only(triangles: Iterable[np.ndarray], view_matrix, projection_matrix) -> None:
    triangles = [np.asarray(block, np.float32).reshape(-1, 3) for block in triangles]
    if not triangles:
        return
    from gpu_extras.batch import batch_for_shader

    shader = gpu.shader.from_builtin("UNIFORM_COLOR")
    batch = batch_for_shader(shader, "TRIS", {"pos": np.concatenate(triangles)})
    gpu.state.depth_test_set("LESS_EQUAL")
    gpu.state.depth_mask_set(True)
    gpu.state.color_mask_set(False, False, False, False)
    try:
        with gpu.matrix.push_pop(), gpu.matrix.push_pop_projection():
            gpu.matrix.load_matrix(_mathutils_matrix(view_matrix))
            gpu.matrix.load_projection_matrix(_mathutils_matrix(projection_matrix))
            shader.uniform_float("color", (0.0, 0.0, 0.0, 1.0))
            batch.draw(shader)
    finally:
        gpu.state.color_mask_set(True, True, True, True)
        gpu.state.depth_test_set("NONE")


def _mathutils_matrix(matrix):
    import mathutils

    return mathutils.Matrix(np.asarray(matrix, np.float64).tolist())


def _draw_in_view3d() -> None:
    """The POST_VIEW callback: every previewed splats object, in the region being drawn."""
    context = bpy.context
    region_data = context.region_data
    previews = state.previews()
    if region_data is None or not previews:
        return
    settings = {name: object_settings(name) for name in previews}
    draw_previews(
        previews,
        np.array(region_data.view_matrix),
        np.array(region_data.window_matrix),
        gpu.state.viewport_get(),
        scene_lighting(context.scene),
        settings,
    )


_handle = None


def register() -> None:
    global _handle
    _handle = bpy.types.SpaceView3D.draw_handler_add(_draw_in_view3d, (), "WINDOW", "POST_VIEW")


def unregister() -> None:
    global _handle
    if _handle is not None:
        bpy.types.SpaceView3D.draw_handler_remove(_handle, "WINDOW")
        _handle = None
