"""Drive a batch to its end: skip what is current, run the rest through an executor, report as it goes.

A failed subject is recorded with its reason and the batch goes on. The report is rewritten
atomically whenever a subject starts or ends, so a batch stopped in any way (Ctrl-C, the add-on's
Cancel, a killed machine) leaves a report that the next run resumes from; the avatars themselves
are written atomically by the builds, so none is ever partial.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..addon.engine_process import JobStatus
from ..errors import AvatarError, AvatarWriteError
from ..progress import Progress
from .executors import Executor, RunningJob
from .jobs import BuildOptions, Job, subject_job
from .report import (
    BUILT,
    CANCELLED,
    FAILED,
    RUNNING,
    SKIPPED,
    UP_TO_DATE,
    BatchReport,
    SubjectRecord,
    previous_report,
    write_report,
)
from .subjects import Subject, find_subjects, fingerprint

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
NOT_STARTED = "The batch was cancelled before this subject's build started."
CastMaker = Callable[[BatchReport, Path], "str | None"]


def run_batch(
    subjects_folder: str | Path,
    output_folder: str | Path,
    options: BuildOptions,
    executor: Executor,
    progress: Progress | None = None,
    rebuild: bool = False,
    make_cast: CastMaker | None = None,
    engine: Sequence[str] | None = None,
) -> BatchReport:
    """Build an avatar per subject folder of `subjects_folder` into `output_folder`/<subject>.lca.

    A subject is skipped when its avatar exists and the last report recorded the fingerprint it
    has now (the same files and settings); `rebuild` builds every subject anyway. `make_cast`
    (report, folder) -> file name draws the contact sheet at the end. `engine` is the command that
    starts the engine (default: `jobs.engine_command()`). Returns the final report, also written
    to `output_folder`/batch_report.json; on Ctrl-C (KeyboardInterrupt) or `Cancelled`, running
    builds are stopped, the report says so, and the exception goes on.
    """
    root, folder = Path(subjects_folder), Path(output_folder)
    subjects = [subject for subject in find_subjects(root, folder) if not _is_output(subject, folder)]
    if not subjects:
        raise AvatarError(
            f"'{root}' holds no subject folders with photos: put each person's photos in a folder "
            "of their own inside it."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AvatarWriteError(f"Cannot make the output folder '{folder}': {error.strerror}.") from None
    report, jobs = plan_batch(subjects, folder, options, executor.capacity, rebuild, engine)
    progress = progress or Progress()
    progress.stage(
        "batch", f"{len(jobs)} of {len(subjects)} subjects to build, {executor.capacity} at a time"
    )
    started = time.monotonic()
    try:
        _Drive(report, folder, executor, jobs, progress).run()
        if make_cast is not None:
            progress.update(1.0, "Drawing the cast's contact sheet")
            report.cast = make_cast(report, folder)
        report.state = "finished"
    except BaseException:
        report.state = CANCELLED
        raise
    finally:
        report.seconds = round(time.monotonic() - started, 1)
        write_report(folder, report)
    progress.done(f"Batch: {report.summary()}")
    return report


def plan_batch(
    subjects: Sequence[Subject],
    folder: Path,
    options: BuildOptions,
    capacity: int,
    rebuild: bool = False,
    engine: Sequence[str] | None = None,
) -> tuple[BatchReport, list[Job]]:
    """The report as the batch starts (current subjects already skipped) and the jobs to run."""
    previous = previous_report(folder)
    report = BatchReport(
        subjects_folder=str(subjects[0].folder.parent.absolute()),
        output_folder=str(folder.absolute()),
        build_options=options.arguments(),
        jobs=capacity,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    jobs = []
    for subject in subjects:
        record = SubjectRecord(subject.name, fingerprint=fingerprint(subject, options.settings()))
        earlier = None if previous is None else previous.record(subject.name)
        if (
            not rebuild
            and earlier is not None
            and earlier.status in (BUILT, SKIPPED)
            and earlier.fingerprint == record.fingerprint
            and subject.output.is_file()
        ):
            record.status, record.reason, record.avatar = SKIPPED, UP_TO_DATE, subject.output.name
            record.seconds, record.command = earlier.seconds, earlier.command
        else:
            job = subject_job(subject, options, list(engine) if engine else None)
            record.command = job.shell_command()
            jobs.append(job)
        report.subjects.append(record)
    return report, jobs


def _is_output(subject: Subject, output_folder: Path) -> bool:
    """The output folder inside the subjects' folder is not a subject."""
    return subject.folder.resolve() == output_folder.resolve()


@dataclass
class _Slot:
    run: RunningJob
    started: float
    fraction: float = 0.0


class _Drive:
    """The batch's loop: keep the executor's slots busy, settle jobs as they end, show progress."""

    def __init__(
        self, report: BatchReport, folder: Path, executor: Executor, jobs: list[Job], progress: Progress
    ) -> None:
        self.report, self.folder, self.executor, self.progress = report, folder, executor, progress
        self.queue = list(jobs)
        self.total = len(jobs)
        self.slots: dict[int, _Slot] = {}
        self.ended = 0
        self._shown = ("", -1.0)

    def run(self) -> None:
        try:
            while self.queue or self.slots:
                self._fill_slots()
                for index, slot in list(self.slots.items()):
                    events = slot.run.poll()
                    if events:
                        slot.fraction = events[-1].bar_fraction
                    if slot.run.status.finished:
                        del self.slots[index]
                        self._settle(slot)
                self._show()
                if self.slots:
                    time.sleep(POLL_INTERVAL_S)
        except BaseException:
            self._stop_all()
            raise

    def _fill_slots(self) -> None:
        for index in range(self.executor.capacity):
            if not self.queue:
                return
            if index in self.slots:
                continue
            job = self.queue.pop(0)
            record = self.report.record(job.name)
            record.status = RUNNING
            self.slots[index] = _Slot(self.executor.start(job, index), time.monotonic())
            write_report(self.folder, self.report)

    def _settle(self, slot: _Slot) -> None:
        run, record = slot.run, self.report.record(slot.run.job.name)
        record.seconds = round(time.monotonic() - slot.started, 1)
        self.ended += 1
        if run.status is JobStatus.SUCCEEDED and run.job.subject.output.is_file():
            record.status, record.avatar, record.reason = BUILT, run.job.subject.output.name, ""
        elif run.status is JobStatus.SUCCEEDED:
            record.status = FAILED
            record.reason = f"The engine finished without writing '{run.job.subject.output.name}'."
        elif run.status is JobStatus.CANCELLED:
            record.status, record.reason = CANCELLED, "The build was cancelled."
        else:
            record.status, record.reason = FAILED, run.failure()
            record.details = [line for line in run.log_tail() if line != record.reason]
            logger.warning("%s failed: %s", record.name, record.reason)
        write_report(self.folder, self.report)

    def _stop_all(self) -> None:
        """Stop every running build (each cleans up; none leaves a partial avatar), report them."""
        for slot in self.slots.values():
            slot.run.cancel()
        for slot in self.slots.values():
            record = self.report.record(slot.run.job.name)
            record.status, record.reason = CANCELLED, "The batch was cancelled during this subject's build."
            record.seconds = round(time.monotonic() - slot.started, 1)
        self.slots.clear()
        for job in self.queue:
            record = self.report.record(job.name)
            record.status, record.reason = CANCELLED, NOT_STARTED
        self.queue.clear()

    def _show(self) -> None:
        fraction = (self.ended + sum(slot.fraction for slot in self.slots.values())) / max(self.total, 1)
        building = ", ".join(
            f"{slot.run.job.name} {slot.fraction:.0%}" for _, slot in sorted(self.slots.items())
        )
        counts = self.report.counts()
        message = f"{self.ended}/{self.total} done ({counts[FAILED]} failed)" + (
            f"; building {building}" if building else ""
        )
        if (message, round(fraction, 3)) != self._shown:
            self._shown = (message, round(fraction, 3))
            self.progress.update(fraction, message)
