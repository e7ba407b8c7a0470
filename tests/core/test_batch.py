"""`lca-avatar batch`'s machinery with a stand-in engine: skipping, failures and their reasons,
the report, parallel slots, cancelling, and the command lines a cluster would run.

The stand-in reads its plan from the subject folder's `plan.json` (how long to take, how to fail)
and writes a few bytes as the avatar; tests/engine/test_batch_build.py runs the real engine.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lca_blender.addon.engine_process import ENGINE_COMMAND_VARIABLE
from lca_blender.batch.executors import LocalExecutor, failure_reason
from lca_blender.batch.jobs import BuildOptions, Machine, default_jobs, subject_job
from lca_blender.batch.report import REPORT_NAME, BatchReport, read_report
from lca_blender.batch.runner import run_batch
from lca_blender.batch.subjects import find_subjects, fingerprint
from lca_blender.errors import AvatarError, AvatarFileError
from lca_blender.progress import Cancelled, Progress

REPO_ROOT = Path(__file__).resolve().parents[2]
HANG_GUARD_S = 60  # turns a hung subprocess into a failure; no speed is asked of anything

STAND_IN = """
import json, os, signal, sys, time
from pathlib import Path

arguments = sys.argv[1:]
assert arguments[:3] == ["--progress", "jsonl", "build"], arguments
folder, output = Path(arguments[3]), Path(arguments[arguments.index("-o") + 1])
plan = json.loads((folder / "plan.json").read_text())
runs = Path(os.environ["STAND_IN_RUNS"])
with open(runs, "a") as log:
    log.write(f"{folder.name} {os.getpid()} {os.environ.get('OMP_NUM_THREADS')}\\n")
deadline = time.monotonic() + 30
while len(runs.read_text().splitlines()) < plan.get("barrier", 0):  # wait for the others to start
    assert time.monotonic() < deadline, "the other builds never started"
    time.sleep(0.01)
for step in range(plan.get("steps", 2)):
    print(json.dumps({"stage": "fit_body", "fraction": (step + 1) / plan.get("steps", 2)}), flush=True)
    time.sleep(plan.get("delay", 0.01))
if "fail" in plan:
    print("lca-avatar: error: " + plan["fail"], file=sys.stderr)
    sys.exit(2)
if plan.get("crash"):
    raise ValueError("a bug in the engine")
if plan.get("killed"):
    os.kill(os.getpid(), signal.SIGKILL)
output.write_bytes(b"avatar of " + folder.name.encode())
"""


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    monkeypatch.setenv("STAND_IN_RUNS", str(tmp_path / "runs.txt"))
    return [sys.executable, str(script)]


def _subject(root: Path, name: str, **plan) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "front.jpg").write_bytes(b"photo of " + name.encode())
    (folder / "plan.json").write_text(json.dumps(plan))
    return folder


def _runs(tmp_path: Path) -> list[str]:
    path = tmp_path / "runs.txt"
    return sorted(line.split()[0] for line in path.read_text().splitlines()) if path.exists() else []


def _batch(root: Path, output: Path, stand_in: list[str], jobs: int = 2, **options) -> BatchReport:
    return run_batch(
        root, output, BuildOptions(**options), LocalExecutor(jobs, cores=4), Progress(), engine=stand_in
    )


def _statuses(report: BatchReport) -> dict[str, str]:
    return {record.name: record.status for record in report.subjects}


def test_failures_are_reported_in_words_and_a_rerun_builds_only_what_changed(stand_in, tmp_path):
    root, output = tmp_path / "cast", tmp_path / "avatars"
    for name in ("alice", "carol", "dave"):
        _subject(root, name)
    _subject(root, "bob", fail="No person was found in any photo (front.jpg: no person found).")
    _subject(root, "erin", crash=True)
    _subject(root, "fay", killed=True)
    (root / "empty").mkdir()  # no photos: not a subject
    (root / ".hidden").mkdir()

    report = _batch(root, output, stand_in)
    built, failed = {"alice", "carol", "dave"}, {"bob", "erin", "fay"}
    assert _statuses(report) == {name: "built" if name in built else "failed" for name in built | failed}
    assert sorted(path.name for path in output.glob("*.lca")) == ["alice.lca", "carol.lca", "dave.lca"]
    reasons = {record.name: record.reason for record in report.with_status("failed")}
    assert reasons["bob"] == "No person was found in any photo (front.jpg: no person found)."
    assert reasons["erin"].startswith("The engine failed unexpectedly (exit code 1; a bug")
    assert reasons["erin"].endswith("ValueError: a bug in the engine")
    assert "ran out of memory" in reasons["fay"] and "--jobs" in reasons["fay"]
    erin = report.record("erin")
    assert any(line.startswith("Traceback") for line in erin.details)  # the bug's traceback is kept

    # The report on disk is the one returned, with timings, and each subject's own command line.
    on_disk = read_report(output)
    assert on_disk == report and on_disk.state == "finished"
    raw = json.loads((output / REPORT_NAME).read_text())
    assert raw["counts"] == {
        "built": 3,
        "skipped": 0,
        "failed": 3,
        "cancelled": 0,
        "pending": 0,
        "running": 0,
    }
    assert all(record.seconds is not None and record.seconds >= 0 for record in report.subjects)
    assert report.summary() == "3 built, 0 skipped, 3 failed"
    assert not [path for path in output.iterdir() if path.name.startswith(".")]  # no temporary left
    assert _runs(tmp_path) == ["alice", "bob", "carol", "dave", "erin", "fay"]

    # Rerun: the built subjects are skipped (nothing of theirs runs), the failed ones are tried again.
    (tmp_path / "runs.txt").unlink()
    report = _batch(root, output, stand_in)
    assert _statuses(report)["alice"] == "skipped" and report.record("alice").reason == "up to date"
    assert _runs(tmp_path) == ["bob", "erin", "fay"]

    # A changed photo, and a fixed subject: just those two are built.
    (tmp_path / "runs.txt").unlink()
    (root / "alice" / "front.jpg").write_bytes(b"a new photo of alice")
    (root / "bob" / "plan.json").write_text("{}")
    report = _batch(root, output, stand_in)
    assert _runs(tmp_path) == ["alice", "bob", "erin", "fay"]
    assert [record.name for record in report.with_status("built")] == ["alice", "bob"]

    # Other build settings make every avatar stale; --rebuild builds everything whatever it finds.
    (tmp_path / "runs.txt").unlink()
    _batch(root, output, stand_in, quality="preview")
    assert _runs(tmp_path) == ["alice", "bob", "carol", "dave", "erin", "fay"]
    (tmp_path / "runs.txt").unlink()
    run_batch(
        root, output, BuildOptions(quality="preview"), LocalExecutor(2, 4), rebuild=True, engine=stand_in
    )
    assert _runs(tmp_path) == ["alice", "bob", "carol", "dave", "erin", "fay"]


def test_a_deleted_avatar_or_a_damaged_report_means_building_again(stand_in, tmp_path):
    root, output = tmp_path / "cast", tmp_path / "avatars"
    _subject(root, "alice")
    _subject(root, "bob")
    _batch(root, output, stand_in)
    (output / "alice.lca").unlink()
    (tmp_path / "runs.txt").unlink()
    assert _statuses(_batch(root, output, stand_in)) == {"alice": "built", "bob": "skipped"}
    assert _runs(tmp_path) == ["alice"]

    (output / REPORT_NAME).write_text("{not json")
    with pytest.raises(AvatarFileError, match="Cannot read the batch report"):
        read_report(output)
    (tmp_path / "runs.txt").unlink()
    assert _statuses(_batch(root, output, stand_in)) == {"alice": "built", "bob": "built"}


def test_jobs_run_side_by_side_each_with_its_share_of_the_cores(stand_in, tmp_path):
    root, output = tmp_path / "cast", tmp_path / "avatars"
    for name in "abcd":
        _subject(root, name, barrier=4)  # each build goes on only once all four have started
    report = run_batch(root, output, BuildOptions(), LocalExecutor(4, cores=8), engine=stand_in)
    assert report.summary() == "4 built, 0 skipped, 0 failed"
    lines = (tmp_path / "runs.txt").read_text().splitlines()
    assert {line.split()[2] for line in lines} == {"2"}  # 8 cores, 4 builds: 2 threads each


class _CancelWhenRunning(Progress):
    """Cancels the batch (as Ctrl-C would) once a build has reported progress."""

    def update(self, fraction: float, message: str = "") -> None:
        if "building" in message and fraction > 0:
            self.cancel_requested = True
        super().update(fraction, message)


def test_cancelling_stops_the_builds_and_the_report_says_what_was_done(stand_in, tmp_path):
    root, output = tmp_path / "cast", tmp_path / "avatars"
    _subject(root, "a")
    _subject(root, "b", steps=1000, delay=0.05)
    _subject(root, "c")
    with pytest.raises(Cancelled):
        run_batch(root, output, BuildOptions(), LocalExecutor(1, 1), _CancelWhenRunning(), engine=stand_in)
    report = read_report(output)
    assert report.state == "cancelled"
    statuses = _statuses(report)
    assert statuses["c"] == "cancelled" and "before this subject's build started" in report.record("c").reason
    assert statuses["b"] == "cancelled" or statuses["a"] == "cancelled"
    pids = [int(line.split()[1]) for line in (tmp_path / "runs.txt").read_text().splitlines()]
    assert all(_is_gone(pid) for pid in pids)
    assert not [path for path in output.iterdir() if path.name.startswith(".")]


def test_ctrl_c_or_sigterm_to_the_batch_command_exits_130_and_the_rerun_resumes(stand_in, tmp_path):
    root, output = tmp_path / "cast", tmp_path / "avatars"
    _subject(root, "a")
    _subject(root, "b", steps=1000, delay=0.05)
    environment = {
        **os.environ,
        ENGINE_COMMAND_VARIABLE: shlex.join(stand_in),
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "lca_blender.cli", "--progress", "jsonl", "batch", str(root), "-o"]
    for number in (signal.SIGINT, signal.SIGTERM):
        (tmp_path / "runs.txt").unlink(missing_ok=True)
        process = subprocess.Popen(
            [*command, str(output), "--jobs", "1", "--no-cast"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            preexec_fn=_default_interrupt,
        )
        try:
            for line in process.stdout:  # a is done, b is under way
                if line.startswith("{") and "building b" in json.loads(line)["message"]:
                    break
            _wait_for(lambda: any(line.startswith("b ") for line in _lines(tmp_path / "runs.txt")))
            process.send_signal(number)  # to the batch alone: it must stop its builds itself
            _, error = process.communicate(timeout=HANG_GUARD_S)
        finally:
            process.kill()
        assert process.returncode == 130, error
        assert "cancelled" in error and "Traceback" not in error
        report = read_report(output)
        assert report.state == "cancelled" and _statuses(report)["b"] == "cancelled"
        assert sorted(path.name for path in output.iterdir()) == ["a.lca", REPORT_NAME]
        b_runs = [line for line in _lines(tmp_path / "runs.txt") if line.startswith("b ")]
        assert _is_gone(int(b_runs[-1].split()[1]))

    (root / "b" / "plan.json").write_text("{}")
    (tmp_path / "runs.txt").unlink()
    finished = subprocess.run(
        [*command, str(output), "--no-cast"], capture_output=True, text=True, env=environment, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    assert "a: skipped: up to date" in finished.stdout and "b: built" in finished.stdout
    assert _runs(tmp_path) == ["b"]


def test_the_batch_command_exits_2_naming_the_failed_subjects(stand_in, tmp_path, monkeypatch, capsys):
    from lca_blender.cli import main

    root, output = tmp_path / "cast", tmp_path / "avatars"
    _subject(root, "alice")
    _subject(root, "bob", fail="Bob's photos show two people.")
    monkeypatch.setenv(ENGINE_COMMAND_VARIABLE, shlex.join(stand_in))
    code = main(["--progress", "none", "batch", str(root), "-o", str(output), "--no-cast", "--jobs", "1"])
    captured = capsys.readouterr()
    assert code == 2
    assert "1 of 2 subjects failed. bob: Bob's photos show two people. Fix their photos" in captured.err
    assert "alice: built" in captured.out and "Batch: 1 built, 0 skipped, 1 failed" in captured.out

    assert main(["--progress", "none", "batch", str(tmp_path / "nowhere"), "-o", str(output)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "nobody").mkdir()
    assert main(["--progress", "none", "batch", str(tmp_path / "nobody"), "-o", str(output)]) == 2
    assert "holds no subject folders with photos" in capsys.readouterr().err


def test_each_job_is_a_self_contained_command_line(tmp_path):
    root, output = tmp_path / "cast", tmp_path / "out"
    _subject(root, "Jane Doe")
    (subject,) = find_subjects(root, output)
    options = BuildOptions(quality="preview", device="cpu", skin_only=True, seed=3, cache=tmp_path / "c")
    job = subject_job(subject, options, engine=["/opt/engine/bin/python", "-m", "lca_blender.cli"])
    words = shlex.split(job.shell_command())
    assignments = [word for word in words if "=" in word and not word.startswith("-")][:1]
    assert assignments[0].startswith("PYTHONPATH=")
    argv = words[len(assignments) :]
    assert argv == list(job.argv)
    assert argv[:7] == [
        "/opt/engine/bin/python", "-m", "lca_blender.cli", "--progress", "jsonl", "build",
        str(root.absolute() / "Jane Doe"),
    ]  # fmt: skip
    assert argv[7:9] == ["-o", str(output.absolute() / "Jane Doe.lca")]
    assert {"--skin-only", "preview", "cpu", "3", str(tmp_path.absolute() / "c")} <= set(argv)


def test_build_options_cover_every_option_of_build():
    from lca_blender.cli import build_parser

    parser = build_parser()
    commands = next(action for action in parser._actions if action.dest == "command")
    build, batch = commands.choices["build"], commands.choices["batch"]
    own = {"help", "inputs", "output", "stop_after", "progress"}
    build_options = {action.dest for action in build._actions} - own
    assert build_options == {field for field in BuildOptions.__dataclass_fields__}
    batch_options = {action.dest for action in batch._actions}
    assert build_options <= batch_options
    defaults = batch.parse_args(["cast", "-o", "out"])
    assert BuildOptions.from_arguments(defaults) == BuildOptions()
    assert BuildOptions.from_arguments(build.parse_args(["x", "-o", "x.lca"])) == BuildOptions()


def test_the_fingerprint_follows_files_and_settings_not_where_the_build_runs(tmp_path):
    root = tmp_path / "cast"
    _subject(root, "alice")
    (subject,) = find_subjects(root, tmp_path / "out")
    settings = BuildOptions().settings()
    first = fingerprint(subject, settings)
    assert fingerprint(subject, BuildOptions(device="cpu", cache=tmp_path, no_cache=True).settings()) == first
    assert fingerprint(subject, BuildOptions(seed=1).settings()) != first
    (root / "alice" / ".DS_Store").write_bytes(b"finder")  # hidden: the build does not read it
    assert fingerprint(subject, settings) == first
    os.utime(root / "alice" / "front.jpg", (1, 1))  # touched, same bytes: the same avatar
    assert fingerprint(subject, settings) == first
    (root / "alice" / "side.jpg").write_bytes(b"another photo")
    assert fingerprint(subject, settings) != first


def test_subjects_whose_avatars_would_collide_are_refused(tmp_path):
    root = tmp_path / "cast"
    _subject(root, "alice")
    try:
        _subject(root, "Alice")
    except FileExistsError:
        pytest.skip("this file system does not tell the names apart")
    with pytest.raises(AvatarError, match="differ only in case"):
        find_subjects(root, tmp_path / "out")


def test_the_output_folder_inside_the_subjects_folder_is_not_a_subject(stand_in, tmp_path):
    root = tmp_path / "cast"
    _subject(root, "alice")
    report = _batch(root, root / "avatars", stand_in)
    assert _statuses(report) == {"alice": "built"}
    assert _statuses(_batch(root, root / "avatars", stand_in)) == {"alice": "skipped"}


def test_default_jobs_follow_the_cores_memory_and_gpus():
    gib = 1 << 30
    standard, on_cpu = BuildOptions(), BuildOptions(device="cpu")
    assert default_jobs(Machine(2, 20 * gib, ()), standard) == 1
    assert default_jobs(Machine(16, 64 * gib, ()), standard) == 4
    assert default_jobs(Machine(16, 9 * gib, ()), standard) == 2  # memory binds first
    assert default_jobs(Machine(16, 1 * gib, ()), standard) == 1  # never none
    assert default_jobs(Machine(64, 500 * gib, ("0", "1")), standard) == 2  # one build per GPU
    assert default_jobs(Machine(64, 500 * gib, ("0", "1")), on_cpu) == 16
    machine = Machine.this_one()
    assert machine.cores >= 1 and default_jobs(machine, standard) >= 1


def test_failure_reasons():
    assert failure_reason(2, "No person was found.") == "No person was found."
    assert failure_reason(-signal.SIGTERM, "") == "The build was stopped by SIGTERM."
    assert "exit code 3" in failure_reason(3, "")


def _default_interrupt() -> None:
    # A shell without job control starts background jobs with SIGINT ignored, and Python then never
    # installs its KeyboardInterrupt handler: give the child the default disposition back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _wait_for(condition) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _is_gone(pid: int) -> bool:
    """The process has exited and been reaped (a zombie would still answer signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
