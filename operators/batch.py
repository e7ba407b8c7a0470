"""Batch builds: the engine's `lca-avatar batch` makes one avatar per subject folder; the add-on shows
its progress, then imports the avatars it built in a row along X and shows its report.

What is built, in parallel or skipped as up to date, and why a subject failed, is decided by the
engine's batch (lca_blender/batch/), the same command a render node runs; it leaves its report
(batch_report.json) and a contact sheet of the cast (cast.png) beside the avatars.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import bpy

from ..lca_blender.addon.engine_process import EngineJob, JobStatus
from ..lca_blender.batch.report import BUILT, FAILED, REPORT_NAME, BatchReport, read_report
from ..lca_blender.batch.subjects import find_subjects
from ..lca_blender.errors import AvatarError
from . import engine
from .build import import_built_avatar
from .engine import EngineController, ModalControllerMixin, running_controller, show_progress

REPORT_TEXT = "LCA batch report"
# The engine stops its running builds on Cancel (each within a second or two) and writes its report.
CANCEL_GRACE_S = 30.0


def place_in_row(objects: list[bpy.types.Object], slot: int, spacing_m: float) -> None:
    """Move the imported avatar's top objects to X = slot × spacing (children follow their parents)."""
    created = set(objects)
    for obj in objects:
        if obj.parent is None or obj.parent not in created:
            obj.location.x = slot * spacing_m


def write_report_text(report: BatchReport | None, problems: Sequence[str] = ()) -> bpy.types.Text:
    """The batch's outcome per subject, in a text block an artist can open in the Text Editor."""
    text = bpy.data.texts.get(REPORT_TEXT) or bpy.data.texts.new(REPORT_TEXT)
    lines = [f"LCA batch: {report.summary() if report else 'no report'}", ""]
    for record in report.subjects if report else ():
        lines.append(f"{record.name}: {record.status}" + (f": {record.reason}" if record.reason else ""))
    lines += list(problems)
    if report is not None:
        lines += ["", f"Report: {Path(report.output_folder) / REPORT_NAME}"]
        if report.cast:
            lines.append(f"Contact sheet: {Path(report.output_folder) / report.cast}")
    text.from_string("\n".join(lines) + "\n")
    return text


class BatchController(EngineController):
    """One `lca-avatar batch` run: `step()` shows its progress and, once it ends, imports what it built."""

    def __init__(
        self,
        scene: bpy.types.Scene,
        command: Sequence[str],
        subjects_folder: Path,
        output_folder: Path,
        options: Sequence[str] = (),
        environment: dict[str, str] | None = None,
        on_built: Callable[[Path], list[bpy.types.Object]] = import_built_avatar,
        spacing_m: float = 1.0,
    ) -> None:
        super().__init__(scene)
        self.output_folder = Path(output_folder)
        arguments = ["batch", str(subjects_folder), "-o", str(self.output_folder), *options]
        self.job = EngineJob(command, arguments, environment)
        self.on_built = on_built
        self.spacing_m = spacing_m
        self.report: BatchReport | None = None
        self.import_failures: list[str] = []

    def start(self) -> BatchController:
        self._claim("Batch build")
        try:
            self.job.start()
        except AvatarError:
            self._release("Failed", "The engine did not start")
            self.status = JobStatus.FAILED
            raise
        return self

    @property
    def failures(self) -> list[str]:
        """'name: reason' for each subject that failed, its import included."""
        failed = [] if self.report is None else self.report.with_status(FAILED)
        return [f"{record.name}: {record.reason}" for record in failed] + self.import_failures

    def step(self) -> JobStatus:
        if self.status.finished:
            return self.status
        events = self.job.poll()
        if events:
            event = events[-1]
            stage = f"Batch ({event.eta_text})" if event.eta_text else "Batch"
            show_progress(self.scene_name, event.bar_fraction, stage, event.message, running=True)
        if self.job.status.finished:
            self._finish()
        return self.status

    def cancel(self) -> None:
        if self.status.finished:
            return
        self.job.cancel(grace_s=CANCEL_GRACE_S)
        self.status = JobStatus.CANCELLED
        self.report = self._read_report()
        write_report_text(self.report)
        done = "" if self.report is None else f" ({self.report.summary()})"
        self._release("Cancelled", f"Batch cancelled{done}")

    def _read_report(self) -> BatchReport | None:
        try:
            return read_report(self.output_folder)
        except AvatarError:
            return None

    def _finish(self) -> None:
        self.report = self._read_report()
        if self.report is None:  # the engine stopped before its first subject (a bad folder, a bug)
            self.status = JobStatus.FAILED
            write_report_text(None, [self.job.error_message])
            self._release("Failed", f"Batch failed: {self.job.error_message}")
            return
        for slot, record in enumerate(self.report.subjects):
            if record.status == BUILT:
                self._import(record.name, self.output_folder / record.avatar, slot)
        write_report_text(self.report, [f"{failure} (import)" for failure in self.import_failures])
        # A run whose every build failed failed; one that built some, or had nothing to build, did not.
        built = len(self.report.with_status(BUILT)) - len(self.import_failures)
        self.status = JobStatus.FAILED if self.failures and built <= 0 else JobStatus.SUCCEEDED
        if self.job.status is JobStatus.CANCELLED:  # stopped from outside the add-on
            self.status = JobStatus.CANCELLED
        message = f"Batch: {self.report.summary()}"
        if self.failures:
            message += " (" + "; ".join(self.failures) + ")"
        self._release("Done", message)

    def _import(self, name: str, path: Path, slot: int) -> None:
        try:
            place_in_row(self.on_built(path), slot, self.spacing_m)
        except AvatarError as error:
            self.import_failures.append(f"{name}: {error}")
        except BaseException:
            # A bug: it keeps its traceback, and the batch still ends so that another job can start.
            self.status = JobStatus.FAILED
            write_report_text(self.report, [f"{name}: importing failed (an error in the add-on)"])
            self._release("Failed", f"Batch stopped at {name}: importing failed (see the console)")
            raise


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
        description="Where the avatars, the report and the contact sheet are written; empty: beside "
        "the subject folders",
        subtype="DIR_PATH",
    )
    spacing: bpy.props.FloatProperty(
        name="Spacing", description="Distance between avatars in the row", default=1.0, min=0.0, unit="LENGTH"
    )
    jobs: bpy.props.IntProperty(
        name="Builds at Once",
        description="How many subjects build in parallel; 0: as many as the machine's cores, memory "
        "and GPUs allow",
        default=0,
        min=0,
        max=64,
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
        try:
            if not find_subjects(root, output_folder):
                self.report({"ERROR"}, f"'{root}' holds no subject folders with photos")
                return {"CANCELLED"}
            command = engine.engine_start_command(context)
        except AvatarError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        options = engine.build_options(context) + (["--jobs", str(self.jobs)] if self.jobs else [])
        return self.start_controller(
            context,
            lambda: BatchController(
                context.scene,
                command,
                root,
                output_folder,
                options,
                engine.engine_env(),
                spacing_m=self.spacing,
            ),
        )

    def finish_controller(self, context: bpy.types.Context) -> set[str]:
        if self._controller.status is JobStatus.SUCCEEDED and self._controller.failures:
            self.report({"WARNING"}, f"{self._controller.message}; see the '{REPORT_TEXT}' text")
            return {"FINISHED"}
        return super().finish_controller(context)


classes: tuple[type, ...] = (LCA_OT_batch_build,)
register, unregister = bpy.utils.register_classes_factory(classes)
