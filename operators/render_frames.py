"""Final frames with the splats: each frame rendered by Blender, the splats drawn offscreen over it.

How splats reach final renders before Blender 5.3 (from 5.3 Blender renders them itself, see
`viewport/native_splats.py`). Blender's renderers (Cycles, EEVEE, Workbench) do not see the
draw handler's splats: it never runs during F12, and Blender before 5.3 has no Gaussian
primitive. `lca.render_frames` renders the active camera's frame range itself. For every frame it
  1. sets the frame (`scene.frame_set`), so the posing handlers pose the splats as in the viewport;
  2. renders the scene with the scene's engine and settings (`bpy.ops.render.render`) and reads the
     result as scene-linear RGBA (through a temporary OpenEXR file);
  3. draws the splats with the viewport's shader into a float offscreen buffer from the camera's
     view and projection, after the triangles of the meshes visible in renders have been written
     to its depth buffer, so that meshes in front of the splats hide them (splats do not hide
     meshes behind them from the render, nor cast shadows or appear in reflections);
  4. composites the splats (premultiplied) over the render in scene-linear, and writes the frame
     with the scene's output settings (format, colour management: the view transform applies to
     both; use the "Standard" view transform to keep the captured colours as photographed);
  5. writes to a temporary name and renames it, so an interrupted run leaves no partial file.
Relit splats use the scene's lights and world colour (no shadows); captured splats use their
colours as photographed. Hidden-in-render splats objects, objects whose preview is off and objects
that Blender 5.3+ renders natively (`viewport/native_splats.py`) are skipped.

What stops a run: the artist cancelling Blender's render (Esc, or Ctrl+C in Blender's console:
`render.render` then returns normally with a partial image, and only the `render_cancel` handlers
hear of it; the bpy module raises KeyboardInterrupt instead), the renderer reporting an error
(`render.render` raises RuntimeError with the report's text), a splats object that cannot be
posed at a frame, or a frame that cannot be written. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import bpy
import numpy as np

from ..lca_blender.errors import AvatarError, AvatarWriteError
from ..viewport import state
from ..viewport.native_splats import renders_natively


class RenderCancelled(Exception):
    """The artist stopped Blender's render of a frame."""


def scene_occluders(scene: bpy.types.Scene, depsgraph: bpy.types.Depsgraph) -> list[np.ndarray]:
    """[T, 3, 3] world-space triangles of every mesh shown in renders, except the splats meshes."""
    occluders = []
    for instance in depsgraph.object_instances:
        obj = instance.object
        if obj.type != "MESH" or obj.original.hide_render or getattr(obj.original.lca, "is_splats", False):
            continue
        mesh = obj.to_mesh()
        try:
            mesh.calc_loop_triangles()
            count = len(mesh.loop_triangles)
            if count == 0:
                continue
            vertices = np.empty(len(mesh.vertices) * 3, np.float64)
            mesh.vertices.foreach_get("co", vertices)
            corners = np.empty(count * 3, np.int32)
            mesh.loop_triangles.foreach_get("vertices", corners)
        finally:
            obj.to_mesh_clear()
        matrix = np.array(instance.matrix_world)
        world = vertices.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
        occluders.append(world[corners].reshape(-1, 3, 3))
    return occluders


def camera_matrices(scene: bpy.types.Scene, depsgraph: bpy.types.Depsgraph) -> tuple[np.ndarray, np.ndarray]:
    """The active camera's view matrix and projection at the render resolution (Blender [4, 4])."""
    width, height = render_size(scene)
    camera = scene.camera
    projection = camera.calc_matrix_camera(
        depsgraph,
        x=width,
        y=height,
        scale_x=scene.render.pixel_aspect_x,
        scale_y=scene.render.pixel_aspect_y,
    )
    return np.array(camera.matrix_world.inverted()), np.array(projection)


def render_size(scene: bpy.types.Scene) -> tuple[int, int]:
    percentage = scene.render.resolution_percentage / 100
    return int(scene.render.resolution_x * percentage), int(scene.render.resolution_y * percentage)


def render_frame(scene: bpy.types.Scene, frame: int, path: Path) -> None:
    """Render one frame of `scene` with its splats to `path` (written whole or not at all)."""
    from ..viewport.draw import draw_offscreen, object_settings, scene_lighting

    scene.frame_set(frame)
    # Splats that Blender 5.3+ renders itself are in the render already.
    previews = {
        name: preview
        for name, preview in state.previews().items()
        if (obj := scene.objects.get(name)) is None or not (obj.hide_render or renders_natively(obj))
    }
    for name in previews:
        # The preview still holds the last pose that worked: a frame drawn from it would be wrong.
        if (message := state.posing_error(name)) is not None:
            raise AvatarError(f"'{name}' cannot follow its body at frame {frame}: {message}")
    render_scene(scene, frame)
    width, height = render_size(scene)
    rendered = _render_result_linear(scene, width, height)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    view_matrix, projection_matrix = camera_matrices(scene, depsgraph)
    splats = draw_offscreen(
        previews,
        view_matrix,
        projection_matrix,
        width,
        height,
        lighting=scene_lighting(scene, for_render=True),
        settings={name: object_settings(name) for name in previews},
        occluders=scene_occluders(scene, depsgraph),
    )[::-1]  # Blender images store the bottom row first
    composite = splats + (1.0 - splats[..., 3:]) * rendered
    _save_linear(scene, composite, path)


def render_scene(scene: bpy.types.Scene, frame: int) -> None:
    """Render the current frame with the scene's engine into "Render Result".

    Raises RenderCancelled when the artist stops the render, AvatarError when the renderer reports
    an error (both of which Blender announces through `render_cancel`).
    """
    cancelled = []

    def on_cancel(*_arguments: object) -> None:
        cancelled.append(True)

    bpy.app.handlers.render_cancel.append(on_cancel)
    try:
        bpy.ops.render.render(write_still=False)
    except RuntimeError as error:  # what bpy.ops raises when the renderer reports an error
        raise AvatarError(f"Blender could not render frame {frame}: {_one_line(error)}") from error
    finally:
        bpy.app.handlers.render_cancel.remove(on_cancel)
    if cancelled:
        raise RenderCancelled


def _one_line(error: Exception) -> str:
    """An error's text on one line; Blender's reports (RuntimeError) come one "Error: ..." a line."""
    return "; ".join(line.removeprefix("Error: ") for line in str(error).splitlines() if line.strip())


def _render_result_linear(scene: bpy.types.Scene, width: int, height: int) -> np.ndarray:
    """[H, W, 4] float32 scene-linear RGBA of the last render, bottom row first."""
    handle, exr_path = tempfile.mkstemp(suffix=".exr")
    os.close(handle)
    settings = scene.render.image_settings
    saved = (settings.file_format, settings.color_depth, settings.color_mode)
    image = None
    try:
        settings.file_format, settings.color_depth, settings.color_mode = "OPEN_EXR", "32", "RGBA"
        bpy.data.images["Render Result"].save_render(exr_path, scene=scene)
        image = bpy.data.images.load(exr_path)
        pixels = np.empty(width * height * 4, np.float32)
        image.pixels.foreach_get(pixels)
        return pixels.reshape(height, width, 4)
    finally:
        settings.file_format, settings.color_depth, settings.color_mode = saved
        if image is not None:
            bpy.data.images.remove(image)
        os.remove(exr_path)


def _save_linear(scene: bpy.types.Scene, pixels: np.ndarray, path: Path) -> None:
    """Write scene-linear RGBA `pixels` [H, W, 4] (bottom row first) with the scene's output settings."""
    height, width = pixels.shape[:2]
    image = bpy.data.images.new("LCA frame", width, height, alpha=True, float_buffer=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        image.pixels.foreach_set(np.ascontiguousarray(pixels, np.float32).ravel())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save_render(str(partial), scene=scene)  # RuntimeError with Blender's report
            os.replace(partial, path)
        except (OSError, RuntimeError) as error:
            raise AvatarWriteError(f"Cannot write the frame '{path}': {_one_line(error)}") from error
    finally:
        bpy.data.images.remove(image)
        if partial.exists():
            partial.unlink()


class LCA_OT_render_frames(bpy.types.Operator):
    """Render the active camera's frame range with the avatars' splats to the output path"""

    bl_idname = "lca.render_frames"
    bl_label = "Render Frames with Splats"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and context.scene.camera is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene = context.scene
        frames = range(scene.frame_start, scene.frame_end + 1, scene.frame_step)
        window_manager = context.window_manager if context.window is not None else None
        if window_manager is not None:
            window_manager.progress_begin(0, len(frames))
        original_frame = scene.frame_current
        written = 0
        try:
            for index, frame in enumerate(frames):
                path = Path(bpy.path.abspath(scene.render.frame_path(frame=frame)))
                render_frame(scene, frame, path)
                written += 1
                if window_manager is not None:
                    window_manager.progress_update(index + 1)
        except (KeyboardInterrupt, RenderCancelled):
            self.report({"WARNING"}, f"Cancelled after {written} of {len(frames)} frames")
            return {"CANCELLED"}
        except AvatarError as error:
            self.report({"ERROR"}, f"Stopped after {written} of {len(frames)} frames: {error}")
            return {"CANCELLED"}
        finally:
            if window_manager is not None:
                window_manager.progress_end()
            scene.frame_set(original_frame)
        self.report({"INFO"}, f"Rendered {written} frames with splats")
        return {"FINISHED"}


classes = (LCA_OT_render_frames,)

register, unregister = bpy.utils.register_classes_factory(classes)
