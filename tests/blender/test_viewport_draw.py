"""The splat draw: offscreen GPU draws against the engine's renderer, depth occlusion, sorting, unregister."""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import bpy
import numpy as np
import pytest
from conftest import REPO_ROOT, engine_reference

PARITY_PNG = REPO_ROOT / ".cache" / "blender-home" / "viewport_parity.png"
WIDTH, HEIGHT = 160, 120
# The GPU draw (float32) against the engine's renderer (float64), in linear RGBA: 8e-6 was measured
# (Mesa llvmpipe); float32 blending of a few hundred splats a pixel can reach some 1e-5.
MAX_PARITY_DIFFERENCE = 1e-4

_GPU_PROBE = """
import bpy, gpu
scene = bpy.context.scene
scene.render.engine = "BLENDER_WORKBENCH"
scene.render.resolution_x = scene.render.resolution_y = 8
bpy.ops.render.render(write_still=False)
offscreen = gpu.types.GPUOffScreen(4, 4)
offscreen.free()
"""


def _sandbox_env() -> dict[str, str]:
    return dict(os.environ)


@pytest.fixture(scope="module")
def gpu_ready() -> None:
    """The GPU module initialised by one 8x8 Workbench render, once it is known not to kill the process."""
    probe = subprocess.run(
        [sys.executable, "-c", _GPU_PROBE], capture_output=True, text=True, timeout=120, env=_sandbox_env()
    )
    if probe.returncode != 0:
        pytest.skip(f"the GPU module does not work headless here: {probe.stderr[-400:]}")
    scene = bpy.context.scene
    if scene.camera is None:
        camera = bpy.data.objects.new("gpu init camera", bpy.data.cameras.new("gpu init camera"))
        scene.collection.objects.link(camera)
        scene.camera = camera
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x = scene.render.resolution_y = 8
    bpy.ops.render.render(write_still=False)


@pytest.fixture
def addon(gpu_ready: None, enabled_extension: ModuleType) -> dict[str, ModuleType]:
    name = enabled_extension.__name__
    return {
        part: importlib.import_module(f"{name}.{path}")
        for part, path in (
            ("draw", "viewport.draw"),
            ("state", "viewport.state"),
            ("shading", "lca_blender.maths.shading"),
            ("colour", "lca_blender.maths.colour"),
            ("sh", "lca_blender.maths.sh"),
            ("projection", "lca_blender.maths.projection"),
            ("render_frames", "operators.render_frames"),
        )
    }


def _camera(scene: bpy.types.Scene) -> bpy.types.Object:
    """A camera 4 m in front of the origin (on -Y), looking along +Y, with a lens shift."""
    data = bpy.data.cameras.new("parity camera")
    data.lens, data.shift_x, data.shift_y = 40.0, 0.04, -0.03
    data.clip_start, data.clip_end = 0.1, 50.0
    camera = bpy.data.objects.new("parity camera", data)
    scene.collection.objects.link(camera)
    camera.location = (0.1, -4.0, 0.15)
    camera.rotation_euler = (math.radians(88.0), 0.0, math.radians(2.0))
    scene.camera = camera
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = (
        WIDTH,
        HEIGHT,
        100,
    )
    for obj in scene.objects:  # the start-up scene's cube would hide the test's splats
        if obj.type == "MESH":
            obj.hide_render = True
    bpy.context.view_layer.update()
    return camera


def _preview(state: ModuleType, count: int = 400, seed: int = 7):
    rng = np.random.default_rng(seed)
    rotations = rng.normal(size=(count, 4))
    rotations /= np.linalg.norm(rotations, axis=1, keepdims=True)
    scales = np.exp(rng.uniform(np.log(0.01), np.log(0.09), size=(count, 3)))
    scales[np.arange(count), rng.integers(0, 3, count)] *= 0.1  # thin discs, as the avatars' are
    sh = rng.normal(0.0, 0.08, size=(count, 16, 3))
    sh[:, 0] = rng.normal(0.0, 0.6, size=(count, 3))
    return state.SplatPreview(
        means=rng.uniform(-0.8, 0.8, size=(count, 3)).astype(np.float32),
        rotations=rotations.astype(np.float32),
        scales=scales.astype(np.float32),
        opacities=rng.uniform(0.2, 0.95, count).astype(np.float32),
        sh=sh.astype(np.float32),
        albedo=rng.uniform(0.1, 0.9, size=(count, 3)).astype(np.float32),
        roughness=rng.uniform(0.2, 0.9, count).astype(np.float32),
        specular=rng.uniform(0.0, 1.0, count).astype(np.float32),
        outward_signs=rng.choice([-1.0, 1.0], count).astype(np.float32),
    )


def _add_light(scene, kind: str, location, rotation, energy: float, **settings) -> None:
    data = bpy.data.lights.new(f"parity {kind.lower()}", kind)
    data.energy = energy
    for key, value in settings.items():
        setattr(data, key, value)
    light = bpy.data.objects.new(data.name, data)
    light.location, light.rotation_euler = location, rotation
    scene.collection.objects.link(light)


def _lit_scene(scene: bpy.types.Scene) -> None:
    _add_light(scene, "SUN", (0, 0, 5), (math.radians(60), 0, math.radians(30)), 2.0, color=(1.0, 0.9, 0.8))
    _add_light(scene, "POINT", (1.5, -2.0, 1.0), (0, 0, 0), 150.0, shadow_soft_size=0.2)
    _add_light(scene, "SPOT", (-1.5, -2.5, 1.5), (math.radians(55), 0, math.radians(-35)), 300.0,
               spot_size=math.radians(60), spot_blend=0.3, color=(0.6, 0.8, 1.0))  # fmt: skip
    _add_light(scene, "AREA", (0.0, -2.0, -1.5), (math.radians(130), 0, 0), 80.0, shape="RECTANGLE",
               size=0.6, size_y=0.3)  # fmt: skip
    if scene.world is None:
        scene.world = bpy.data.worlds.new("parity world")
    if bpy.app.version < (5, 0, 0):  # 5.0 always renders the world's nodes and deprecates the switch
        scene.world.use_nodes = True
    background = next(node for node in scene.world.node_tree.nodes if node.type == "BACKGROUND")
    background.inputs["Color"].default_value = (0.05, 0.06, 0.08, 1.0)
    background.inputs["Strength"].default_value = 1.0
    bpy.context.view_layer.update()


def _save_side_by_side(rows: list[tuple[np.ndarray, np.ndarray]], colour: ModuleType) -> None:
    """Display-encoded images over grey, each row: the offscreen draw | the engine's reference."""
    tiles = []
    for ours, reference in rows:
        pair = [image[..., :3] + (1 - image[..., 3:]) * 0.18 for image in (ours, reference)]
        gap = np.ones((HEIGHT, 4, 3))
        tiles.append(np.concatenate([pair[0], gap, pair[1]], axis=1))
    picture = colour.linear_to_srgb(np.clip(np.concatenate(tiles, axis=0), 0, 1))
    height, width = picture.shape[:2]
    rgba = np.concatenate([picture, np.ones((height, width, 1))], axis=2)[::-1]
    PARITY_PNG.parent.mkdir(parents=True, exist_ok=True)
    image = bpy.data.images.new("viewport parity", width, height, alpha=True)
    try:
        image.pixels.foreach_set(rgba.astype(np.float32).ravel())
        image.filepath_raw = str(PARITY_PNG)
        image.file_format = "PNG"
        image.save()
    finally:
        bpy.data.images.remove(image)


def test_offscreen_draw_matches_the_engine_renderer(addon: dict[str, ModuleType], tmp_path: Path) -> None:
    draw, state, shading, colour = addon["draw"], addon["state"], addon["shading"], addon["colour"]
    projection_maths = addon["projection"]
    scene = bpy.context.scene
    camera = _camera(scene)
    _lit_scene(scene)
    preview = _preview(state)
    view = np.array(camera.matrix_world.inverted())
    projection = np.array(camera.calc_matrix_camera(bpy.context.evaluated_depsgraph_get(), x=WIDTH, y=HEIGHT))
    lighting = draw.scene_lighting(scene, for_render=True)
    assert {type(light).__name__ for light in lighting.lights} == {
        "SunLight",
        "PointLight",
        "SpotLight",
        "AreaLight",
    }

    images = {}
    for look in ("CAPTURED", "RELIT"):
        images[look] = draw.draw_offscreen(
            {"avatar_splats": preview}, view, projection, WIDTH, HEIGHT,
            lighting=lighting, settings={"avatar_splats": draw.DrawSettings(look=look)},
        )  # fmt: skip
    images["ANTIALIASED"] = draw.draw_offscreen(
        {"avatar_splats": preview}, view, projection, WIDTH, HEIGHT,
        lighting=lighting, settings={"avatar_splats": draw.DrawSettings(antialiased=True)},
    )  # fmt: skip

    eye = np.linalg.inv(view)[:3, 3]
    view_dirs = shading.view_directions(preview.means.astype(np.float64), eye)
    normals = shading.gaussian_normals(preview.rotations, preview.scales) * preview.outward_signs[:, None]
    relit = shading.relight(
        preview.means.astype(np.float64), normals, view_dirs, preview.albedo, preview.roughness,
        preview.specular, lighting,
    )  # fmt: skip
    viewmat, K = projection_maths.opencv_camera(view, projection, WIDTH, HEIGHT)
    reference = engine_reference(
        tmp_path,
        {
            "means": preview.means, "quats": preview.rotations, "scales": preview.scales,
            "opacities": preview.opacities, "sh": preview.sh, "relit": relit, "viewmat": viewmat, "K": K,
            "size": np.array([WIDTH, HEIGHT]),
        },
        looks=("captured", "relit", "captured_antialiased"),
    )  # fmt: skip
    _save_side_by_side(
        [(images["CAPTURED"], reference["captured"]), (images["RELIT"], reference["relit"])], colour
    )
    covered = reference["captured"][..., 3].mean()
    assert covered > 0.1, "the test's splats should cover a good part of the image"
    difference = {look: float(np.abs(images[look] - reference[name]).max())
                  for look, name in (("CAPTURED", "captured"), ("RELIT", "relit"))}  # fmt: skip
    # Antialiased: the compensation shows (the splats include discs under a pixel thick) and the
    # preview has it. The shader's float32 determinant of an edge-on disc's nearly singular 2D
    # covariance is coarse: measured, 2 of 76,800 values over 1e-4 (largest 3.7e-3), the 99.9th
    # percentile 1.7e-6.
    antialiased = np.abs(images["ANTIALIASED"] - reference["captured_antialiased"])
    assert np.abs(reference["captured_antialiased"] - reference["captured"]).max() > 0.1
    assert antialiased.max() <= 1e-2 and (antialiased > MAX_PARITY_DIFFERENCE).mean() <= 1e-4
    print(f"viewport parity, largest difference (linear RGBA): {difference}; images in {PARITY_PNG}")
    assert max(difference.values()) <= MAX_PARITY_DIFFERENCE, difference


def test_meshes_in_front_hide_the_splats(addon: dict[str, ModuleType]) -> None:
    draw, state, render_frames = addon["draw"], addon["state"], addon["render_frames"]
    scene = bpy.context.scene
    camera = _camera(scene)
    preview = _preview(state)
    view = np.array(camera.matrix_world.inverted())
    depsgraph = bpy.context.evaluated_depsgraph_get()
    projection = np.array(camera.calc_matrix_camera(depsgraph, x=WIDTH, y=HEIGHT))
    settings = {"avatar_splats": draw.DrawSettings()}
    lighting = draw.scene_lighting(scene)
    open_view = draw.draw_offscreen({"avatar_splats": preview}, view, projection, WIDTH, HEIGHT,
                                    lighting=lighting, settings=settings)  # fmt: skip

    mesh = bpy.data.meshes.new("occluder")
    half = 0.25
    corners = [(x, y, z) for x in (-half, half) for y in (-half, half) for z in (-half, half)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh.from_pydata(corners, [], faces)
    cube = bpy.data.objects.new("occluder", mesh)
    cube.location = (-0.3, -2.0, 0.0)  # between the camera and the splats, covering the left part
    scene.collection.objects.link(cube)
    try:
        depsgraph = bpy.context.evaluated_depsgraph_get()
        depsgraph.update()
        occluders = render_frames.scene_occluders(scene, depsgraph)
        assert sum(len(block) for block in occluders) == 12
        hidden = draw.draw_offscreen({"avatar_splats": preview}, view, projection, WIDTH, HEIGHT,
                                     lighting=lighting, settings=settings, occluders=occluders)  # fmt: skip
    finally:
        bpy.data.objects.remove(cube)
        bpy.data.meshes.remove(mesh)

    # Inside the cube's face towards the camera (a near-rectangle on screen) and around its outline.
    viewmat, K = addon["projection"].opencv_camera(view, projection, WIDTH, HEIGHT)
    world = np.array(corners) + np.array([-0.3, -2.0, 0.0])
    outline = world @ viewmat[:3, :3].T + viewmat[:3, 3]
    outline = outline @ K.T
    outline = outline[:, :2] / outline[:, 2:]
    world = world[world[:, 1] < -2.0]
    camera_points = world @ viewmat[:3, :3].T + viewmat[:3, 3]
    pixels = camera_points @ K.T
    pixels = pixels[:, :2] / pixels[:, 2:]
    left, top = np.ceil(pixels.min(0)).astype(int) + 3
    right, bottom = np.floor(pixels.max(0)).astype(int) - 3
    assert open_view[top:bottom, left:right, 3].mean() > 0.15, "splats should be behind the cube"
    assert np.all(hidden[top:bottom, left:right, 3] == 0.0)
    outside = np.ones((HEIGHT, WIDTH), bool)
    (out_left, out_top), (out_right, out_bottom) = outline.min(0).astype(int), outline.max(0).astype(int)
    outside[out_top - 2 : out_bottom + 3, out_left - 2 : out_right + 3] = False
    np.testing.assert_allclose(hidden[outside], open_view[outside], atol=1e-5)


def test_sorts_only_when_the_view_or_the_pose_changes(addon: dict[str, ModuleType]) -> None:
    draw, state = addon["draw"], addon["state"]
    scene = bpy.context.scene
    camera = _camera(scene)
    projection = np.array(camera.calc_matrix_camera(bpy.context.evaluated_depsgraph_get(), x=32, y=24))
    view = np.array(camera.matrix_world.inverted())
    state.set_preview("avatar_splats", _preview(state, count=50))
    try:
        settings = {"avatar_splats": draw.DrawSettings()}
        lighting = draw.scene_lighting(scene)

        def draw_view(view_matrix: np.ndarray) -> int:
            draw.draw_offscreen(state.previews(), view_matrix, projection, 32, 24, lighting=lighting,
                                settings=settings)  # fmt: skip
            return draw.sort_count(state.get_preview("avatar_splats"))

        assert draw_view(view) == 1
        assert draw_view(view) == 1
        turned = view.copy()
        turned[:3, 3] += (0.05, 0.0, 0.0)
        assert draw_view(turned) == 2
        assert draw_view(turned) == 2
        preview = state.get_preview("avatar_splats")
        preview.version += 1  # what the posing handlers do, through set_preview
        assert draw_view(turned) == 3
        assert draw_view(turned) == 3
    finally:
        state.remove_preview("avatar_splats")


def test_back_to_front_order_is_what_is_drawn(addon: dict[str, ModuleType]) -> None:
    """Two overlapping opaque splats: the nearer one's colour wins, whichever is stored first."""
    draw, state = addon["draw"], addon["state"]
    scene = bpy.context.scene
    camera = _camera(scene)
    view = np.array(camera.matrix_world.inverted())
    projection = np.array(camera.calc_matrix_camera(bpy.context.evaluated_depsgraph_get(), x=32, y=24))
    forward = -np.linalg.inv(view)[:3, 2]
    eye = np.linalg.inv(view)[:3, 3]
    images = []
    for near_first in (True, False):
        means = np.array([eye + 3.0 * forward, eye + 4.0 * forward], np.float32)
        sh = np.zeros((2, 1, 3), np.float32)
        sh[0, 0] = (1.5, -1.7, -1.7)  # red, near
        sh[1, 0] = (-1.7, -1.7, 1.5)  # blue, far
        order = slice(None) if near_first else slice(None, None, -1)
        preview = state.SplatPreview(
            means=means[order], rotations=np.tile([1.0, 0, 0, 0], (2, 1)).astype(np.float32),
            scales=np.full((2, 3), 0.3, np.float32), opacities=np.full(2, 0.99, np.float32), sh=sh[order],
            albedo=np.ones((2, 3), np.float32), roughness=np.ones(2, np.float32),
            specular=np.zeros(2, np.float32), outward_signs=np.ones(2, np.float32),
        )  # fmt: skip
        lighting = draw.scene_lighting(scene)
        image = draw.draw_offscreen({"s": preview}, view, projection, 32, 24, lighting=lighting,
                                    settings={"s": draw.DrawSettings()})  # fmt: skip
        images.append(image)
    red, blue = images[0][12, 16, 0], images[0][12, 16, 2]
    assert red > 0.6 and blue < 0.15, images[0][12, 16]
    np.testing.assert_allclose(images[0], images[1], atol=1e-6)


def _frames_scene(scene: bpy.types.Scene, tmp_path: Path, width: int, height: int) -> bpy.types.Object:
    """The test camera, a Workbench render of the world alone, frames 1-2 written as 8-bit sRGB PNGs."""
    camera = _camera(scene)
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.film_transparent = False
    scene.render.dither_intensity = 0.0  # dithering would add noise to the 8-bit frames
    scene.view_settings.view_transform, scene.view_settings.look = "Standard", "None"
    scene.view_settings.exposure, scene.view_settings.gamma = 0.0, 1.0
    scene.render.image_settings.file_format, scene.render.image_settings.color_mode = "PNG", "RGB"
    scene.render.image_settings.color_depth = "8"
    scene.render.filepath = str(tmp_path / "frame_")
    scene.frame_start, scene.frame_end, scene.frame_step = 1, 2, 1
    return camera


# Three opaque round splats far apart, each with one flat colour (display sRGB, SH degree 0).
_DOT_CENTRES = np.array([[-0.8, 0.0, 0.3], [0.8, 0.0, 0.3], [0.0, 0.0, -0.6]])
_DOT_COLOURS = np.array([[0.9, 0.15, 0.1], [0.1, 0.8, 0.2], [0.15, 0.2, 0.9]])
_DOT_SIGMA_M = 0.12


def _dots(state: ModuleType, sh_maths: ModuleType):
    count = len(_DOT_CENTRES)
    sh = ((_DOT_COLOURS - 0.5) / sh_maths.SH_C0)[:, None, :]  # a flat colour c is 0.5 + C0 sh
    return state.SplatPreview(
        means=_DOT_CENTRES.astype(np.float32),
        rotations=np.tile([1.0, 0, 0, 0], (count, 1)).astype(np.float32),
        scales=np.full((count, 3), _DOT_SIGMA_M, np.float32),
        opacities=np.ones(count, np.float32),
        sh=sh.astype(np.float32),
        albedo=np.ones((count, 3), np.float32),
        roughness=np.ones(count, np.float32),
        specular=np.zeros(count, np.float32),
        outward_signs=np.ones(count, np.float32),
    )


def test_render_frames_composites_the_splats_where_the_camera_sees_them(
    addon: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each splat shows in the written frame at its mean as projected by Blender's own camera maths
    (`world_to_camera_view`, not the add-on's projection), in its colour, and nothing else is drawn."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    state, colour = addon["state"], addon["colour"]
    projection_maths = addon["projection"]
    # The preview is built here, not from a splats object: keep the posing handlers from dropping it.
    posing = importlib.import_module(addon["draw"].__name__.rsplit(".", 1)[0] + ".posing")
    monkeypatch.setattr(posing, "update_previews", lambda *arguments, **settings: None)
    scene = bpy.context.scene
    width, height = 96, 72
    camera = _frames_scene(scene, tmp_path, width, height)
    state.set_preview("avatar_splats", _dots(state, addon["sh"]))
    try:
        assert bpy.ops.lca.render_frames() == {"FINISHED"}
    finally:
        state.remove_preview("avatar_splats")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["frame_0001.png", "frame_0002.png"]
    frame = _read_png(tmp_path / "frame_0001.png")[..., :3]  # display sRGB, bottom row first

    # Blender's camera maths: (x, y) across the frame from its bottom left, z the depth in metres.
    seen = np.array([world_to_camera_view(scene, camera, Vector(centre))[:] for centre in _DOT_CENTRES])
    centres = seen[:, :2] * (width, height)  # pixels; pixel (row i, column j) is centred on (j + .5, i + .5)
    focal = camera.data.lens / camera.data.sensor_width * width  # the sensor fits the frame's width
    # The splats' screen footprints (3DGS): f sigma / z across, up to sqrt(1 + tan^2) times that
    # along the direction from the centre of view, plus the low-pass filter.
    tangent_squared = ((_DOT_CENTRES - np.array(camera.location)) ** 2).sum(1) / seen[:, 2] ** 2 - 1
    across = (focal * _DOT_SIGMA_M / seen[:, 2]) ** 2
    sigma_least = np.sqrt(across + projection_maths.LOW_PASS)
    sigma_most = np.sqrt(across * (1 + tangent_squared) + projection_maths.LOW_PASS)
    # Beyond this many sigmas a fully opaque splat's alpha is below MIN_ALPHA and nothing is drawn.
    reach = sigma_most * np.sqrt(2 * np.log(1.0 / projection_maths.MIN_ALPHA)) + 0.5

    rows, columns = np.mgrid[0:height, 0:width]
    pixel_centres = np.stack([columns + 0.5, rows + 0.5], axis=-1)
    distances = np.linalg.norm(pixel_centres[:, :, None, :] - centres[None, None], axis=-1)  # [H, W, 3]
    background = frame[0, 0]
    far = (distances > reach).all(axis=2)
    assert far.mean() > 0.5
    np.testing.assert_array_equal(frame[far], np.broadcast_to(background, frame[far].shape))

    # The pixel nearest each centre is at most sqrt(0.5) px from it, where a splat's alpha is at
    # least exp(-0.25 / sigma^2) (and at most 0.99, the 3DGS cap): the composite there is the
    # splat's colour mixed with at most (1 - that) of the background, compared in linear light,
    # give or take one 8-bit step of the PNG (at most 2.4 / 1.055 / 255 in linear light).
    step = 2.4 / 1.055 / 255
    linear_background = colour.srgb_to_linear(background)
    for centre, dot_colour, sigma in zip(centres, _DOT_COLOURS, sigma_least, strict=True):
        column, row = np.floor(centre).astype(int)
        linear_dot = colour.srgb_to_linear(dot_colour)
        uncovered = 1 - min(np.exp(-0.25 / sigma**2), 0.99)
        bound = uncovered * (np.abs(linear_dot - linear_background) + step) + step
        found = colour.srgb_to_linear(frame[row, column])
        assert np.all(np.abs(found - linear_dot) <= bound), (centre, found, linear_dot, bound)


class _ScriptedEngine(bpy.types.RenderEngine):
    """A render engine that renders flat grey and, at the frames `plan` names, fails or is stopped."""

    bl_idname = "LCA_TEST_SCRIPTED"
    bl_label = "LCA test engine"
    plan: dict[int, str] = {}

    def render(self, depsgraph: bpy.types.Depsgraph) -> None:
        scene = depsgraph.scene
        width, height = (round(size * scene.render.resolution_percentage / 100) for size in (
            scene.render.resolution_x, scene.render.resolution_y))  # fmt: skip
        result = self.begin_result(0, 0, width, height)
        result.layers[0].passes["Combined"].rect = [(0.2, 0.2, 0.2, 1.0)] * (width * height)
        self.end_result(result)
        what = self.plan.get(scene.frame_current)
        if what == "error":
            self.report({"ERROR"}, "Out of GPU memory")
        elif what == "stopped":
            # Blender announces a render the artist stopped (Esc) through render_cancel; nothing in
            # the bpy module can stop one, so the engine makes that announcement itself.
            for handler in list(bpy.app.handlers.render_cancel):
                handler(depsgraph.scene, None)


@pytest.fixture
def scripted_engine() -> Iterator[type[_ScriptedEngine]]:
    bpy.utils.register_class(_ScriptedEngine)
    try:
        yield _ScriptedEngine
    finally:
        bpy.utils.unregister_class(_ScriptedEngine)
        _ScriptedEngine.plan = {}


def _render_frames_reports(render_frames: ModuleType) -> tuple[set[str], list[tuple[set[str], str]]]:
    """lca.render_frames run with its reports kept (bpy.ops raises on errors and drops warnings)."""
    reports: list[tuple[set[str], str]] = []
    shell = SimpleNamespace(report=lambda kind, message: reports.append((kind, message)))
    return render_frames.LCA_OT_render_frames.execute(shell, bpy.context), reports


def test_render_frames_reports_what_stopped_it_and_lets_bugs_through(
    addon: dict[str, ModuleType],
    scripted_engine: type[_ScriptedEngine],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    render_frames, draw, state = addon["render_frames"], addon["draw"], addon["state"]
    posing = importlib.import_module(draw.__name__.rsplit(".", 1)[0] + ".posing")
    monkeypatch.setattr(posing, "update_previews", lambda *arguments, **settings: None)
    scene = bpy.context.scene
    _frames_scene(scene, tmp_path / "frames", 32, 24)
    scene.render.engine = scripted_engine.bl_idname

    def written() -> list[str]:
        return sorted(path.name for path in (tmp_path / "frames").glob("*"))

    state.set_preview("avatar_splats", _dots(state, addon["sh"]))
    try:
        # The renderer's error stops the run; the frames before it stay.
        scripted_engine.plan = {2: "error"}
        frame_before = scene.frame_current
        stopped = "Stopped after 1 of 2 frames: Blender could not render frame 2: Out of GPU memory"
        assert _render_frames_reports(render_frames) == ({"CANCELLED"}, [({"ERROR"}, stopped)])
        assert written() == ["frame_0001.png"] and scene.frame_current == frame_before

        # The artist stopping Blender's render is a cancel, not an error.
        scripted_engine.plan = {2: "stopped"}
        cancelled = ({"CANCELLED"}, [({"WARNING"}, "Cancelled after 1 of 2 frames")])
        assert _render_frames_reports(render_frames) == cancelled
        scripted_engine.plan = {}

        # An output path that cannot be written is the artist's to fix.
        (tmp_path / "a file").write_bytes(b"")
        scene.render.filepath = str(tmp_path / "a file" / "frame_")
        result, reports = _render_frames_reports(render_frames)
        assert result == {"CANCELLED"} and [kind for kind, _ in reports] == [{"ERROR"}]
        assert reports[0][1].startswith("Stopped after 0 of 2 frames: Cannot write the frame"), reports
        scene.render.filepath = str(tmp_path / "frames" / "frame_")

        # Ctrl+C in the terminal that runs the bpy module is a cancel too.
        def interrupted(*arguments: object, **settings: object) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(draw, "draw_offscreen", interrupted)
        cancelled = ({"CANCELLED"}, [({"WARNING"}, "Cancelled after 0 of 2 frames")])
        assert _render_frames_reports(render_frames) == cancelled

        # Anything else is a bug: it reaches the artist with its traceback.
        def broken(*arguments: object, **settings: object) -> None:
            raise RuntimeError("a bug in the draw")

        monkeypatch.setattr(draw, "draw_offscreen", broken)
        with pytest.raises(RuntimeError, match=r"(?s)Traceback.*a bug in the draw"):
            bpy.ops.lca.render_frames()
    finally:
        state.remove_preview("avatar_splats")
        scene.render.engine = "BLENDER_WORKBENCH"


def _read_png(path: Path) -> np.ndarray:
    image = bpy.data.images.load(str(path))
    try:
        pixels = np.empty(image.size[0] * image.size[1] * 4, np.float32)
        image.pixels.foreach_get(pixels)
        return pixels.reshape(image.size[1], image.size[0], 4)
    finally:
        bpy.data.images.remove(image)


def test_render_frames_draws_an_imported_avatar_and_obeys_its_render_switch(
    addon: dict[str, ModuleType], core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    """An imported avatar appears in final frames; Cycles itself draws nothing for its points mesh;
    switching the splats object off for renders leaves them out (`core` removes the avatar after)."""
    scene = bpy.context.scene
    for obj in scene.objects:
        if obj.type == "MESH":
            obj.hide_render = True  # the start-up cube
    assert bpy.ops.lca.import_avatar(filepath=str(sample_lca)) == {"FINISHED"}
    splats = bpy.data.objects[f"{sample_lca.stem}_splats"]
    native = splats.modifiers.get("LCA Native Splats")
    if native is not None:
        # Blender 5.3+ renders the imported splats itself; without the modifier (a .blend made
        # before 5.3) they are the draw handler's points mesh, as here.
        splats.modifiers.remove(native)
        splats.lca.preview = True
    camera = bpy.data.objects.new("frames camera", bpy.data.cameras.new("frames camera"))
    scene.collection.objects.link(camera)
    camera.location, camera.rotation_euler = (0.0, -4.0, 0.9), (math.radians(90.0), 0.0, 0.0)
    scene.camera = camera
    scene.render.engine = "CYCLES"
    scene.cycles.samples, scene.cycles.use_denoising = 1, False
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 48, 64, 100
    scene.render.image_settings.file_format = "PNG"
    scene.frame_start = scene.frame_end = 1
    try:
        bpy.ops.render.render(write_still=False)
        cycles_alone = addon["render_frames"]._render_result_linear(scene, 48, 64)
        assert cycles_alone.std(axis=(0, 1)).max() < 1e-4, "Cycles drew something for the splats' points"

        scene.render.filepath = str(tmp_path / "with_")
        assert bpy.ops.lca.render_frames() == {"FINISHED"}
        splats.hide_render = True
        scene.render.filepath = str(tmp_path / "without_")
        assert bpy.ops.lca.render_frames() == {"FINISHED"}
    finally:
        scene.render.engine = "BLENDER_WORKBENCH"
        bpy.data.objects.remove(camera)
    with_splats, without = _read_png(tmp_path / "with_0001.png"), _read_png(tmp_path / "without_0001.png")
    assert without[..., :3].std(axis=(0, 1)).max() < 1e-3  # the world colour alone
    covered = np.abs(with_splats[..., :3] - without[..., :3]).max(axis=2) > 0.05
    # A 1.7 m person seen from 4 m through a 50 mm lens fills a good part of a portrait frame.
    assert 0.1 < covered.mean() < 0.6, covered.mean()
    rows, columns = np.nonzero(covered)
    assert abs(columns.mean() - 24) < 6  # standing in the middle of the frame


def test_unregister_removes_the_draw_handler(installed_extension, gpu_ready: None) -> None:
    root = installed_extension.enable()
    draw = importlib.import_module(f"{root.__name__}.viewport.draw")
    handle = draw._handle
    assert handle is not None
    installed_extension.disable()
    assert draw._handle is None
    with pytest.raises(ValueError):
        bpy.types.SpaceView3D.draw_handler_remove(handle, "WINDOW")
