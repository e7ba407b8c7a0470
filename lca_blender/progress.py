"""One progress interface for long work, rendered as a terminal bar, JSON lines, or nothing.

The engine reports through a `Progress`; the CLI picks the rendering (a bar on a terminal, JSON
lines for the Blender add-on, which turns them into its own progress bar). A `Progress` also
carries cancellation: long loops call `check_cancelled()`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO


class Cancelled(Exception):
    """Raised inside long work when the user asked to stop."""


class Progress:
    """Base progress: tracks the stage, the fraction done and an ETA; shows nothing."""

    def __init__(self) -> None:
        self.stage_name = ""
        self.stage_started = time.monotonic()
        self.cancel_requested = False

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

    def _show(self, fraction: float, message: str, eta: float | None) -> None:
        pass


class JsonLinesProgress(Progress):
    """One JSON object per line: {"stage", "fraction", "message", "eta_s"} (read by the add-on)."""

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
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        eta_text = "" if eta is None else f" ETA {eta:4.0f}s"
        line = f"\r{self.stage_name:>14} [{bar}] {fraction:4.0%}{eta_text} {message}"
        self.stream.write(line[:120].ljust(120))
        if fraction >= 1.0:
            self.stream.write("\n")
        self.stream.flush()
