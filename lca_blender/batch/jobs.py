"""Each subject's build as a self-contained command line, and how many the machine runs at once.

A job carries everything it needs in its command line and a few environment variables, so any
executor can run it: a local process now, a cluster scheduler's job script later
(`Job.shell_command`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..addon.engine_process import ENGINE_COMMAND_VARIABLE
from .subjects import Subject

# One CPU build uses about this many cores well (torch's CPU kernels scale poorly beyond it), and
# about this much memory at its peak (measured: a preview build of 3 photos peaks near 1.6 GB).
CORES_PER_BUILD = 4
MEMORY_PER_BUILD = {"preview": 2 << 30, "standard": 4 << 30, "high": 8 << 30}
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder `import lca_blender` needs


@dataclass(frozen=True)
class BuildOptions:
    """The options of `lca-avatar build` that a batch passes on to each subject's build."""

    quality: str = "standard"
    device: str = "auto"
    body: str | None = None
    smplx: Path | None = None
    cache: Path | None = None
    no_cache: bool = False
    matte: bool = False
    tone_curve: str = "standard"
    skin_only: bool = False
    seed: int = 0

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> BuildOptions:
        return cls(**{option.name: getattr(args, option.name) for option in dataclasses.fields(cls)})

    def arguments(self) -> list[str]:
        """The options as `build` reads them."""
        words = ["--quality", self.quality, "--device", self.device, "--tone-curve", self.tone_curve]
        words += ["--seed", str(self.seed)]
        if self.body is not None:
            words += ["--body", self.body]
        if self.smplx is not None:
            words += ["--smplx", str(Path(self.smplx).absolute())]
        if self.cache is not None:
            words += ["--cache", str(Path(self.cache).absolute())]
        flags = {"--no-cache": self.no_cache, "--matte": self.matte, "--skin-only": self.skin_only}
        return words + [flag for flag, wanted in flags.items() if wanted]

    def settings(self) -> dict[str, Any]:
        """What shapes the avatar, for the fingerprint: not where it runs or where stages are kept."""
        shaping = dataclasses.asdict(self)
        for name in ("device", "cache", "no_cache"):
            del shaping[name]
        shaping["smplx"] = None if self.smplx is None else str(Path(self.smplx).absolute())
        return shaping


@dataclass(frozen=True)
class Job:
    """One subject's build: a whole command line and the environment variables it adds."""

    subject: Subject
    argv: tuple[str, ...]  # engine, `--progress jsonl build FOLDER -o OUT.lca` and the options
    environment: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.subject.name

    def shell_command(self) -> str:
        """The job as one POSIX shell line, for a scheduler's job script."""
        assignments = [f"{name}={shlex.quote(value)}" for name, value in sorted(self.environment.items())]
        return " ".join([*assignments, shlex.join(self.argv)])


def engine_command() -> list[str]:
    """The command that starts the engine: $LCA_ENGINE_COMMAND, else this Python's `-m lca_blender.cli`."""
    override = os.environ.get(ENGINE_COMMAND_VARIABLE, "")
    return shlex.split(override) if override else [sys.executable, "-m", "lca_blender.cli"]


def subject_job(subject: Subject, options: BuildOptions, engine: list[str] | None = None) -> Job:
    """The build of one subject, its progress as JSON lines on stdout (what executors read)."""
    build = ["build", str(subject.folder.absolute()), "-o", str(subject.output.absolute())]
    argv = [*(engine or engine_command()), "--progress", "jsonl", *build, *options.arguments()]
    paths = [str(PACKAGE_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return Job(subject, tuple(argv), {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))})


@dataclass(frozen=True)
class Machine:
    """What this machine offers a batch: cores, available memory, GPUs."""

    cores: int
    memory_bytes: int | None  # available now; None where the system does not say
    gpus: tuple[str, ...]  # CUDA device ids the builds may use

    @classmethod
    def this_one(cls) -> Machine:
        try:
            cores = len(os.sched_getaffinity(0))  # the cores this process may use (containers)
        except AttributeError:
            cores = os.cpu_count() or 1
        return cls(cores, _available_memory(), _cuda_devices())


def default_jobs(machine: Machine, options: BuildOptions) -> int:
    """How many builds run at once: one per GPU for GPU builds; else as many as the cores and the
    available memory allow (at least one)."""
    if machine.gpus and options.device != "cpu":
        return len(machine.gpus)
    jobs = max(1, machine.cores // CORES_PER_BUILD)
    if machine.memory_bytes is not None:
        jobs = min(jobs, max(1, machine.memory_bytes // MEMORY_PER_BUILD.get(options.quality, 4 << 30)))
    return jobs


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cuda_devices() -> tuple[str, ...]:
    """The NVIDIA GPUs the driver lists (Linux), narrowed by $CUDA_VISIBLE_DEVICES when it is set."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = (device.strip() for device in visible.split(","))
        return tuple(device for device in devices if device and device != "-1")
    try:
        count = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return ()
    return tuple(str(index) for index in range(count))
