"""`batch_report.json`: what a batch did for each subject and why, written atomically as it goes.

It is also the batch's memory: a subject whose avatar exists and whose fingerprint is the one the
report recorded for it is skipped on the next run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import AvatarFileError
from ..formats.atomic import atomic_output
from ..formats.reading import open_regular_file, read_at_most

logger = logging.getLogger(__name__)

REPORT_NAME = "batch_report.json"
REPORT_VERSION = 1
MAX_REPORT_BYTES = 64 << 20

BUILT, SKIPPED, FAILED, CANCELLED = "built", "skipped", "failed", "cancelled"  # how a subject ended
PENDING, RUNNING = "pending", "running"  # while the batch runs
OUTCOMES = (BUILT, SKIPPED, FAILED, CANCELLED)
UP_TO_DATE = "up to date"


@dataclass
class SubjectRecord:
    """One subject's line in the report."""

    name: str
    status: str = PENDING  # built, skipped, failed, cancelled; pending or running while the batch runs
    avatar: str | None = None  # the avatar's file name in the output folder, once it exists
    fingerprint: str = ""  # of the inputs and settings the avatar was (or is being) built from
    reason: str = ""  # why it failed or was skipped, in the artist's words
    seconds: float | None = None  # the build's wall time
    command: str = ""  # the build's command line, to run it again by hand or on another machine
    details: list[str] = field(default_factory=list)  # the end of the engine's log, for failures


@dataclass
class BatchReport:
    """The whole batch: settings, timings, each subject in name order, and the cast's contact sheet."""

    subjects_folder: str
    output_folder: str
    build_options: list[str]
    jobs: int
    executor: str = "local"
    state: str = RUNNING  # running, finished or cancelled
    started_at: str = ""
    seconds: float = 0.0
    cast: str | None = None  # the contact sheet's file name in the output folder
    subjects: list[SubjectRecord] = field(default_factory=list)
    version: int = REPORT_VERSION

    def counts(self) -> dict[str, int]:
        statuses = [record.status for record in self.subjects]
        return {status: statuses.count(status) for status in (*OUTCOMES, PENDING, RUNNING)}

    def record(self, name: str) -> SubjectRecord | None:
        return next((record for record in self.subjects if record.name == name), None)

    def with_status(self, status: str) -> list[SubjectRecord]:
        return [record for record in self.subjects if record.status == status]

    def summary(self) -> str:
        """'4 built, 0 skipped, 2 failed' (and cancelled or unfinished subjects, when there are any)."""
        counts = self.counts()
        text = f"{counts[BUILT]} built, {counts[SKIPPED]} skipped, {counts[FAILED]} failed"
        unfinished = counts[CANCELLED] + counts[PENDING] + counts[RUNNING]
        return text + (f", {unfinished} cancelled" if unfinished else "")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts()}

    @classmethod
    def from_json(cls, data: Any) -> BatchReport:
        """The report in `data` (parsed JSON); raises ValueError when it is not one."""
        if not isinstance(data, dict) or data.get("version") != REPORT_VERSION:
            raise ValueError("not a batch report of this version")
        known = {item.name for item in fields(cls)} - {"subjects"}
        report = cls(**{name: value for name, value in data.items() if name in known})
        subject_fields = {item.name for item in fields(SubjectRecord)}
        for item in data.get("subjects", []):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ValueError("a subject without a name")
            report.subjects.append(SubjectRecord(**{k: v for k, v in item.items() if k in subject_fields}))
        return report


def write_report(folder: Path, report: BatchReport) -> Path:
    """Write the report into `folder` atomically: a reader sees the previous one or this one, whole."""
    path = Path(folder) / REPORT_NAME
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def read_report(folder: Path) -> BatchReport:
    """The report in `folder`; raises AvatarFileError when there is none or it cannot be read."""
    path = Path(folder) / REPORT_NAME
    try:
        with open_regular_file(path) as stream:
            text = read_at_most(stream, MAX_REPORT_BYTES)
        if len(text) > MAX_REPORT_BYTES:
            raise ValueError(f"it is larger than {MAX_REPORT_BYTES >> 20} MB")
        return BatchReport.from_json(json.loads(text.decode("utf-8")))
    except FileNotFoundError:
        raise AvatarFileError(f"'{folder}' holds no {REPORT_NAME}: no batch has written there.") from None
    except (OSError, ValueError, TypeError) as error:
        raise AvatarFileError(f"Cannot read the batch report '{path}': {error}.") from None


def previous_report(folder: Path) -> BatchReport | None:
    """The last batch's report in `folder`, or None (a damaged one is logged and set aside)."""
    if not (Path(folder) / REPORT_NAME).exists():
        return None
    try:
        return read_report(folder)
    except AvatarFileError as error:
        logger.warning("%s Every subject is checked again.", error)
        return None
