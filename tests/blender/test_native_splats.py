"""Blender 5.3's native Gaussian splats: the imported avatar posed by Geometry Nodes, rendered by Cycles,
saved and rendered without the extension, and .ply files through Blender's own importer.

The expected Gaussians come from the core's `deform.pose_avatar`; the expected image from the
engine's own renderer (torch, in the engine's environment).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from conftest import (
    GAUSSIAN_COUNT,
    REPO_ROOT,
    blender_pose,
    core_module,
    engine_reference,
    sidebar_labels,
)

pytestmark = pytest.mark.skipif(
    bpy.app.version < (5, 3, 0), reason="Blender renders Gaussian splats natively from 5.3"
)

FINGER, ARM = "finger2-1.L", "upperarm01.L"
MODIFIER = "LCA Native Splats"
SIDE_BY_SIDE_PNG = REPO_ROOT / ".cache" / "blender-home" / "native_splats_cycles.png"
WIDTH = HEIGHT = 80
SUPERSAMPLING = 4  # the engine's image is rendered this much finer and averaged over each pixel
MIN_PSNR_DB = 25.0

# Runs in a fresh Blender that has never heard of the extension: opens the saved file, reads the
# evaluated splats at each frame and renders each frame with Cycles (what `blender -b file -a` does).
_RENDER_WITHOUT_EXTENSION = """
import json, os, sys
import numpy as np
import bpy

blend, frames, output, scene_name = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
bpy.ops.wm.open_mainfile(filepath=blend)
scene = bpy.data.scenes[scene_name]
report = {"has_lca_properties": hasattr(bpy.types.Object, "lca"), "frames": {}}
for frame in frames:
    scene.frame_set(frame)
    splats = bpy.data.objects["sample_splats"]
    depsgraph = scene.view_layers[0].depsgraph
    geometry = splats.evaluated_get(depsgraph).evaluated_geometry()
    cloud = geometry.pointcloud
    positions = np.empty(len(cloud.points) * 3, np.float32)
    cloud.attributes["position"].data.foreach_get("vector", positions)
    np.save(f"{output}/positions_{frame}.npy", positions.reshape(-1, 3))
    scene.render.filepath = f"{output}/frame_{frame}.exr"
    bpy.ops.render.render(write_still=True, scene=scene.name)
    image = bpy.data.images.load(scene.render.filepath)
    pixels = np.array(image.pixels[:], np.float32).reshape(image.size[1], image.size[0], 4)
    report["frames"][frame] = {"type": cloud.type, "alpha": float(pixels[..., 3].mean())}
print(json.dumps(report))
sys.stdout.flush()
os._exit(0)
"""


def _import(path: Path) -> tuple[bpy.types.Object, bpy.types.Object, bpy.types.Object]:
    assert bpy.ops.lca.import_avatar(filepath=str(path)) == {"FINISHED"}
    return tuple(bpy.data.objects[f"{path.stem}_{part}"] for part in ("rig", "body", "splats"))


def _point_cloud_arrays(
    obj: bpy.types.Object, names: dict[str, int], depsgraph: bpy.types.Depsgraph | None = None
) -> tuple[str, dict[str, np.ndarray]]:
    """The evaluated point cloud's type and its attributes `names` (name: width) as [N, width] arrays,
    in `depsgraph` (the context's when None)."""
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    # The point cloud lives as long as its geometry set: keep both named.
    geometry = obj.evaluated_get(depsgraph).evaluated_geometry()
    cloud = geometry.pointcloud
    arrays = {}
    for name, width in names.items():
        attribute = cloud.attributes[name]
        field = {"QUATERNION": "value", "FLOAT_COLOR": "color"}.get(attribute.data_type, "vector")
        values = np.empty(len(cloud.points) * width, np.float32)
        attribute.data.foreach_get(field, values)
        arrays[name] = values.reshape(-1, width)
    return cloud.type, arrays


@contextlib.contextmanager
def _cycles_scene(
    collection: bpy.types.Collection, location, width: int, height: int
) -> Iterator[bpy.types.Scene]:
    """A scene of its own showing `collection` to a camera at `location` looking along +Y, rendered by
    Cycles to a transparent film (so no render setting leaks into other tests); removed afterwards."""
    scene = bpy.data.scenes.new("native splats render")
    scene.collection.children.link(collection)
    camera = bpy.data.objects.new("native splats camera", bpy.data.cameras.new("native splats camera"))
    scene.collection.objects.link(camera)
    camera.location, camera.rotation_euler = location, (math.radians(90.0), 0.0, 0.0)
    scene.camera = camera
    scene.render.engine = "CYCLES"
    scene.cycles.samples, scene.cycles.use_denoising = 1, False
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = (
        width,
        height,
        100,
    )
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "OPEN_EXR"
    try:
        yield scene
    finally:
        bpy.data.scenes.remove(scene)
        bpy.data.objects.remove(camera)


def _sh_names(coefficients: int) -> dict[str, int]:
    return {f"radiance:sh_{k}": 3 for k in range(coefficients - 1)}


def _world_rotations(matrix_world, rotations: np.ndarray, core: ModuleType) -> np.ndarray:
    """Object-space rotations [N, 4] (w, x, y, z) turned by the object's world rotation."""
    turn = np.array(matrix_world.to_quaternion(), np.float64)
    return core_module(core, "maths.rotations").quaternion_multiply(turn, rotations.astype(np.float64))


def _same_sign(rotations: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`rotations` with each quaternion's sign flipped to match `reference` (q and -q are one turn)."""
    return rotations * np.sign(np.sum(rotations * reference, axis=1, keepdims=True))


def test_import_makes_a_native_splat_object_with_the_avatars_look(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path
) -> None:
    avatar = core_module(core, "formats.lca").read_avatar(sample_lca)
    rig, body, splats = _import(sample_lca)
    modifier = splats.modifiers[MODIFIER]
    assert modifier.type == "NODES" and modifier.node_group is not None and modifier.show_render
    # Blender draws them: the draw handler's preview is off, so nothing is drawn twice.
    assert not splats.lca.preview
    state = core_module(enabled_extension, "viewport.state")
    assert state.get_preview(splats.name) is None
    labels = sidebar_labels(enabled_extension, rig)
    assert ("Blender draws and renders these splats", "SHADING_RENDERED") in labels

    coefficients = avatar.sh.shape[1]
    names = {"position": 3, "rotation": 4, "scale": 3, "radiance:base": 4, **_sh_names(coefficients)}
    cloud_type, arrays = _point_cloud_arrays(splats, names)
    assert cloud_type == "GAUSSIAN_SPLAT" and arrays["position"].shape == (GAUSSIAN_COUNT, 3)
    np.testing.assert_array_equal(arrays["radiance:base"][:, :3], avatar.sh[:, 0])
    # The mesh keeps 3DGS's logit of the opacity; the group turns it back (float32).
    np.testing.assert_allclose(arrays["radiance:base"][:, 3], avatar.opacities, atol=1e-6)
    for k in range(coefficients - 1):
        np.testing.assert_array_equal(arrays[f"radiance:sh_{k}"], avatar.sh[:, k + 1])
    at_rest = core_module(core, "maths.deform").pose_avatar(avatar)
    np.testing.assert_allclose(arrays["position"], at_rest.means, atol=1e-5)
    np.testing.assert_allclose(arrays["scale"], at_rest.scales, rtol=1e-4)


def _keyframe_pose(rig: bpy.types.Object, body: bpy.types.Object) -> dict[int, float]:
    """Key a finger, an arm and jawOpen at frames 1, 10 and 20; returns jawOpen's value at each."""
    finger, arm = rig.pose.bones[FINGER], rig.pose.bones[ARM]
    jaw = body.data.shape_keys.key_blocks["jawOpen"]
    keys = {1: (0.0, 0.0, 0.0), 10: (0.6, 0.4, 1.0), 20: (-0.3, -0.5, 0.4)}
    for frame, (finger_angle, arm_angle, jaw_value) in keys.items():
        finger.rotation_quaternion = (math.cos(finger_angle), math.sin(finger_angle), 0.0, 0.0)
        arm.rotation_quaternion = (math.cos(arm_angle), 0.0, 0.0, math.sin(arm_angle))
        jaw.value = jaw_value
        for bone in (finger, arm):
            bone.keyframe_insert("rotation_quaternion", frame=frame)
        jaw.keyframe_insert("value", frame=frame)
    return {frame: jaw_value for frame, (_, _, jaw_value) in keys.items()}


def test_native_splats_follow_the_rig_and_shape_keys_at_keyframed_frames(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path
) -> None:
    avatar = core_module(core, "formats.lca").read_avatar(sample_lca)
    rig, body, splats = _import(sample_lca)
    rig.location, rig.rotation_euler = (0.4, -0.2, 0.1), (0.0, 0.0, 0.3)  # posed in world space
    jaw_values = _keyframe_pose(rig, body)
    deform = core_module(core, "maths.deform")
    scene = bpy.context.scene
    positions = {}
    for frame in (10, 20, 1):
        scene.frame_set(frame)
        _, arrays = _point_cloud_arrays(splats, {"position": 3, "rotation": 4, "scale": 3})
        expected = deform.pose_avatar(
            avatar, blender_pose(core, rig, avatar.rig), {"jawOpen": jaw_values[frame]}
        )
        ours, theirs = np.array(splats.matrix_world, np.float64), np.array(rig.matrix_world, np.float64)
        world = arrays["position"] @ ours[:3, :3].T + ours[:3, 3]
        np.testing.assert_allclose(world, expected.means @ theirs[:3, :3].T + theirs[:3, 3], atol=1e-4)
        rotations = _world_rotations(splats.matrix_world, arrays["rotation"], core)
        expected_rotations = _world_rotations(rig.matrix_world, expected.rotations, core)
        np.testing.assert_allclose(_same_sign(rotations, expected_rotations), expected_rotations, atol=1e-4)
        np.testing.assert_allclose(arrays["scale"], expected.scales, atol=1e-4)
        positions[frame] = world
    moved = np.linalg.norm(positions[10] - positions[1], axis=1)
    assert (moved > 1e-3).mean() > 0.01, "the keyed pose should move a good share of the splats"


def test_a_saved_file_renders_posed_in_a_blender_without_the_extension(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    rig, body, splats = _import(sample_lca)
    _keyframe_pose(rig, body)
    frames = [1, 10, 20]
    blend = tmp_path / "keyed.blend"
    with _cycles_scene(splats.users_collection[0], (0.0, -4.0, 0.9), 24, 32) as render_scene:
        expected = {}
        for frame in frames:
            render_scene.frame_set(frame)
            depsgraph = render_scene.view_layers[0].depsgraph
            expected[frame] = _point_cloud_arrays(splats, {"position": 3}, depsgraph)[1]["position"]
        bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    output = tmp_path / "frames"
    output.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_RENDER_WITHOUT_EXTENSION), str(blend), json.dumps(frames),
         str(output), "native splats render"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["has_lca_properties"] is False, "the fresh Blender should not have the extension"
    for frame in frames:
        np.testing.assert_allclose(np.load(output / f"positions_{frame}.npy"), expected[frame], atol=1e-6)
        rendered = report["frames"][str(frame)]
        assert rendered["type"] == "GAUSSIAN_SPLAT" and rendered["alpha"] > 0.05, rendered


def _render_linear(scene: bpy.types.Scene, path: Path) -> np.ndarray:
    """[H, W, 4] scene-linear premultiplied RGBA of a Cycles render, top row first."""
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True, scene=scene.name)
    image = bpy.data.images.load(str(path))
    try:
        pixels = np.empty(WIDTH * HEIGHT * 4, np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return pixels.reshape(HEIGHT, WIDTH, 4)[::-1]


def _save_side_by_side(cycles: np.ndarray, reference: np.ndarray, colour: ModuleType) -> None:
    """Display-encoded over grey: Cycles | the engine's renderer | 4x their difference."""
    over_grey = [image[..., :3] + (1 - image[..., 3:]) * 0.18 for image in (cycles, reference)]
    gap = np.ones((HEIGHT, 2, 3))
    difference = np.abs(cycles[..., :3] - reference[..., :3]) * 4
    picture = colour.linear_to_srgb(
        np.clip(np.concatenate([over_grey[0], gap, over_grey[1], gap, difference], 1), 0, 1)
    )
    height, width = picture.shape[:2]
    rgba = np.concatenate([picture, np.ones((height, width, 1))], axis=2)[::-1]
    SIDE_BY_SIDE_PNG.parent.mkdir(parents=True, exist_ok=True)
    image = bpy.data.images.new("native splats side by side", width, height, alpha=True)
    try:
        image.pixels.foreach_set(rgba.astype(np.float32).ravel())
        image.filepath_raw = str(SIDE_BY_SIDE_PNG)
        image.file_format = "PNG"
        image.save()
    finally:
        bpy.data.images.remove(image)


def test_cycles_renders_the_posed_avatar_as_the_engine_does_and_meshes_in_front_hide_it(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    avatar = core_module(core, "formats.lca").read_avatar(sample_lca)
    rig, body, splats = _import(sample_lca)
    rig.pose.bones[ARM].rotation_quaternion = (math.cos(0.3), 0.0, 0.0, math.sin(0.3))
    body.data.shape_keys.key_blocks["jawOpen"].value = 1.0
    # Close on the face and shoulders: the splats cover a few pixels each, so the engine's
    # screen-space low-pass filter (0.3 px^2, which Cycles does not have) barely widens them.
    with _cycles_scene(splats.users_collection[0], (0.0, -0.55, 1.45), WIDTH, HEIGHT) as scene:
        scene.cycles.samples = 64
        # A one-pixel box filter: each pixel is the mean over its area, as the supersampled reference.
        scene.cycles.pixel_filter_type, scene.cycles.filter_width = "BOX", 1.0
        # A holdout card 25 cm in front of the camera over the left quarter of its 18 cm wide view:
        # where it is, nothing may show.
        card = bpy.data.objects.new("card", bpy.data.meshes.new("card"))
        corners = [(-0.2, -0.3, 1.3), (-0.04, -0.3, 1.3), (-0.04, -0.3, 1.6), (-0.2, -0.3, 1.6)]
        card.data.from_pydata(corners, [], [(0, 1, 2, 3)])
        card.is_holdout = True
        scene.collection.objects.link(card)
        scene.frame_set(1)
        fine_width, fine_height = WIDTH * SUPERSAMPLING, HEIGHT * SUPERSAMPLING
        # Only the active scene's evaluation writes matrices back to the objects: read the evaluated camera.
        depsgraph = scene.view_layers[0].depsgraph
        camera = scene.camera.evaluated_get(depsgraph)
        view = np.array(camera.matrix_world.inverted())
        projection = np.array(camera.calc_matrix_camera(depsgraph, x=fine_width, y=fine_height))
        try:
            cycles = _render_linear(scene, tmp_path / "cycles.exr")
        finally:
            bpy.data.objects.remove(card)

    posed = core_module(core, "maths.deform").pose_avatar(
        avatar, blender_pose(core, rig, avatar.rig), {"jawOpen": 1.0}
    )
    viewmat, K = core_module(core, "maths.projection").opencv_camera(
        view, projection, fine_width, fine_height
    )
    fine = engine_reference(
        tmp_path,
        {"means": posed.means, "quats": posed.rotations, "scales": posed.scales, "opacities": posed.opacities,
         "sh": posed.sh, "viewmat": viewmat, "K": K, "size": np.array([fine_width, fine_height])},
    )["captured"]  # fmt: skip
    reference = fine.reshape(HEIGHT, SUPERSAMPLING, WIDTH, SUPERSAMPLING, 4).mean(axis=(1, 3))
    _save_side_by_side(cycles, reference, core_module(core, "maths.colour"))

    hidden = np.zeros((HEIGHT, WIDTH), bool)
    hidden[:, : WIDTH // 5] = True  # well inside the card's image, whatever the lens rounding
    behind_card = hidden & (reference[..., 3] > 0.5)
    assert behind_card.sum() > 100, "the avatar should be behind the card"
    assert cycles[behind_card][:, 3].max() < 0.02, "the card in front should hide the splats"
    visible = np.zeros((HEIGHT, WIDTH), bool)
    visible[:, WIDTH // 3 :] = True
    error = np.mean((cycles[visible] - reference[visible]) ** 2)
    psnr = 10 * np.log10(1.0 / error)
    print(f"Cycles vs the engine's renderer, captured look, linear RGBA: {psnr:.2f} dB; {SIDE_BY_SIDE_PNG}")
    assert reference[visible][:, 3].mean() > 0.3, "the avatar should fill a good part of the view"
    assert psnr >= MIN_PSNR_DB


def test_an_exported_ply_opens_in_blenders_importer_with_the_same_splats(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    rig, body, splats = _import(sample_lca)
    rig.pose.bones[FINGER].rotation_quaternion = (math.cos(0.4), math.sin(0.4), 0.0, 0.0)
    bpy.context.scene.frame_set(2)
    exported = tmp_path / "posed.ply"
    assert bpy.ops.lca.export_posed_ply(filepath=str(exported)) == {"FINISHED"}
    written = core_module(core, "formats.ply").read_ply(exported)

    before = set(bpy.data.objects)
    assert bpy.ops.lca.import_splats_ply(filepath=str(exported)) == {"FINISHED"}
    (imported,) = [obj for obj in bpy.data.objects if obj not in before]
    assert imported.type == "POINTCLOUD" and imported.data.type == "GAUSSIAN_SPLAT"
    coefficients = written.sh.shape[1]
    names = {"position": 3, "rotation": 4, "scale": 3, "radiance:base": 4, **_sh_names(coefficients)}
    cloud_type, arrays = _point_cloud_arrays(imported, names)
    assert cloud_type == "GAUSSIAN_SPLAT"
    np.testing.assert_array_equal(arrays["position"], written.means)
    np.testing.assert_allclose(arrays["rotation"], written.rotations, atol=1e-6)
    np.testing.assert_allclose(arrays["scale"], written.scales, rtol=1e-6)
    np.testing.assert_array_equal(arrays["radiance:base"][:, :3], written.sh[:, 0])
    np.testing.assert_allclose(arrays["radiance:base"][:, 3], written.opacities, atol=1e-6)
    for k in range(coefficients - 1):
        np.testing.assert_array_equal(arrays[f"radiance:sh_{k}"], written.sh[:, k + 1])


def test_a_ply_without_splats_is_refused(
    enabled_extension: ModuleType, core: ModuleType, tmp_path: Path
) -> None:
    mesh_ply = tmp_path / "triangle.ply"
    mesh_ply.write_text(
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n"
    )
    before = set(bpy.data.objects)
    with pytest.raises(RuntimeError, match="holds no Gaussian splats"):
        bpy.ops.lca.import_splats_ply(filepath=str(mesh_ply))
    assert set(bpy.data.objects) == before


def test_render_frames_leaves_natively_rendered_splats_to_blender(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path
) -> None:
    native_splats = core_module(enabled_extension, "viewport.native_splats")
    _, _, splats = _import(sample_lca)
    assert native_splats.renders_natively(splats)
    splats.modifiers[MODIFIER].show_render = False
    assert not native_splats.renders_natively(splats)


def _light(
    scene: bpy.types.Scene, kind: str, location, rotation, energy: float, **settings
) -> bpy.types.Object:
    data = bpy.data.lights.new(f"relit {kind.lower()}", kind)
    data.energy = energy
    for key, value in settings.items():
        setattr(data, key, value)
    light = bpy.data.objects.new(data.name, data)
    light.location, light.rotation_euler = location, rotation
    scene.collection.objects.link(light)
    return light


def _world_colour(scene: bpy.types.Scene, color: tuple[float, float, float]) -> None:
    if scene.world is None:
        scene.world = bpy.data.worlds.new("relit world")
    if bpy.app.version < (5, 0, 0):
        scene.world.use_nodes = True
    background = next(node for node in scene.world.node_tree.nodes if node.type == "BACKGROUND")
    background.inputs["Color"].default_value = (*color, 1.0)
    background.inputs["Strength"].default_value = 1.0


def _expected_relit(core, avatar, rig, lights, world_color, eye) -> tuple[object, np.ndarray]:
    """The core's posed splats (world space) and their relit colours under `lights` (Blender light
    objects, converted here from their settings) and a uniform world, seen from `eye`."""
    lights_module = core_module(core, "maths.lights")
    converted = []
    for light in lights:
        matrix = np.array(light.matrix_world, np.float64)
        if light.data.type == "SUN":
            converted.append(
                lights_module.SunLight(tuple(-matrix[:3, 2]), tuple(light.data.color), light.data.energy)
            )
        else:
            converted.append(lights_module.PointLight(
                tuple(matrix[:3, 3]), tuple(light.data.color), light.data.energy, light.data.shadow_soft_size
            ))  # fmt: skip
    lighting = lights_module.Lighting(lights_module.AmbientSH.uniform(world_color, 1.0), tuple(converted))
    posed = core_module(core, "maths.deform").pose_avatar(avatar, blender_pose(core, rig, avatar.rig))
    matrix = np.array(rig.matrix_world, np.float64)
    world = core_module(core, "avatar").Splats(
        means=(posed.means @ matrix[:3, :3].T + matrix[:3, 3]).astype(np.float32),
        rotations=_world_rotations(rig.matrix_world, posed.rotations, core).astype(np.float32),
        scales=posed.scales,
        opacities=posed.opacities,
        sh=posed.sh,
    )
    return world, core_module(core, "maths.shading").relight_splats(avatar, world, lighting, eye)


def _shown_colours(base: np.ndarray, core: ModuleType) -> np.ndarray:
    """The linear colours Blender shows for `radiance:base` degree-0 coefficients [N, 3]."""
    sh_c0 = core_module(core, "maths.sh").SH_C0
    return core_module(core, "maths.colour").srgb_to_linear(0.5 + sh_c0 * base.astype(np.float64))


def test_the_relit_look_and_the_sliders_reach_native_splats(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path
) -> None:
    avatar = core_module(core, "formats.lca").read_avatar(sample_lca)
    rig, body, splats = _import(sample_lca)
    rig.location, rig.rotation_euler = (0.3, 0.1, 0.0), (0.0, 0.0, 0.4)
    rig.pose.bones[ARM].rotation_quaternion = (math.cos(0.3), 0.0, 0.0, math.sin(0.3))
    scene = bpy.context.scene
    for obj in scene.objects:  # the start-up scene's light is not part of this test's lighting
        if obj.type == "LIGHT":
            obj.hide_render = True
    sun = _light(scene, "SUN", (0, 0, 5), (math.radians(50), 0, math.radians(30)), 3.0, color=(1.0, 0.9, 0.8))
    point = _light(scene, "POINT", (1.0, -1.5, 1.6), (0, 0, 0), 200.0, shadow_soft_size=0.1)
    world_color = (0.05, 0.06, 0.08)
    _world_colour(scene, world_color)
    camera = bpy.data.objects.new("relit camera", bpy.data.cameras.new("relit camera"))
    scene.collection.objects.link(camera)
    camera.location = (0.2, -3.0, 1.2)
    scene.camera = camera

    settings = splats.lca
    settings.look, settings.splat_scale, settings.opacity = "RELIT", 1.5, 0.6
    scene.frame_set(1)
    coefficients = avatar.sh.shape[1]
    names = {"scale": 3, "radiance:base": 4, **_sh_names(coefficients)}
    _, arrays = _point_cloud_arrays(splats, names)
    world, relit = _expected_relit(core, avatar, rig, [sun, point], world_color, np.array(camera.location))
    assert relit.max() > 0.3, "the lights should light the avatar up"
    # Posing in Blender agrees with the core within 1e-4 m and rad: colours within 5e-4 (8e-5 measured).
    np.testing.assert_allclose(_shown_colours(arrays["radiance:base"][:, :3], core), relit, atol=5e-4)
    for k in range(coefficients - 1):
        assert not arrays[f"radiance:sh_{k}"].any(), "the relit look is view-independent"
    np.testing.assert_allclose(arrays["scale"], world.scales * 1.5, atol=2e-4)
    np.testing.assert_allclose(
        arrays["radiance:base"][:, 3], np.clip(avatar.opacities * 0.6, 0, 1), atol=1e-6
    )

    # A brighter sun relights the splats at the next update, as a light moved in the viewport does.
    sun.data.energy = 6.0
    bpy.context.view_layer.update()
    _, arrays = _point_cloud_arrays(splats, {"radiance:base": 4})
    _, brighter = _expected_relit(core, avatar, rig, [sun, point], world_color, np.array(camera.location))
    np.testing.assert_allclose(_shown_colours(arrays["radiance:base"][:, :3], core), brighter, atol=5e-4)

    settings.look, settings.splat_scale, settings.opacity = "CAPTURED", 1.0, 1.0
    _, arrays = _point_cloud_arrays(splats, names)
    np.testing.assert_array_equal(arrays["radiance:base"][:, :3], avatar.sh[:, 0])
    np.testing.assert_allclose(arrays["radiance:base"][:, 3], avatar.opacities, atol=1e-6)
    np.testing.assert_array_equal(arrays["radiance:sh_0"], avatar.sh[:, 1])
    np.testing.assert_allclose(arrays["scale"], world.scales, atol=1e-4)


def test_a_modifier_that_changes_the_bodys_topology_hides_the_splats_and_says_why(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path
) -> None:
    state = core_module(enabled_extension, "viewport.state")
    rig, body, splats = _import(sample_lca)
    scene = bpy.context.scene
    # A Decimate above the Armature modifier: fewer vertices, so corners no longer match the binding.
    decimate = body.modifiers.new("Lighter body", "DECIMATE")
    decimate.ratio = 0.5
    body.modifiers.move(len(body.modifiers) - 1, 0)
    scene.frame_set(2)
    geometry = splats.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
    assert geometry.pointcloud is None, "no splats rather than splats on the wrong triangles"
    message = state.posing_error(splats.name)
    assert message is not None and f"'{body.name}' has" in message and "'Lighter body'" in message
    assert "'Armature'" not in message, "the Armature modifier keeps the topology"
    labels = sidebar_labels(enabled_extension, rig)
    assert ("The splats stopped following the body:", "ERROR") in labels

    body.modifiers.remove(decimate)
    scene.frame_set(3)
    assert state.posing_error(splats.name) is None
    _, arrays = _point_cloud_arrays(splats, {"position": 3})
    assert arrays["position"].shape == (GAUSSIAN_COUNT, 3)
