"""Render a synthetic subject's scene with Cycles (run by Blender's Python: the bpy module).

    .venv-blender/bin/python bench/eval_subject_blender.py WORK/scene.json

`lca_blender.evaluate.subjects` writes the scene folder: the body and each garment posed once per
pose (.npy vertices, triangles and per-corner UVs, an sRGB texture each), the studio backdrop's
mesh, lights in the JSON form of `lca_blender.maths.lights` and OpenCV cameras. For each render
this writes WORK/<output>.npy, [H, W, 4] float32 linear RGB premultiplied by alpha (film
transparent: alpha is the exact coverage of what the render shows), rows from the top, and
WORK/timings.json with the seconds each image took. A render shows one pose's body and garments;
with "backdrop" the cyclorama behind them (turned to face the camera), with "only" what the camera
sees of a single garment (a mask pass: the rest held out, few samples, alpha only). With "display"
in scene.json, linear colours are pushed through the scene's view transform first
(`lca_blender.evaluate.display`); a render's "display_png" keeps Blender's own display image of it
(for tests of that transform).

Lights are created with the meaning `lca_blender.maths.lights` documents (Blender 4.2+, Cycles): sun
strength in W/m^2, point/area power in W, directions along the light's -Z axis, uniform world
colour x strength; the point light's "Soft Falloff" is switched off, as the shading model has none.
Materials are Diffuse BSDFs fed by the textures: albedo only.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix, Vector


def _look_along(light_object: bpy.types.Object, direction: list[float]) -> None:
    light_object.rotation_mode = "QUATERNION"
    light_object.rotation_quaternion = Vector(direction).normalized().to_track_quat("-Z", "Y")


def _build_lights(data: dict, collection: bpy.types.Collection) -> list[bpy.types.Object]:
    objects = []
    for index, light in enumerate(data["lights"]):
        kind = light["type"]
        block = bpy.data.lights.new(f"light{index}", kind.upper())
        block.color = light.get("color", (1.0, 1.0, 1.0))
        if kind == "sun":
            block.energy = light["strength"]
            block.angle = math.radians(1.0)
        else:
            block.energy = light["power"]
        if kind in ("point", "spot"):
            block.shadow_soft_size = light.get("radius", 0.0)
            if hasattr(block, "use_soft_falloff"):
                block.use_soft_falloff = False
        if kind == "spot":
            block.spot_size = light["spot_size"]
            block.spot_blend = light["spot_blend"]
        if kind == "area":
            block.shape = light["shape"].upper()
            block.size = light["size"]
            if "size_y" in light:
                block.size_y = light["size_y"]
        light_object = bpy.data.objects.new(f"light{index}", block)
        if "position" in light:
            light_object.location = light["position"]
        if "direction" in light:
            _look_along(light_object, light["direction"])
        collection.objects.link(light_object)
        objects.append(light_object)
    return objects


def _world_colour(data: dict) -> tuple[float, float, float]:
    """A uniform world's radiance from the L2 SH form (L_00 = 2 sqrt(pi) c s)."""
    ambient = data["ambient"]
    if "sh" in ambient:
        if any(abs(value) > 1e-9 for row in ambient["sh"][1:] for value in row):
            raise ValueError("Only a uniform world can be rendered: the ambient SH has directional terms.")
        return tuple(value / (2 * math.sqrt(math.pi)) for value in ambient["sh"][0])
    strength = ambient.get("strength", 1.0)
    return tuple(value * strength for value in ambient.get("color", (1.0, 1.0, 1.0)))


def _build_mesh(
    name: str, vertices: np.ndarray, triangles: np.ndarray, corner_uvs: np.ndarray, material
) -> bpy.types.Object:
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", vertices.astype(np.float32).ravel())
    mesh.loops.add(triangles.size)
    mesh.loops.foreach_set("vertex_index", triangles.astype(np.int32).ravel())
    mesh.polygons.add(len(triangles))
    mesh.polygons.foreach_set("loop_start", np.arange(0, triangles.size, 3, dtype=np.int32))
    mesh.polygons.foreach_set("loop_total", np.full(len(triangles), 3, np.int32))
    mesh.polygons.foreach_set("use_smooth", np.ones(len(triangles), bool))
    uv_layer = mesh.uv_layers.new(name="UVMap")
    uv_layer.data.foreach_set("uv", corner_uvs.astype(np.float32).ravel())
    mesh.update()
    mesh.validate()
    mesh.materials.append(material)
    return bpy.data.objects.new(name, mesh)


def _material(name: str, texture_path: Path) -> bpy.types.Material:
    """A Lambertian Diffuse BSDF fed by an sRGB texture: albedo only."""
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    nodes = material.node_tree.nodes
    nodes.clear()
    image = nodes.new("ShaderNodeTexImage")
    image.image = bpy.data.images.load(str(texture_path))
    image.image.colorspace_settings.name = "sRGB"
    image.interpolation = "Linear"
    diffuse = nodes.new("ShaderNodeBsdfDiffuse")
    diffuse.inputs["Roughness"].default_value = 0.0  # Lambertian
    output = nodes.new("ShaderNodeOutputMaterial")
    links = material.node_tree.links
    links.new(image.outputs["Color"], diffuse.inputs["Color"])
    links.new(diffuse.outputs["BSDF"], output.inputs["Surface"])
    return material


def _backdrop(work: Path, data: dict, collection: bpy.types.Collection) -> bpy.types.Object:
    """The studio cyclorama: diffuse, seen by the camera (it shows the person's shadow) but giving
    the person no light and no shadow, so the person is lit exactly as in the ground truth."""
    material = bpy.data.materials.new("backdrop")
    material.use_nodes = True
    material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*data["colour"], 1.0)
    material.node_tree.nodes["Principled BSDF"].inputs["Roughness"].default_value = 1.0
    vertices = np.load(work / data["vertices"], allow_pickle=False)
    triangles = np.load(work / data["triangles"], allow_pickle=False)
    corner_uvs = np.zeros((len(triangles), 3, 2), np.float32)
    backdrop = _build_mesh("backdrop", vertices, triangles, corner_uvs, material)
    for ray in ("diffuse", "glossy", "shadow", "transmission", "volume_scatter"):
        setattr(backdrop, f"visible_{ray}", False)
    collection.objects.link(backdrop)
    return backdrop


def _camera_matrix(viewmat: np.ndarray) -> Matrix:
    """Blender's camera-to-world matrix for an OpenCV world-to-camera matrix (Blender cameras look
    down -Z with +Y up: flip the Y and Z axes)."""
    camera_to_world = np.linalg.inv(np.asarray(viewmat, np.float64))
    camera_to_world[:3, 1:3] *= -1
    return Matrix(camera_to_world.tolist())


def _set_up(scene_data: dict) -> bpy.types.Scene:
    """An empty scene with the harness's Cycles, film and colour settings."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = scene_data["samples"]
    scene.cycles.seed = scene_data["seed"]
    scene.cycles.use_adaptive_sampling = True
    scene.cycles.use_denoising = True
    scene.cycles.max_bounces = 4
    scene.render.film_transparent = True
    scene.render.threads_mode = "FIXED"
    scene.render.threads = 2
    scene.render.dither_intensity = 0.0  # Blender's own 8/16-bit images (display samples) undithered
    scene.view_settings.view_transform = scene_data.get("view_transform", "Standard")
    scene.view_settings.look = "None"
    scene.render.image_settings.file_format = "OPEN_EXR"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "32"
    scene.render.resolution_percentage = 100
    world = bpy.data.worlds.new("world")
    world.use_nodes = True
    scene.world = world
    return scene


def _save_display(scene: bpy.types.Scene, image: bpy.types.Image, path: Path) -> np.ndarray:
    """`image` as Blender shows it with the scene's view transform: saved as a 16-bit PNG through
    the scene's colour management, read back as [H, W, 4] display values, rows from the top."""
    settings = scene.render.image_settings
    saved = (settings.file_format, settings.color_depth)
    settings.file_format, settings.color_depth = "PNG", "16"
    image.save_render(str(path), scene=scene)
    settings.file_format, settings.color_depth = saved
    shown = bpy.data.images.load(str(path))
    shown.colorspace_settings.name = "Non-Color"
    width, height = shown.size
    pixels = np.empty(width * height * 4, np.float32)
    shown.pixels.foreach_get(pixels)
    bpy.data.images.remove(shown)
    return pixels.reshape(height, width, 4)[::-1]


def _sample_display(scene: bpy.types.Scene, work: Path, data: dict) -> None:
    """Push the linear colours WORK/<inputs> [M, 3] through the scene's view transform and save
    the display values as WORK/<output> [M, 3] (lca_blender.evaluate.display)."""
    colours = np.load(work / data["inputs"], allow_pickle=False)
    width = 4096
    height = -(-len(colours) // width)
    pixels = np.ones((height * width, 4), np.float32)
    pixels[: len(colours), :3] = colours
    image = bpy.data.images.new("display_samples", width, height, float_buffer=True, alpha=True)
    image.pixels.foreach_set(pixels.ravel())
    # Rows of the saved file run from the top: undo _save_display's flip to keep the order.
    shown = _save_display(scene, image, work / "display_samples.png")[::-1]
    np.save(work / data["output"], shown.reshape(-1, 4)[: len(colours), :3].copy(), allow_pickle=False)
    bpy.data.images.remove(image)


def _objects(scene: bpy.types.Scene, work: Path, scene_data: dict) -> dict[tuple[str, str], bpy.types.Object]:
    """The body and each garment in each pose: {(part, pose): object}; the body's part is "body"."""
    triangles = np.load(work / scene_data["triangles"], allow_pickle=False)
    corner_uvs = np.load(work / scene_data["corner_uvs"], allow_pickle=False)
    parts = {
        "body": (
            triangles,
            corner_uvs,
            _material("outfit", work / scene_data["texture"]),
            scene_data["meshes"],
        )
    }
    for garment in scene_data.get("garments", []):
        mesh = (
            np.load(work / garment["triangles"], allow_pickle=False),
            np.load(work / garment["corner_uvs"], allow_pickle=False),
            _material(garment["name"], work / garment["texture"]),
            garment["meshes"],
        )
        parts[garment["name"]] = mesh
    objects = {}
    for part, (part_triangles, part_uvs, material, meshes) in parts.items():
        for pose, file in meshes.items():
            vertices = np.load(work / file, allow_pickle=False)
            mesh_object = _build_mesh(f"{part}_{pose}", vertices, part_triangles, part_uvs, material)
            scene.collection.objects.link(mesh_object)
            objects[part, pose] = mesh_object
    return objects


def _place_camera(camera: bpy.types.Object, render: dict) -> None:
    """Point Blender's camera as the render's OpenCV camera (K, viewmat) sees."""
    scene = bpy.context.scene
    width, height = render["width"], render["height"]
    intrinsics = np.asarray(render["K"], np.float64)
    scene.render.resolution_x, scene.render.resolution_y = width, height
    camera.data.sensor_fit = "HORIZONTAL"
    camera.data.sensor_width = 36.0
    camera.data.lens = intrinsics[0, 0] * 36.0 / width
    if abs(intrinsics[0, 2] - width / 2) > 1e-6 or abs(intrinsics[1, 2] - height / 2) > 1e-6:
        raise ValueError(
            f"{render['name']}: only cameras with the principal point at the centre are rendered."
        )
    if abs(intrinsics[0, 0] - intrinsics[1, 1]) > 1e-6 * intrinsics[0, 0]:
        raise ValueError(f"{render['name']}: only square pixels (fx = fy) are rendered.")
    camera.data.clip_start, camera.data.clip_end = 0.05, 100.0
    camera.matrix_world = _camera_matrix(render["viewmat"])


def _show(render: dict, objects: dict, backdrop: bpy.types.Object | None, light_sets: dict) -> None:
    """Hide everything this render does not show; light it with the render's lighting. A mask
    render ("only": a garment) shows what the camera sees of that garment: everything else of the
    pose is a holdout (it hides the garment but leaves alpha 0)."""
    scene = bpy.context.scene
    only = render.get("only")
    for (part, pose), mesh_object in objects.items():
        mesh_object.hide_render = pose != render["mesh"]
        mesh_object.is_holdout = only is not None and part != only
    if backdrop is not None:
        backdrop.hide_render = not render.get("backdrop", False)
        backdrop.rotation_euler = (0.0, 0.0, render.get("backdrop_azimuth", 0.0))
    for name, (collection, colour) in light_sets.items():
        collection.hide_render = name != render["lighting"]
        if name == render["lighting"]:
            scene.world.node_tree.nodes["Background"].inputs["Color"].default_value = (*colour, 1.0)
            scene.world.node_tree.nodes["Background"].inputs["Strength"].default_value = 1.0


def _render(work: Path, render: dict, samples: int) -> np.ndarray:
    """Render the scene as set up; [H, W, 4] float32 linear RGBA premultiplied, rows from the top.
    A mask render takes its own sample count, no denoising and no bounces (it needs only alpha)."""
    scene = bpy.context.scene
    is_mask = render.get("only") is not None
    scene.cycles.samples = render.get("samples", samples)
    scene.cycles.use_denoising = not is_mask
    scene.cycles.max_bounces = 0 if is_mask else 4
    exr = work / f"{render['name']}.exr"
    scene.render.filepath = str(exr)
    bpy.ops.render.render(write_still=True)
    if "display_png" in render:
        _save_display(scene, bpy.data.images["Render Result"], work / render["display_png"])
    image = bpy.data.images.load(str(exr))
    pixels = np.empty(render["width"] * render["height"] * 4, np.float32)
    image.pixels.foreach_get(pixels)
    bpy.data.images.remove(image)
    exr.unlink()
    # Blender's rows run from the bottom; image files' from the top.
    return pixels.reshape(render["height"], render["width"], 4)[::-1].copy()


def main(scene_path: Path) -> None:
    work = scene_path.parent
    scene_data = json.loads(scene_path.read_text())
    scene = _set_up(scene_data)
    if "display" in scene_data:
        _sample_display(scene, work, scene_data["display"])
    objects = _objects(scene, work, scene_data)
    backdrop = _backdrop(work, scene_data["backdrop"], scene.collection) if "backdrop" in scene_data else None
    light_sets = {}
    for name, lighting in scene_data["lighting"].items():
        collection = bpy.data.collections.new(f"lights_{name}")
        scene.collection.children.link(collection)
        light_sets[name] = (collection, _world_colour(lighting))
        _build_lights(lighting, collection)
    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    timings = {}
    for render in scene_data["renders"]:
        _place_camera(camera, render)
        _show(render, objects, backdrop, light_sets)
        started = time.perf_counter()
        pixels = _render(work, render, scene_data["samples"])
        timings[render["name"]] = round(time.perf_counter() - started, 2)
        np.save(work / render["output"], pixels, allow_pickle=False)
    (work / "timings.json").write_text(json.dumps(timings))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
