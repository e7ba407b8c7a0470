"""Batch builds: a folder of subject folders becomes one avatar each, placed in a row along X.

Subjects build one after the other; a failure is recorded and the batch goes on. Rerunning the
batch skips subjects whose avatar is newer than every file in their folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bpy

from ..lca_blender.addon.engine_process import AvatarBuild, JobStatus
from ..lca_blender.errors import AvatarError
from . import engine
from .build import import_built_avatar
from .engine import EngineController, ModalControllerMixin, running_controller, show_progress

REPORT_TEXT = "LCA batch report"


@dataclass(frozen=True)
class Subject:
    """One person of the batch: a folder of photos, the avatar it makes, and its place in the row."""

    name: str
    photos: Path  # the subject's folder
    output: Path  # <output folder>/<name>.lca
    slot: int  # position in the row (the subject's index among all subjects, stable across reruns)

    def is_up_to_date(self) -> bool:
        """True when the avatar exists and is newer than every file in the subject's folder."""
        if not self.output.is_file():
            return False
        newest_photo = max(
            (path.stat().st_mtime for path in self.photos.rglob("*") if path.is_file()), default=0.0
        )
        return self.output.stat().st_mtime > newest_photo


@dataclass
class SubjectResult:
    subject: Subject
    outcome: str  # "built", "failed", "skipped" or "cancelled"
    detail: str = ""


def find_subjects(root: Path, output_folder: Path) -> list[Subject]:
    """Each non-hidden folder of `root` that holds files is a subject, in name order."""
    folders = sorted(
        folder
        for folder in root.iterdir()
        if folder.is_dir() and not folder.name.startswith(".") and any(p.is_file() for p in folder.rglob("*"))
    )
    return [
        Subject(folder.name, folder, output_folder / f"{folder.name}.lca", slot)
        for slot, folder in enumerate(folders)
    ]


def place_in_row(objects: list[bpy.types.Object], slot: int, spacing_m: float) -> None:
    """Move the imported avatar's top objects to X = slot × spacing (children follow their parents)."""
    created = set(objects)
    for obj in objects:
        if obj.parent is None or obj.parent not in created:
            obj.location.x = slot * spacing_m


def write_report(results: list[SubjectResult]) -> bpy.types.Text:
    """The batch's outcome per subject, in a text block an artist can open in the Text Editor."""
    text = bpy.data.texts.get(REPORT_TEXT) or bpy.data.texts.new(REPORT_TEXT)
    counts = {
        outcome: sum(r.outcome == outcome for r in results) for outcome in ("built", "skipped", "failed")
    }
    lines = [
        f"LCA batch: {counts['built']} built, {counts['skipped']} skipped, {counts['failed']} failed",
        "",
    ]
    for result in results:
        detail = f": {result.detail}" if result.detail else ""
        lines.append(f"{result.subject.name}: {result.outcome}{detail}")
    text.from_string("\n".join(lines) + "\n")
    return text


class BatchController(EngineController):
    """Builds the subjects one at a time; `step()` starts, polls and imports, never waits."""

    def __init__(
        self,
        scene: bpy.types.Scene,
        subjects: list[Subject],
        make_build: Callable[[Subject], AvatarBuild],
        on_built: Callable[[Path], list[bpy.types.Object]] = import_built_avatar,
        spacing_m: float = 1.0,
    ) -> None:
        super().__init__(scene)
        self.subjects = subjects
        self.make_build = make_build
        self.on_built = on_built
        self.spacing_m = spacing_m
        self.results: list[SubjectResult] = []
        self._pending = list(subjects)
        self._current: tuple[Subject, AvatarBuild] | None = None
        self._to_build = 0

    def start(self) -> BatchController:
        self._claim(f"Batch of {len(self.subjects)} subjects")
        for subject in self.subjects:
            if subject.is_up_to_date():
                self.results.append(SubjectResult(subject, "skipped", "up to date"))
                self._pending.remove(subject)
        self._to_build = len(self._pending)
        return self

    @property
    def failures(self) -> list[SubjectResult]:
        return [result for result in self.results if result.outcome == "failed"]

    def step(self) -> JobStatus:
        if self.status.finished:
            return self.status
        if self._current is None:
            if not self._pending:
                self._finish()
                return self.status
            self._start_next()
            if self._current is None:
                return self.status
        subject, build = self._current
        events = build.poll()
        done = self._to_build - len(self._pending) - 1
        if events:
            event = events[-1]
            overall = (done + event.bar_fraction) / max(self._to_build, 1)
            stage = f"{subject.name} ({done + 1}/{self._to_build}): {event.label}"
            show_progress(self.scene_name, overall, stage, event.message, running=True)
        if build.status.finished:
            self._current = None
            self._record(subject, build)
        return self.status

    def cancel(self) -> None:
        if self.status.finished:
            return
        if self._current is not None:
            subject, build = self._current
            build.cancel()
            self.results.append(SubjectResult(subject, "cancelled"))
            self._current = None
        self.status = JobStatus.CANCELLED
        write_report(self.results)
        self._release("Cancelled", f"Batch cancelled after {len(self.results) - 1} subject(s)")

    def _start_next(self) -> None:
        subject = self._pending.pop(0)
        try:
            self._current = (subject, self.make_build(subject).start())
        except AvatarError as error:
            self.results.append(SubjectResult(subject, "failed", str(error)))

    def _record(self, subject: Subject, build: AvatarBuild) -> None:
        if build.status is not JobStatus.SUCCEEDED:
            self.results.append(SubjectResult(subject, "failed", build.error_message))
            return
        try:
            place_in_row(self.on_built(build.output), subject.slot, self.spacing_m)
        except AvatarError as error:
            self.results.append(SubjectResult(subject, "failed", f"import: {error}"))
        except BaseException:
            # A bug: it keeps its traceback, and the batch still ends so that another job can start.
            self.results.append(SubjectResult(subject, "failed", "import: an error in the add-on"))
            self.status = JobStatus.FAILED
            write_report(self.results)
            self._release("Failed", f"Batch stopped at {subject.name}: importing failed (see the console)")
            raise
        else:
            self.results.append(SubjectResult(subject, "built", str(build.output)))

    def _finish(self) -> None:
        write_report(self.results)
        failed = self.failures
        self.status = JobStatus.FAILED if failed and len(failed) == self._to_build else JobStatus.SUCCEEDED
        built = sum(result.outcome == "built" for result in self.results)
        message = (
            f"Batch: {built} built, {len(self.results) - built - len(failed)} skipped, {len(failed)} failed"
        )
        if failed:
            message += " (" + "; ".join(f"{r.subject.name}: {r.detail}" for r in failed) + ")"
        self._release("Done", message)


class LCA_OT_batch_build(ModalControllerMixin, bpy.types.Operator):
    """Build one avatar per subject folder and place them in a row (failures are reported, not fatal)"""

    bl_idname = "lca.batch_build"
    bl_label = "Batch Build Avatars"
    bl_options = {"REGISTER"}

    directory: bpy.props.StringProperty(
        name="Subjects", description="A folder holding one folder of photos per subject", subtype="DIR_PATH"
    )
    filter_folder: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    output_directory: bpy.props.StringProperty(
        name="Output",
        description="Where the avatars are written; empty: beside the subject folders",
        subtype="DIR_PATH",
    )
    spacing: bpy.props.FloatProperty(
        name="Spacing", description="Distance between avatars in the row", default=1.0, min=0.0, unit="LENGTH"
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return running_controller() is None

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        root = Path(bpy.path.abspath(self.directory))
        if not self.directory or not root.is_dir():
            self.report({"ERROR"}, f"Choose a folder of subject folders (got '{self.directory}')")
            return {"CANCELLED"}
        output_folder = Path(bpy.path.abspath(self.output_directory)) if self.output_directory else root
        subjects = find_subjects(root, output_folder)
        if not subjects:
            self.report({"ERROR"}, f"'{root}' holds no subject folders with photos")
            return {"CANCELLED"}
        try:
            command = engine.engine_start_command(context)
        except AvatarError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        options, environment = engine.build_options(context), engine.engine_env()

        def make_build(subject: Subject) -> AvatarBuild:
            return AvatarBuild(command, [subject.photos], subject.output, options, environment)

        return self.start_controller(
            context, lambda: BatchController(context.scene, subjects, make_build, spacing_m=self.spacing)
        )

    def finish_controller(self, context: bpy.types.Context) -> set[str]:
        if self._controller.status is JobStatus.SUCCEEDED and self._controller.failures:
            self.report({"WARNING"}, f"{self._controller.message}; see the '{REPORT_TEXT}' text")
            return {"FINISHED"}
        return super().finish_controller(context)


classes: tuple[type, ...] = (LCA_OT_batch_build,)
register, unregister = bpy.utils.register_classes_factory(classes)
