"""Build an avatar from photos: the engine runs as a subprocess, Blender polls it and imports the result.

The operator is a thin modal shell around `BuildController`: a window-manager timer calls
`step()`, Esc or the sidebar's Cancel button calls `cancel()`. Tests (and background Blender,
which has no event loop) drive the controller directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import bpy

from ..lca_blender.addon.engine_process import AvatarBuild, JobStatus
from ..lca_blender.errors import AvatarError
from . import engine
from .engine import EngineController, ModalControllerMixin, show_progress
from .import_export import create_avatar_objects


def avatar_name(photos: Sequence[Path]) -> str:
    """A name for the avatar: a single photo's name, else the photos' folder."""
    first = Path(photos[0])
    if len(photos) == 1:
        label = first.name if first.is_dir() else first.stem
    else:
        label = first.parent.name
    cleaned = re.sub(r"[^\w.-]+", "_", label).strip("._")
    return cleaned or "avatar"


def unused_path(folder: Path, name: str, suffix: str = ".lca") -> Path:
    """`folder/name.lca`, or `name.001.lca`, ... when that is taken (an older build stays intact)."""
    candidate = folder / f"{name}{suffix}"
    number = 1
    while candidate.exists():
        candidate = folder / f"{name}.{number:03d}{suffix}"
        number += 1
    return candidate


def import_built_avatar(path: Path) -> list[bpy.types.Object]:
    """Bring the engine's .lca into the current scene as the Import operator does; the objects it made.

    Called directly rather than through `bpy.ops.lca.import_avatar`, which would turn any error,
    a bug's traceback included, into a RuntimeError with the text of its report.
    """
    try:
        imported = create_avatar_objects(bpy.context, str(path))
    except AvatarError as error:
        raise AvatarError(f"Importing '{path.name}' failed: {error}") from error
    return [imported.rig, imported.body, imported.splats]


class BuildController(EngineController):
    """One avatar build from photos to an imported avatar, advanced by `step()`."""

    def __init__(
        self,
        scene: bpy.types.Scene,
        build: AvatarBuild,
        on_built: Callable[[Path], list[bpy.types.Object]] = import_built_avatar,
    ) -> None:
        super().__init__(scene)
        self.build = build
        self.on_built = on_built
        self.error_message = ""
        self.imported: list[bpy.types.Object] = []

    @property
    def title(self) -> str:
        return f"Building {self.build.output.stem}"

    def start(self) -> BuildController:
        self._claim(self.title)
        try:
            self.build.start()
        except BaseException:
            self.status = JobStatus.FAILED
            self._release("Failed", f"{self.title}: the engine did not start")
            raise
        return self

    def step(self) -> JobStatus:
        """Read the engine's progress; once it is done, import the avatar. Never waits."""
        if self.status.finished:
            return self.status
        events = self.build.poll()
        if events:
            event = events[-1]
            show_progress(self.scene_name, event.bar_fraction, event.label, event.message, running=True)
        if self.build.status.finished:
            self._finish()
        return self.status

    def cancel(self) -> None:
        """Stop the engine; nothing it wrote is left behind."""
        if self.status.finished:
            return
        self.build.cancel()
        self.status = JobStatus.CANCELLED
        self._release("Cancelled", f"{self.title}: cancelled")

    def _finish(self) -> None:
        status = self.build.status
        if status is JobStatus.SUCCEEDED:
            try:
                self.imported = self.on_built(self.build.output)
            except AvatarError as error:
                self.status, self.error_message = JobStatus.FAILED, str(error)
            except BaseException:
                # A bug: it keeps its traceback, and the job still ends so that another can start.
                self.status = JobStatus.FAILED
                self._release("Failed", f"{self.title}: importing the avatar failed (see the console)")
                raise
            else:
                self.status = JobStatus.SUCCEEDED
        else:
            self.status = status
            if status is JobStatus.FAILED:
                self.error_message = self.build.error_message
        messages = {
            JobStatus.SUCCEEDED: f"Built and imported {self.build.output.name}",
            JobStatus.CANCELLED: f"{self.title}: cancelled",
            JobStatus.FAILED: f"{self.title} failed: {self.error_message}",
        }
        self._release(self.status.value.capitalize(), messages[self.status])


class LCA_OT_build_avatar(ModalControllerMixin, bpy.types.Operator):
    """Build a rigged Gaussian avatar from photos of a person (runs in the background; Esc cancels)"""

    bl_idname = "lca.build_avatar"
    bl_label = "Build Avatar from Photos"
    bl_options = {"REGISTER"}

    directory: bpy.props.StringProperty(subtype="DIR_PATH", options={"SKIP_SAVE"})
    files: bpy.props.CollectionProperty(type=bpy.types.OperatorFileListElement, options={"SKIP_SAVE"})
    filter_image: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_movie: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    avatar_name: bpy.props.StringProperty(
        name="Name", description="The avatar's name; empty: the photos' folder name", options={"SKIP_SAVE"}
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return engine.running_controller() is None

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def photos(self) -> list[Path]:
        """The selected photos; a folder with none selected stands for every photo in it."""
        folder = Path(bpy.path.abspath(self.directory))
        chosen = [folder / item.name for item in self.files if item.name]
        return chosen or [folder]

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not self.directory:
            self.report({"ERROR"}, "Choose photos, or a folder of photos, to build from")
            return {"CANCELLED"}
        photos = self.photos()
        missing = [photo.name for photo in photos if not photo.exists()]
        if missing:
            self.report({"ERROR"}, f"These photos do not exist: {', '.join(missing)}")
            return {"CANCELLED"}
        name = bpy.path.clean_name(self.avatar_name) if self.avatar_name else avatar_name(photos)
        output = unused_path(engine.user_folder("avatars"), name)

        def make_controller() -> BuildController:
            build = AvatarBuild(
                engine.engine_start_command(context),
                photos,
                output,
                engine.build_options(context),
                engine.engine_env(),
            )
            return BuildController(context.scene, build)

        return self.start_controller(context, make_controller)


class LCA_OT_cancel_build(bpy.types.Operator):
    """Stop the running build; nothing it made is kept"""

    bl_idname = "lca.cancel_build"
    bl_label = "Cancel Build"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return engine.running_controller() is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        engine.running_controller().cancel()
        return {"FINISHED"}


classes: tuple[type, ...] = (LCA_OT_build_avatar, LCA_OT_cancel_build)
register, unregister = bpy.utils.register_classes_factory(classes)
