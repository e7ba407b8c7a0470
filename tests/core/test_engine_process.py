"""The engine subprocess as the add-on drives it: progress lines, failures, cancellation, clean-up."""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lca_blender.addon import engine_process
from lca_blender.addon.engine_process import (
    AvatarBuild,
    EngineJob,
    EngineNotFoundError,
    JobStatus,
    ProgressEvent,
    engine_command,
    engine_environment,
    eta_text,
    find_engine_python,
)
from lca_blender.progress import Overall

# Waits in these tests end as soon as the awaited line or exit arrives (well under a second when
# the code works). This bound only turns a hang into a failure that says so; it is not a speed
# requirement, so it is generous enough for a machine under any load.
HANG_GUARD_S = 300.0

# A stand-in for `lca-avatar --progress jsonl build PHOTOS -o OUT`: it reads what to do from an
# `engine.json` in the photos folder, prints progress lines, leaves a stage cache beside its
# output, then fails with the engine's error line or writes the output. With "hold", it stops
# after the first progress line until it is signalled (as a long stage would).
FAKE_ENGINE = """
import json, sys, time
from pathlib import Path

arguments = sys.argv[1:]
assert arguments[:3] == ["--progress", "jsonl", "build"], arguments
output = Path(arguments[arguments.index("-o") + 1])
photos = Path(arguments[3])
plan = json.loads((photos / "engine.json").read_text())
(output.parent / "stage-cache.npy").write_bytes(b"cache")
steps = plan.get("steps", 4)
for step in range(steps):
    fraction = (step + 1) / steps
    print(json.dumps({"stage": "fit_body", "fraction": fraction, "message": f"step {step + 1}",
                      "eta_s": 0.5 * (steps - step - 1)}), flush=True)
    print("a log line that is not progress", flush=True)
    if plan.get("hold"):
        time.sleep(600)
if "fail" in plan:
    print("WARNING something on the way", file=sys.stderr)
    print("lca-avatar: error: " + plan["fail"], file=sys.stderr)
    sys.exit(2)
if not plan.get("forget_output"):
    output.write_bytes(b"avatar")
print(f"Wrote {output}")
"""


@pytest.fixture
def fake_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    script = tmp_path / "fake_engine.py"
    script.write_text(FAKE_ENGINE)
    command = [sys.executable, str(script)]
    monkeypatch.setenv(engine_process.ENGINE_COMMAND_VARIABLE, shlex.join(command))
    return command


def _photos(folder: Path, **plan) -> Path:
    folder.mkdir(parents=True)
    (folder / "front.jpg").write_bytes(b"jpeg")
    (folder / "engine.json").write_text(json.dumps(plan))
    return folder


def _run_to_end(build: AvatarBuild) -> list[ProgressEvent]:
    """Every progress event until the engine exits, polled as the add-on's timer polls."""
    events = []
    deadline = time.monotonic() + HANG_GUARD_S
    while not build.status.finished:
        if time.monotonic() > deadline:
            pytest.fail(f"hang: the engine was still running after {HANG_GUARD_S:.0f} s")
        events += build.poll()
        time.sleep(0.01)
    return events


def _first_events(job: EngineJob | AvatarBuild) -> list[ProgressEvent]:
    """The first progress events: the child prints one once it is ready to be signalled."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not (events := job.poll()):
        if time.monotonic() > deadline:
            pytest.fail(f"hang: no progress line from the engine in {HANG_GUARD_S:.0f} s")
        time.sleep(0.01)
    return events


def _wait(job: EngineJob) -> JobStatus:
    try:
        return job.wait(HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        job.cancel(grace_s=0.0)
        pytest.fail(f"hang: the engine was still running after {HANG_GUARD_S:.0f} s")


def _process_is_gone(pid: int) -> bool:
    # A reaped child no longer exists; a zombie would still answer signal 0.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_progress_event_parsing() -> None:
    event = ProgressEvent.from_json_line(
        '{"stage": "perceive", "fraction": 0.25, "message": "m", "eta_s": 75}\n'
    )
    assert event == ProgressEvent("perceive", 0.25, "m", 75.0)
    assert event.label == "perceive (1 min left)"
    assert ProgressEvent.from_json_line('{"stage": "x", "fraction": 3}').fraction == 1.0
    assert ProgressEvent.from_json_line('{"stage": "x", "fraction": 0.5, "eta_s": null}').label == "x"
    for not_progress in ("Wrote avatar.lca", "[1, 2]", '{"stage": "x"}', '{"stage": "x", "fraction": "a"}'):
        assert ProgressEvent.from_json_line(not_progress) is None


def test_progress_event_with_the_whole_job() -> None:
    line = (
        '{"stage": "fit_body", "fraction": 0.5, "message": "m", "eta_s": 30,'
        ' "overall": {"fraction": 0.4, "eta_s": 200, "step": 4, "steps": 5}}'
    )
    event = ProgressEvent.from_json_line(line)
    assert event.overall == Overall(0.4, 200.0, 4, 5)
    assert event.bar_fraction == 0.4 and event.fraction == 0.5
    assert event.label == "fit_body, step 4 of 5 (3 min left)"  # the job's time left, not the stage's
    # A damaged "overall" is dropped; the stage's own progress still counts.
    for damaged in ('{"step": 6, "steps": 5, "fraction": 0.1}', '{"fraction": 0.1}', '"x"', "[1]"):
        event = ProgressEvent.from_json_line(f'{{"stage": "s", "fraction": 0.5, "overall": {damaged}}}')
        assert event.overall is None and event.bar_fraction == 0.5


def test_eta_text() -> None:
    assert eta_text(None) == ""
    assert eta_text(4.4) == "4 s left"
    assert eta_text(150) == "2 min left"
    assert eta_text(2 * 3600 + 5 * 60) == "2 h 05 min left"


def test_a_successful_build_reports_progress_and_moves_the_avatar_into_place(
    fake_engine: list[str], tmp_path: Path
) -> None:
    photos = _photos(tmp_path / "alice", steps=5)
    output = tmp_path / "avatars" / "alice.lca"
    build = AvatarBuild(fake_engine, [photos], output).start()
    events = _run_to_end(build)

    assert build.status is JobStatus.SUCCEEDED
    assert [event.fraction for event in events] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert [event.message for event in events] == [f"step {i}" for i in range(1, 6)]
    assert build.job.last_event == events[-1]
    assert "a log line that is not progress" in build.job.output_lines
    assert output.read_bytes() == b"avatar"
    assert sorted(path.name for path in output.parent.iterdir()) == ["alice.lca"]  # no work folder
    assert build.error_message == ""


def test_a_failed_build_surfaces_the_engine_error_and_leaves_nothing(
    fake_engine: list[str], tmp_path: Path
) -> None:
    photos = _photos(tmp_path / "bob", fail="No person was found in 'front.jpg'.")
    output = tmp_path / "avatars" / "bob.lca"
    build = AvatarBuild(fake_engine, [photos], output).start()
    _run_to_end(build)

    assert build.status is JobStatus.FAILED
    assert build.job.returncode == 2
    assert build.error_message == "No person was found in 'front.jpg'."
    assert list(output.parent.iterdir()) == []


def test_an_engine_that_says_nothing_reports_its_exit_code_or_its_stderr_tail(tmp_path: Path) -> None:
    silent = EngineJob([sys.executable, "-c", "import sys; sys.exit(3)"], [], progress_flag=False).start()
    assert _wait(silent) is JobStatus.FAILED
    assert silent.error_message == "The engine stopped with exit code 3 and said nothing."

    crash = EngineJob([sys.executable, "-c", "raise RuntimeError('boom')"], [], progress_flag=False).start()
    assert _wait(crash) is JobStatus.FAILED
    assert crash.error_message.endswith("RuntimeError: boom")


def test_a_build_that_writes_no_avatar_fails(fake_engine: list[str], tmp_path: Path) -> None:
    photos = _photos(tmp_path / "carol", forget_output=True)
    build = AvatarBuild(fake_engine, [photos], tmp_path / "out" / "carol.lca").start()
    _run_to_end(build)
    assert build.status is JobStatus.FAILED
    assert "without writing 'carol.lca'" in build.error_message
    assert list((tmp_path / "out").iterdir()) == []


def test_cancel_stops_the_engine_and_leaves_nothing(
    fake_engine: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A grace period no machine can outlast, so only a SIGTERM that did not work leads to the kill
    # (and then to the -9 below), however slowly the child is scheduled.
    monkeypatch.setattr(EngineJob, "cancel", functools.partialmethod(EngineJob.cancel, grace_s=HANG_GUARD_S))
    photos = _photos(tmp_path / "dave", steps=3, hold=True)
    output = tmp_path / "avatars" / "dave.lca"
    build = AvatarBuild(fake_engine, [photos], output).start()
    try:
        assert [event.message for event in _first_events(build)] == ["step 1"]
        assert build.status is JobStatus.RUNNING
        (work_folder,) = output.parent.iterdir()
        assert (work_folder / "stage-cache.npy").is_file()  # written before the first progress line
        build.cancel()
    finally:
        build.job.cancel(grace_s=0.0)  # a failed check above must not leave the child behind
    assert build.status is JobStatus.CANCELLED
    assert build.job.returncode == -signal.SIGTERM  # stopped by the request, not by the kill after it
    assert _process_is_gone(build.job.pid)
    assert list(output.parent.iterdir()) == []


def test_cancel_kills_an_engine_that_ignores_sigterm(tmp_path: Path) -> None:
    # The progress line comes after SIGTERM is ignored: from then on only the kill can stop it.
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        'print(\'{"stage": "s", "fraction": 0}\', flush=True); time.sleep(600)'
    )
    job = EngineJob([sys.executable, "-c", stubborn], [], progress_flag=False).start()
    try:
        _first_events(job)
    finally:
        job.cancel(grace_s=0.3)
    assert job.status is JobStatus.CANCELLED
    assert job.returncode == -signal.SIGKILL
    assert _process_is_gone(job.pid)


def test_the_real_engine_cli_speaks_the_same_protocol(tmp_path: Path) -> None:
    # `info` on a missing file: the real CLI's error line, read through the same job.
    addon_root = Path(engine_process.__file__).resolve().parents[1]
    command = [sys.executable, "-m", "lca_blender.cli"]
    job = EngineJob(command, ["info", str(tmp_path / "missing.lca")], engine_environment(addon_root)).start()
    assert _wait(job) is JobStatus.FAILED
    assert job.returncode == 2
    assert "missing.lca" in job.error_message
    assert not job.error_message.startswith("lca-avatar")


def test_finding_the_engine_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(engine_process.ENGINE_PYTHON_VARIABLE, raising=False)
    monkeypatch.delenv(engine_process.ENGINE_COMMAND_VARIABLE, raising=False)
    addon_root = tmp_path / "checkout"
    installed = tmp_path / "user" / "engine"
    with pytest.raises(EngineNotFoundError, match="Install engine"):
        find_engine_python(addon_root, extra_venvs=[installed])

    installed_python = engine_process.venv_python(installed)
    installed_python.parent.mkdir(parents=True)
    installed_python.write_text("")
    assert find_engine_python(addon_root, extra_venvs=[installed]) == installed_python

    checkout_python = engine_process.venv_python(addon_root / ".venv")
    checkout_python.parent.mkdir(parents=True)
    checkout_python.write_text("")
    assert find_engine_python(addon_root, extra_venvs=[installed]) == checkout_python

    monkeypatch.setenv(engine_process.ENGINE_PYTHON_VARIABLE, str(installed_python))
    assert find_engine_python(addon_root) == installed_python
    assert find_engine_python(addon_root, configured=str(checkout_python)) == checkout_python
    with pytest.raises(EngineNotFoundError, match="preferences"):
        find_engine_python(addon_root, configured=str(tmp_path / "nowhere" / "python"))

    assert engine_command(addon_root, str(checkout_python)) == [str(checkout_python), "-m", "lca_blender.cli"]
    monkeypatch.setenv(engine_process.ENGINE_COMMAND_VARIABLE, "/usr/bin/python3 '/a b/fake.py'")
    assert engine_command(addon_root) == ["/usr/bin/python3", "/a b/fake.py"]


def test_the_engine_environment_resolves_the_add_ons_core(tmp_path: Path) -> None:
    base = {"PYTHONPATH": "/elsewhere", "PYTHONHOME": "/blender/python", "PATH": "/bin"}
    environment = engine_environment(tmp_path, base)
    assert environment["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "/elsewhere"]
    assert "PYTHONHOME" not in environment
    assert environment["PATH"] == "/bin"
    assert base["PYTHONPATH"] == "/elsewhere"  # the caller's copy is left alone
