"""Progress reporting: a job's plan turns stage fractions into whole-job fractions and ETAs."""

from __future__ import annotations

import io
import json

import pytest

from lca_blender import progress as progress_module
from lca_blender.progress import JsonLinesProgress, Overall, Progress, TerminalProgress


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    return clock


def test_stage_eta_is_the_pace_so_far(clock: _Clock) -> None:
    progress = Progress()
    progress.stage("fit")
    clock.now += 30.0
    assert progress.overall(0.25, 90.0) is None  # no plan: no whole-job figures
    lines = io.StringIO()
    reporter = JsonLinesProgress(lines)
    reporter.stage("fit")
    clock.now += 30.0
    reporter.update(0.25, "a quarter")
    record = json.loads(lines.getvalue().splitlines()[-1])
    assert record == {"stage": "fit", "fraction": 0.25, "message": "a quarter", "eta_s": 90.0}


def test_plan_gives_the_whole_job_fraction_and_eta(clock: _Clock) -> None:
    lines = io.StringIO()
    progress = JsonLinesProgress(lines)
    progress.plan({"read": 1.0, "fit": 6.0, "write": 3.0})  # shares 0.1, 0.6, 0.3
    progress.stage("read")
    progress.done()  # a cached stage: no time at all
    progress.stage("fit")
    clock.now += 60.0
    progress.update(0.5)
    record = json.loads(lines.getvalue().splitlines()[-1])
    # Half of "fit" took 60 s: fit needs 120 s for its share 0.6, so "write" (0.3) needs 60 s;
    # left: 60 s of fit + 60 s of write.
    assert record["overall"] == {"fraction": 0.4, "eta_s": 120.0, "step": 2, "steps": 3}
    assert record["eta_s"] == 60.0
    progress.stage("write")
    clock.now += 10.0
    progress.update(0.5)
    assert progress.overall(0.5, 10.0) == Overall(0.85, 10.0, 3, 3)  # the last stage: its own ETA
    progress.stage("unplanned")
    progress.update(0.5)
    assert "overall" not in json.loads(lines.getvalue().splitlines()[-1])


def test_plan_is_checked() -> None:
    for bad in ({}, {"a": 0.0}, {"a": 1.0, "b": -0.5}):
        with pytest.raises(ValueError):
            Progress().plan(bad)


def test_terminal_bar_shows_the_whole_job(clock: _Clock) -> None:
    stream = io.StringIO()
    progress = TerminalProgress(stream)
    progress.plan({"read": 1.0, "fit": 1.0})
    progress.stage("fit")
    clock.now += 10.0
    progress.update(0.5)
    line = stream.getvalue().split("\r")[-1]
    assert "2/2 fit" in line and "75%" in line and "#" * 22 + "-" * 8 in line
