"""The engine as a subprocess seen from Blender: start it, read its JSON-lines progress, cancel it.

Standard library only, no bpy: the add-on's build, batch and install operators step these objects
from a window-manager timer, and tests step them directly. Nothing here blocks on the engine's
output; a reader thread per pipe feeds a queue that `poll()` drains.
"""

from __future__ import annotations

import enum
import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..errors import AvatarError
from ..progress import Overall

# The engine's Python, for a set-up that the preferences do not name (render nodes, CI).
ENGINE_PYTHON_VARIABLE = "LCA_ENGINE_PYTHON"
# A whole command standing in for `<python> -m lca_blender.cli` (tests use a fake engine script).
ENGINE_COMMAND_VARIABLE = "LCA_ENGINE_COMMAND"
ERROR_PREFIX = "lca-avatar: error:"
EXIT_CANCELLED = 130
STDERR_TAIL_LINES = 200


class EngineNotFoundError(AvatarError):
    """No engine Python is configured or could be found."""


class JobStatus(enum.Enum):
    NOT_STARTED = "not started"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class ProgressEvent:
    """One line of the engine's `--progress jsonl` output (see `progress.JsonLinesProgress`)."""

    stage: str
    fraction: float  # of the current stage, in [0, 1]
    message: str = ""
    eta_s: float | None = None  # seconds left in the stage; None while unknown
    overall: Overall | None = None  # the whole job, when the engine announced its stages

    @classmethod
    def from_json_line(cls, line: str) -> ProgressEvent | None:
        """The event on `line`, or None when the line is not a progress record."""
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if not isinstance(record, dict) or "stage" not in record or "fraction" not in record:
            return None
        try:
            fraction = _fraction(record["fraction"])
            eta = _seconds(record.get("eta_s"))
        except (TypeError, ValueError):
            return None
        message = str(record.get("message") or "")
        return cls(str(record["stage"]), fraction, message, eta, _overall(record.get("overall")))

    @property
    def bar_fraction(self) -> float:
        """What a progress bar fills: the whole job's fraction when known, else the stage's."""
        return self.fraction if self.overall is None else self.overall.fraction

    @property
    def eta_text(self) -> str:
        return eta_text(self.eta_s if self.overall is None else self.overall.eta_s)

    @property
    def label(self) -> str:
        """What a progress bar shows: the stage (numbered in the job) and, when known, the time left."""
        stage = self.stage
        if self.overall is not None:
            stage = f"{stage}, step {self.overall.step} of {self.overall.steps}"
        eta = self.eta_text
        return f"{stage} ({eta})" if eta else stage


def _overall(record) -> Overall | None:
    """The whole job's progress from an event's "overall" object; None when absent or damaged
    (the stage's own progress still counts)."""
    try:
        step, steps = int(record["step"]), int(record["steps"])
        overall = Overall(_fraction(record["fraction"]), _seconds(record.get("eta_s")), step, steps)
    except (TypeError, ValueError, KeyError, IndexError):
        return None
    return overall if 1 <= step <= steps else None


def _fraction(value) -> float:
    return min(max(float(value), 0.0), 1.0)


def _seconds(value) -> float | None:
    return None if value is None else max(float(value), 0.0)


def eta_text(seconds: float | None) -> str:
    """'12 s left', '3 min left', '1 h 05 min left', or '' while unknown."""
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s left"
    if seconds < 3600:
        return f"{round(seconds / 60)} min left"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min left"


def venv_python(venv: Path) -> Path:
    """The interpreter inside a virtual environment, on this platform."""
    if sys.platform == "win32":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def find_engine_python(addon_root: Path, configured: str = "", extra_venvs: Iterable[Path] = ()) -> Path:
    """The engine's Python: the preference, else $LCA_ENGINE_PYTHON, else a venv that is set up.

    Looked for, in order: `configured` (the add-on preference), the environment variable, the
    `.venv` of the checkout the add-on runs from (made by `scripts/setup_engine_env.sh`), then
    `extra_venvs` (the environment "Install engine" made in the add-on's user folder).
    """
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise EngineNotFoundError(
                f"The engine Python set in the add-on preferences, '{path}', does not exist."
            )
        return path
    from_environment = os.environ.get(ENGINE_PYTHON_VARIABLE, "")
    if from_environment:
        path = Path(from_environment).expanduser()
        if not path.is_file():
            raise EngineNotFoundError(f"${ENGINE_PYTHON_VARIABLE} names '{path}', which does not exist.")
        return path
    for venv in (addon_root / ".venv", *extra_venvs):
        candidate = venv_python(venv)
        if candidate.is_file():
            return candidate
    raise EngineNotFoundError(
        "The engine is not installed. Use 'Install engine' in the add-on preferences, or set "
        "'Engine Python' to the Python of an environment where `pip install lca-avatars[engine]` ran."
    )


def engine_command(
    addon_root: Path, configured_python: str = "", extra_venvs: Iterable[Path] = ()
) -> list[str]:
    """The command that starts the engine, before its arguments: `<python> -m lca_blender.cli`."""
    override = os.environ.get(ENGINE_COMMAND_VARIABLE, "")
    if override:
        return shlex.split(override)
    python = find_engine_python(addon_root, configured_python, extra_venvs)
    return [str(python), "-m", "lca_blender.cli"]


def engine_environment(addon_root: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The engine's environment: `lca_blender` resolves to the add-on's own copy of the core."""
    environment = dict(os.environ if base is None else base)
    # Blender's own Python settings must not leak into the engine's interpreter.
    for variable in ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONNOUSERSITE"):
        environment.pop(variable, None)
    paths = [str(addon_root)] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


class EngineJob:
    """One engine run: `[*command, "--progress", "jsonl", *arguments]` as a child process.

    `poll()` returns the progress events that arrived since the last call and updates `status`;
    `cancel()` asks the engine to stop (SIGTERM: it cleans up as on Ctrl-C) and kills it if it
    has not stopped within `grace_s`.
    """

    def __init__(
        self,
        command: Sequence[str],
        arguments: Sequence[str],
        environment: dict[str, str] | None = None,
        progress_flag: bool = True,
    ) -> None:
        flags = ["--progress", "jsonl"] if progress_flag else []
        self.argv = [*command, *flags, *arguments]
        self.environment = environment
        self.status = JobStatus.NOT_STARTED
        self.returncode: int | None = None
        self.last_event: ProgressEvent | None = None
        self.output_lines: list[str] = []  # stdout lines that are not progress records
        self._process: subprocess.Popen[str] | None = None
        self._stdout: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stderr: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._readers: list[threading.Thread] = []
        self._cancel_requested = False

    def start(self) -> EngineJob:
        try:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                env=self.environment,
            )
        except OSError as error:
            raise EngineNotFoundError(
                f"Cannot start the engine ({self.argv[0]}): {error.strerror}."
            ) from error
        self.status = JobStatus.RUNNING
        pipes = ((self._process.stdout, self._stdout.put), (self._process.stderr, self._stderr.append))
        self._readers = [
            threading.Thread(target=_read_lines, args=pipe, daemon=True, name="lca-engine-reader")
            for pipe in pipes
        ]
        for reader in self._readers:
            reader.start()
        return self

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def poll(self) -> list[ProgressEvent]:
        """The progress events since the last call; waits for nothing while the engine runs."""
        if self._process is None:
            return []
        # Read the exit status first: once the process has exited, the readers end shortly after
        # and the queue then holds everything it printed.
        returncode = self._process.poll()
        if returncode is not None and not self.status.finished:
            for reader in self._readers:
                # Bounded: a process the engine started may still hold its pipes open.
                reader.join(timeout=1.0)
        events = []
        while True:
            try:
                line = self._stdout.get_nowait()
            except queue.Empty:
                break
            event = ProgressEvent.from_json_line(line)
            if event is None:
                if line.strip():
                    self.output_lines.append(line.rstrip("\n"))
            else:
                events.append(event)
        if events:
            self.last_event = events[-1]
        if returncode is not None and not self.status.finished:
            self._finish(returncode)
        return events

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the engine exits (for command-line use and tests; the add-on polls)."""
        if self._process is not None:
            self._process.wait(timeout)
        self.poll()
        return self.status

    def cancel(self, grace_s: float = 3.0) -> None:
        """Stop the engine: SIGTERM, then SIGKILL after `grace_s`; reaps it (no zombie is left)."""
        if self._process is None or self.status.finished:
            return
        self._cancel_requested = True
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self.poll()

    @property
    def error_message(self) -> str:
        """Why the engine failed: its last `lca-avatar: error:` line, else the end of its stderr."""
        lines = [line.rstrip("\n") for line in self._stderr]
        for line in reversed(lines):
            if line.startswith(ERROR_PREFIX):
                return line[len(ERROR_PREFIX) :].strip()
        tail = [line for line in lines if line.strip()][-5:]
        if tail:
            return "\n".join(tail)
        if self.returncode is not None and self.returncode != 0:
            return f"The engine stopped with exit code {self.returncode} and said nothing."
        return ""

    def _finish(self, returncode: int) -> None:
        self.returncode = returncode
        if self._cancel_requested or returncode == EXIT_CANCELLED:
            self.status = JobStatus.CANCELLED
        elif returncode == 0:
            self.status = JobStatus.SUCCEEDED
        else:
            self.status = JobStatus.FAILED


def _read_lines(stream: TextIO, deliver: Callable[[str], None]) -> None:
    # The reader closes its own pipe: closing it from another thread while it reads could deadlock.
    with stream:
        for line in iter(stream.readline, ""):
            deliver(line)


class AvatarBuild:
    """`build PHOTOS... -o OUTPUT` run so that OUTPUT appears whole, or nothing at all is left.

    The engine writes into a private work folder beside the output (its stage caches included);
    on success the avatar is moved into place, on failure or cancel the folder is removed.
    """

    def __init__(
        self,
        command: Sequence[str],
        photos: Sequence[Path],
        output: Path,
        options: Sequence[str] = (),
        environment: dict[str, str] | None = None,
    ) -> None:
        self.command = list(command)
        self.photos = [Path(photo) for photo in photos]
        self.output = Path(output)
        self.options = list(options)
        self.environment = environment
        self.job: EngineJob | None = None
        self.work_folder: Path | None = None
        self.started_at = 0.0
        self._missing_output = False  # the engine said it succeeded but wrote no avatar

    def start(self) -> AvatarBuild:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.work_folder = Path(
            tempfile.mkdtemp(prefix=f".{self.output.name}.building-", dir=self.output.parent)
        )
        arguments = ["build", *map(str, self.photos), "-o", str(self.work_folder / self.output.name)]
        self.job = EngineJob(self.command, [*arguments, *self.options], self.environment)
        self.started_at = time.monotonic()
        try:
            self.job.start()
        except BaseException:
            self._remove_work_folder()
            raise
        return self

    @property
    def status(self) -> JobStatus:
        if self.job is None:
            return JobStatus.NOT_STARTED
        return JobStatus.FAILED if self._missing_output else self.job.status

    @property
    def error_message(self) -> str:
        if self._missing_output:
            return f"The engine finished without writing '{self.output.name}'."
        return "" if self.job is None else self.job.error_message

    def poll(self) -> list[ProgressEvent]:
        if self.job is None:
            return []
        was_finished = self.job.status.finished
        events = self.job.poll()
        if self.job.status.finished and not was_finished:
            self._settle()
        return events

    def cancel(self) -> None:
        if self.job is not None and not self.job.status.finished:
            self.job.cancel()
            self._settle()

    def _settle(self) -> None:
        built = None if self.work_folder is None else self.work_folder / self.output.name
        if self.job.status is JobStatus.SUCCEEDED:
            if built is not None and built.is_file():
                os.replace(built, self.output)
            else:
                self._missing_output = True
        self._remove_work_folder()

    def _remove_work_folder(self) -> None:
        if self.work_folder is not None:
            shutil.rmtree(self.work_folder, ignore_errors=True)
            self.work_folder = None
