"""The splat draw: offscreen GPU draws against the engine's renderer, depth occlusion, sorting, unregister."""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
PARITY_PNG = REPO_ROOT / ".cache" / "blender-home" / "viewport_parity.png"
WIDTH, HEIGHT = 160, 120
MIN_PSNR_DB = 30.0

_GPU_PROBE = """
import bpy, gpu
scene = bpy.context.scene
scene.render.engine = "BLENDER_WORKBENCH"
scene.render.resolution_x = scene.render.resolution_y = 8
bpy.ops.render.render(write_still=False)
offscreen = gpu.types.GPUOffScreen(4, 4)
offscreen.free()
"""

# Runs in the engine's environment (torch): the engine's renderer on the same Gaussians and camera.
_REFERENCE_SCRIPT = """
import sys
import numpy as np
import torch
from lca_blender.render import render
from lca_blender.render.sh import sh_to_color

scene = np.load(sys.argv[1])
t = {key: torch.from_numpy(np.asarray(scene[key], np.float64)) for key in scene.files}
viewmat, K = t["viewmat"][None], t["K"][None]
width, height = int(scene["size"][0]), int(scene["size"][1])
centre = -viewmat[0, :3, :3].T @ viewmat[0, :3, 3]
directions = t["means"] - centre
directions = directions / directions.norm(dim=1, keepdim=True)
display = sh_to_color(t["sh"], directions, 3)
linear = torch.where(display <= 0.04045, display / 12.92, ((display + 0.055) / 1.055) ** 2.4)
images = {}
for name, colors in (("captured", linear), ("relit", t["relit"])):
    result = render(t["means"], t["quats"], t["scales"], t["opacities"], colors, viewmat, K, width, height,
                    backend="torch")
    images[name] = torch.cat([result.color, result.alpha], -1)[0].numpy()
result = render(t["means"], t["quats"], t["scales"], t["opacities"], t["sh"], viewmat, K, width, height,
                sh_degree=3, backend="torch")
images["captured_display"] = torch.cat([result.color, result.alpha], -1)[0].numpy()
np.savez(sys.argv[2], **images)
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
    scene.world.use_nodes = True
    background = next(node for node in scene.world.node_tree.nodes if node.type == "BACKGROUND")
    background.inputs["Color"].default_value = (0.05, 0.06, 0.08, 1.0)
    background.inputs["Strength"].default_value = 1.0
    bpy.context.view_layer.update()


def _psnr(image: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((np.clip(image, 0, 1) - np.clip(reference, 0, 1)) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-20))


def _engine_reference(tmp_path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not ENGINE_PYTHON.exists():
        pytest.skip("the engine's environment (.venv, with torch) is not set up")
    scene_file, output = tmp_path / "scene.npz", tmp_path / "reference.npz"
    np.savez(scene_file, **arrays)
    result = subprocess.run(
        [str(ENGINE_PYTHON), "-c", textwrap.dedent(_REFERENCE_SCRIPT), str(scene_file), str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env={key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(output) as reference:
        return {key: reference[key] for key in reference.files}


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

    eye = np.linalg.inv(view)[:3, 3]
    view_dirs = shading.view_directions(preview.means.astype(np.float64), eye)
    normals = shading.gaussian_normals(preview.rotations, preview.scales) * preview.outward_signs[:, None]
    relit = shading.relight(
        preview.means.astype(np.float64), normals, view_dirs, preview.albedo, preview.roughness,
        preview.specular, lighting,
    )  # fmt: skip
    viewmat, K = projection_maths.opencv_camera(view, projection, WIDTH, HEIGHT)
    reference = _engine_reference(
        tmp_path,
        {
            "means": preview.means, "quats": preview.rotations, "scales": preview.scales,
            "opacities": preview.opacities, "sh": preview.sh, "relit": relit, "viewmat": viewmat, "K": K,
            "size": np.array([WIDTH, HEIGHT]),
        },
    )  # fmt: skip
    _save_side_by_side(
        [(images["CAPTURED"], reference["captured"]), (images["RELIT"], reference["relit"])], colour
    )
    covered = reference["captured"][..., 3].mean()
    assert covered > 0.1, "the test's splats should cover a good part of the image"
    psnr = {
        look: _psnr(colour.linear_to_srgb(np.clip(images[look], 0, 1)),
                    colour.linear_to_srgb(np.clip(reference[name], 0, 1)))
        for look, name in (("CAPTURED", "captured"), ("RELIT", "relit"))
    }  # fmt: skip
    difference = {look: float(np.abs(images[look] - reference[name]).max())
                  for look, name in (("CAPTURED", "captured"), ("RELIT", "relit"))}  # fmt: skip
    print(f"largest difference (linear RGBA): {difference}")
    print(f"viewport parity PSNR (display-encoded RGBA): {psnr}; images in {PARITY_PNG}")
    assert psnr["CAPTURED"] >= MIN_PSNR_DB, psnr
    assert psnr["RELIT"] >= MIN_PSNR_DB, psnr


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


def test_render_frames_writes_composited_frames(
    addon: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = addon["state"]
    # The preview is built here, not from a splats object: keep the posing handlers from dropping it.
    posing = importlib.import_module(addon["draw"].__name__.rsplit(".", 1)[0] + ".posing")
    monkeypatch.setattr(posing, "update_previews", lambda *arguments, **settings: None)
    scene = bpy.context.scene
    _camera(scene)
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = str(tmp_path / "frame_")
    scene.frame_start, scene.frame_end = 1, 2
    state.set_preview("avatar_splats", _preview(state, count=200))
    try:
        assert bpy.ops.lca.render_frames() == {"FINISHED"}
    finally:
        state.remove_preview("avatar_splats")
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == ["frame_0001.png", "frame_0002.png"]
    image = bpy.data.images.load(str(tmp_path / "frame_0001.png"))
    try:
        pixels = np.empty(64 * 48 * 4, np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    pixels = pixels.reshape(48, 64, 4)
    assert pixels[..., :3].std() > 0.02, "the splats should show over the render"


def _read_png(path: Path) -> np.ndarray:
    image = bpy.data.images.load(str(path))
    try:
        pixels = np.empty(image.size[0] * image.size[1] * 4, np.float32)
        image.pixels.foreach_get(pixels)
        return pixels.reshape(image.size[1], image.size[0], 4)
    finally:
        bpy.data.images.remove(image)


def test_render_frames_draws_an_imported_avatar_and_obeys_its_render_switch(
    addon: dict[str, ModuleType], sample_lca: Path, tmp_path: Path
) -> None:
    """An imported avatar appears in final frames; Cycles itself draws nothing for its points mesh;
    switching the splats object off for renders leaves them out."""
    scene = bpy.context.scene
    for obj in scene.objects:
        if obj.type == "MESH":
            obj.hide_render = True  # the start-up cube
    assert bpy.ops.lca.import_avatar(filepath=str(sample_lca)) == {"FINISHED"}
    splats = bpy.data.objects[f"{sample_lca.stem}_splats"]
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
