"""One progress interface for long work, rendered as a terminal bar, JSON lines, or nothing.

The engine reports through a `Progress`; the CLI picks the rendering (a bar on a terminal, JSON
lines for the Blender add-on, which turns them into its own progress bar). A `Progress` also
carries cancellation: long loops call `check_cancelled()`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO


class Cancelled(Exception):
    """Raised inside long work when the user asked to stop."""


@dataclass(frozen=True)
class Overall:
    """Where a stage stands in the whole job, when the job announced its stages with `plan`."""

    fraction: float  # of the whole job, in [0, 1]
    eta_s: float | None  # seconds left in the whole job; None while unknown
    step: int  # the stage's number, from 1
    steps: int


class Progress:
    """Base progress: tracks the stage, the fraction done and an ETA; shows nothing."""

    def __init__(self) -> None:
        self.stage_name = ""
        self.stage_started = time.monotonic()
        self.cancel_requested = False
        self._plan: dict[str, float] = {}

    def plan(self, shares: Mapping[str, float]) -> None:
        """Announce the job's stages, in order, with the share of the job's time each takes.

        Stages in the plan are then also reported as a fraction of the whole job with its ETA:
        the stages left are assumed to run at the current stage's pace relative to its share, so a
        slow machine or a cached stage does not skew the estimate.
        """
        total = sum(shares.values())
        if not shares or total <= 0 or min(shares.values()) < 0:
            raise ValueError("a progress plan needs stages with non-negative shares")
        self._plan = {name: share / total for name, share in shares.items()}

    def stage(self, name: str, message: str = "") -> None:
        """Start a named stage (resets the fraction to 0)."""
        self.stage_name = name
        self.stage_started = time.monotonic()
        self._show(0.0, message, eta=None)

    def update(self, fraction: float, message: str = "") -> None:
        """Report the fraction of the current stage done, in [0, 1]."""
        fraction = min(max(fraction, 0.0), 1.0)
        elapsed = time.monotonic() - self.stage_started
        eta = elapsed * (1.0 - fraction) / fraction if fraction > 0.01 else None
        self._show(fraction, message, eta)
        self.check_cancelled()

    def done(self, message: str = "") -> None:
        self._show(1.0, message, eta=0.0)

    def check_cancelled(self) -> None:
        if self.cancel_requested:
            raise Cancelled(f"Cancelled during '{self.stage_name}'.")

    def overall(self, fraction: float, eta: float | None) -> Overall | None:
        """The current stage's `fraction` and `eta` seen in the whole job; None outside the plan."""
        if self.stage_name not in self._plan:
            return None
        names = list(self._plan)
        step = names.index(self.stage_name)
        share = self._plan[self.stage_name]
        before = sum(self._plan[name] for name in names[:step])
        after = sum(self._plan[name] for name in names[step + 1 :])
        job_eta = None
        if eta is not None and after == 0:
            job_eta = eta
        elif eta is not None and share > 0 and fraction > 0.01:
            seconds_per_share = (time.monotonic() - self.stage_started) / fraction / share
            job_eta = eta + after * seconds_per_share
        return Overall(min(before + share * fraction, 1.0), job_eta, step + 1, len(names))

    def _show(self, fraction: float, message: str, eta: float | None) -> None:
        pass


class JsonLinesProgress(Progress):
    """One JSON object per line, read by the add-on: {"stage", "fraction", "message", "eta_s"}, and
    "overall": {"fraction", "eta_s", "step", "steps"} for stages of the job's plan."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stdout

    def _show(self, fraction: float, message: str, eta: float | None) -> None:
        record = {
            "stage": self.stage_name,
            "fraction": round(fraction, 4),
            "message": message,
            "eta_s": None if eta is None else round(eta, 1),
        }
        overall = self.overall(fraction, eta)
        if overall is not None:
            record["overall"] = {
                "fraction": round(overall.fraction, 4),
                "eta_s": None if overall.eta_s is None else round(overall.eta_s, 1),
                "step": overall.step,
                "steps": overall.steps,
            }
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


class TerminalProgress(Progress):
    """A one-line progress bar on a terminal (stderr), redrawn at most ten times a second."""

    width = 30

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self._last_draw = 0.0

    def _show(self, fraction: float, message: str, eta: float | None) -> None:
        now = time.monotonic()
        if 0.0 < fraction < 1.0 and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        # With a plan, the bar is the whole job's and the stage is numbered.
        overall = self.overall(fraction, eta)
        name = self.stage_name
        if overall is not None:
            fraction, eta, name = overall.fraction, overall.eta_s, f"{overall.step}/{overall.steps} {name}"
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        eta_text = "" if eta is None else f" ETA {eta:4.0f}s"
        line = f"\r{name:>18} [{bar}] {fraction:4.0%}{eta_text} {message}"
        self.stream.write(line[:120].ljust(120))
        if fraction >= 1.0:
            self.stream.write("\n")
        self.stream.flush()
