"""Where a batch's jobs run: the `Executor` interface, and local processes behind it.

The runner only starts jobs, polls them and cancels them, so a cluster scheduler fits behind the
same interface: `start` submits `job.shell_command()`, `poll` reads the job's state (and its
JSON-lines progress from its log), `cancel` asks the scheduler to stop it.
"""

from __future__ import annotations

import os
import signal
from typing import Protocol

from ..addon.engine_process import EXIT_CANCELLED, EngineJob, JobStatus, ProgressEvent
from .jobs import Job

EXIT_BAD_INPUT = 2  # the engine's exit code for a problem with the inputs; its message says what
CANCEL_GRACE_S = 10.0  # a build cleans up within a second or two of SIGTERM; then it is killed


class RunningJob(Protocol):
    """A started job, as the runner sees it."""

    job: Job

    @property
    def status(self) -> JobStatus: ...

    def poll(self) -> list[ProgressEvent]:
        """The progress since the last call; waits for nothing."""

    def cancel(self) -> None:
        """Stop the job and wait until it has stopped (it leaves no partial avatar)."""

    def failure(self) -> str:
        """Why the job failed, in words an artist can act on ('' unless it failed)."""

    def log_tail(self) -> list[str]:
        """The last lines the job wrote about its failure (a traceback, for a bug)."""


class Executor(Protocol):
    """Runs jobs; the runner keeps at most `capacity` of them running at once."""

    capacity: int

    def start(self, job: Job, slot: int) -> RunningJob:
        """Start `job` in `slot` (0 .. capacity - 1, free until the job it held has finished)."""


class LocalExecutor:
    """Jobs as child processes of this one, sharing the machine's cores (and GPUs) between them."""

    def __init__(self, capacity: int, cores: int, gpus: tuple[str, ...] = ()) -> None:
        self.capacity = max(1, capacity)
        self.threads = max(1, cores // self.capacity)
        self.gpus = gpus

    def start(self, job: Job, slot: int) -> LocalRun:
        environment = {**os.environ, **job.environment}
        # OpenMP threads that spin while they wait collapse when anything else wants the cores:
        # a fit_gaussians step on 2 threads of a busy 2-core machine took 10.2 s spinning, 1.1 s
        # sleeping (1 thread: 1.1-1.5 s). Builds side by side are exactly that case.
        environment.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if self.capacity > 1:
            # Each build gets its share of the cores: oversubscribed threads slow every build down.
            for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                environment[variable] = str(self.threads)
        if self.gpus:
            environment["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        return LocalRun(job, EngineJob(job.argv, [], environment, progress_flag=False).start())


class LocalRun:
    """One job's process (an `EngineJob`: progress read from its stdout, never blocking)."""

    def __init__(self, job: Job, process: EngineJob) -> None:
        self.job = job
        self.process = process

    @property
    def status(self) -> JobStatus:
        return self.process.status

    def poll(self) -> list[ProgressEvent]:
        return self.process.poll()

    def cancel(self) -> None:
        self.process.cancel(grace_s=CANCEL_GRACE_S)

    def failure(self) -> str:
        if self.status is not JobStatus.FAILED:
            return ""
        return failure_reason(self.process.returncode, self.process.error_message)

    def log_tail(self) -> list[str]:
        return self.process.error_message.splitlines()


def failure_reason(returncode: int | None, engine_message: str) -> str:
    """A failed build's reason: the engine's own message for bad inputs, else what happened."""
    if returncode == EXIT_BAD_INPUT and engine_message:
        return engine_message
    if returncode is not None and returncode < 0:
        name = _signal_name(-returncode)
        if -returncode == signal.SIGKILL:
            return (
                f"The build was killed ({name}), most often because the machine ran out of memory: "
                "run the batch again with fewer --jobs."
            )
        return f"The build was stopped by {name}."
    if returncode == EXIT_CANCELLED:
        return "The build was cancelled."
    last_line = engine_message.strip().splitlines()[-1] if engine_message.strip() else "no message"
    return f"The engine failed unexpectedly (exit code {returncode}; a bug, please report it): {last_line}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
