"""Render a synthetic subject's scene with Cycles (run by Blender's Python: the bpy module).

    .venv-blender/bin/python bench/eval_subject_blender.py WORK/scene.json

`lca_blender.evaluate.subjects` writes the scene folder: posed meshes (.npy vertices, triangles
and per-corner UVs), the outfit texture (sRGB PNG), lights in the JSON form of
`lca_blender.maths.lights` and OpenCV cameras. For each render this writes WORK/<name>.npy,
[H, W, 4] float32 linear RGB premultiplied by alpha (film transparent: alpha is the person's exact
coverage), rows from the top, and WORK/timings.json with the seconds each image took.

Lights are created with the meaning `lca_blender.maths.lights` documents (Blender 4.2+, Cycles): sun
strength in W/m^2, point/area power in W, directions along the light's -Z axis, uniform world
colour x strength; the point light's "Soft Falloff" is switched off, as the shading model has none.
The material is a Diffuse BSDF fed by the texture: albedo only.
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


def _material(texture_path: Path) -> bpy.types.Material:
    material = bpy.data.materials.new("outfit")
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


def _camera_matrix(viewmat: np.ndarray) -> Matrix:
    """Blender's camera-to-world matrix for an OpenCV world-to-camera matrix (Blender cameras look
    down -Z with +Y up: flip the Y and Z axes)."""
    camera_to_world = np.linalg.inv(np.asarray(viewmat, np.float64))
    camera_to_world[:3, 1:3] *= -1
    return Matrix(camera_to_world.tolist())


def main(scene_path: Path) -> None:
    work = scene_path.parent
    scene_data = json.loads(scene_path.read_text())
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
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.render.image_settings.file_format = "OPEN_EXR"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "32"
    scene.render.resolution_percentage = 100
    world = bpy.data.worlds.new("world")
    world.use_nodes = True
    scene.world = world

    material = _material(work / scene_data["texture"])
    triangles = np.load(work / scene_data["triangles"], allow_pickle=False)
    corner_uvs = np.load(work / scene_data["corner_uvs"], allow_pickle=False)
    bodies = {}
    for name, file in scene_data["meshes"].items():
        body = _build_mesh(name, np.load(work / file, allow_pickle=False), triangles, corner_uvs, material)
        scene.collection.objects.link(body)
        bodies[name] = body
    light_sets = {}
    for name, lighting in scene_data["lighting"].items():
        collection = bpy.data.collections.new(f"lights_{name}")
        scene.collection.children.link(collection)
        light_sets[name] = (collection, _world_colour(lighting))
        _build_lights(lighting, collection)

    camera_block = bpy.data.cameras.new("camera")
    camera = bpy.data.objects.new("camera", camera_block)
    scene.collection.objects.link(camera)
    scene.camera = camera
    timings = {}
    for render in scene_data["renders"]:
        width, height = render["width"], render["height"]
        intrinsics = np.asarray(render["K"], np.float64)
        scene.render.resolution_x, scene.render.resolution_y = width, height
        camera_block.sensor_fit = "HORIZONTAL"
        camera_block.sensor_width = 36.0
        camera_block.lens = intrinsics[0, 0] * 36.0 / width
        if abs(intrinsics[0, 2] - width / 2) > 1e-6 or abs(intrinsics[1, 2] - height / 2) > 1e-6:
            raise ValueError(
                f"{render['name']}: only cameras with the principal point at the centre are rendered."
            )
        if abs(intrinsics[0, 0] - intrinsics[1, 1]) > 1e-6 * intrinsics[0, 0]:
            raise ValueError(f"{render['name']}: only square pixels (fx = fy) are rendered.")
        camera_block.clip_start, camera_block.clip_end = 0.05, 100.0
        camera.matrix_world = _camera_matrix(render["viewmat"])
        for name, body in bodies.items():
            body.hide_render = name != render["mesh"]
        for name, (collection, colour) in light_sets.items():
            collection.hide_render = name != render["lighting"]
            if name == render["lighting"]:
                world.node_tree.nodes["Background"].inputs["Color"].default_value = (*colour, 1.0)
                world.node_tree.nodes["Background"].inputs["Strength"].default_value = 1.0
        exr = work / f"{render['name']}.exr"
        scene.render.filepath = str(exr)
        started = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        timings[render["name"]] = round(time.perf_counter() - started, 2)
        image = bpy.data.images.load(str(exr))
        pixels = np.empty(width * height * 4, np.float32)
        image.pixels.foreach_get(pixels)
        bpy.data.images.remove(image)
        exr.unlink()
        # Blender's rows run from the bottom; image files' from the top.
        np.save(work / render["output"], pixels.reshape(height, width, 4)[::-1].copy(), allow_pickle=False)
    (work / "timings.json").write_text(json.dumps(timings))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
