"""Cancel and resume, tortured: kill `lca-avatar build` at random moments, resume, check; print JSON.

    nice -n 10 .venv/bin/python scripts/torture_cancel.py --kills 50

First an uninterrupted build of the example subject's photos (the reference). Then the same
build, started again and again with its own stage cache, each time killed after a random delay
by SIGINT (Ctrl-C), SIGTERM (the add-on's Cancel) or SIGKILL (a crash, the OOM killer). The
moment is drawn from what the build still has to do: one of its parts (start-up, each stage not
yet cached, the final write) at random, then a moment at random in that part or just after its
end (where stages are saved), timed from when the build announced the part and scaled by the
reference's time for it. Drawing the part first keeps the kills spread over every stage, rather
than mostly inside the longest one (fit_gaussians), where each kill costs the most. After every
kill it checks:

- the exit: 130 after SIGINT/SIGTERM with no traceback (or 0, when the build won the race), -9
  after SIGKILL;
- the avatar: absent, or whole (it reads, and equals the reference's arrays);
- the stage cache: every stage folder is whole (StageCache.load accepts it: each file's sha256
  matches meta.json); after SIGINT/SIGTERM no temporary file or folder is left either (after
  SIGKILL the dot-named temporaries of the write in progress may stay: nothing runs to remove
  them; they are counted, never read);

and when a build runs to its end before its kill, a new round begins: the stages from a random
one on are removed from the cache, so every stage is computed (and killed) again and again. At
the end, one more run to completion, whose avatar must equal the reference's: the same arrays,
bit for bit (the provenance too, but for the fit's wall-clock seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from lca_blender.errors import AvatarError  # noqa: E402
from lca_blender.formats.lca import read_avatar  # noqa: E402
from lca_blender.reconstruct.pipeline import STAGES, StageCache  # noqa: E402

EXAMPLE_PHOTOS = REPO_ROOT / "examples" / "subject" / "photos"
QUICK_ENGINE = REPO_ROOT / "tests" / "engine" / "quick_engine.py"  # the preview preset, fewer steps
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}
EXIT_CANCELLED = 130
HANG_GUARD_S = 300  # a cancelled build stops in about a second; past this it is called hung
VOLATILE_PROVENANCE = (("fit", "seconds"),)  # wall-clock figures, different on every run


@dataclasses.dataclass
class Run:
    """One engine process: its exit, the stages it announced (with when) and its stderr."""

    returncode: int | None = None
    stages: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    stderr: list[str] = dataclasses.field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    wall_started: float = 0.0  # time.time() at the start, to compare with file times


class Build:
    """`lca-avatar build` of the photos into `output` with the stage cache `cache`."""

    def __init__(self, photos: Path, output: Path, cache: Path, quality: str, quick: bool = False) -> None:
        self.output, self.cache = output, cache
        engine = [str(QUICK_ENGINE)] if quick else ["-m", "lca_blender.cli"]
        self.command = [
            sys.executable, *engine, "--progress", "jsonl", "build", str(photos),
            "-o", str(output), "--quality", quality, "--device", "cpu", "--cache", str(cache),
        ]  # fmt: skip
        paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        self.environment = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(paths)}

    def start(self) -> tuple[subprocess.Popen, Run, list[threading.Thread]]:
        run = Run(started=time.monotonic(), wall_started=time.time())
        process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.environment,
        )

        def read_stdout() -> None:
            for line in process.stdout:
                if line.startswith("{"):
                    stage = json.loads(line).get("stage", "")
                    if not run.stages or run.stages[-1][0] != stage:
                        run.stages.append((stage, time.monotonic() - run.started))

        def read_stderr() -> None:
            run.stderr.extend(process.stderr)

        readers = [threading.Thread(target=read, daemon=True) for read in (read_stdout, read_stderr)]
        for reader in readers:
            reader.start()
        return process, run, readers

    def run(self, kill: tuple[str, float, int] | None = None) -> Run:
        """Run the build; with `kill` (part, seconds, signal), send the signal that many seconds
        after the part began: "start-up" at the start, a stage when the build announced it."""
        process, run, readers = self.start()
        signalled = False
        try:
            while kill is not None and not signalled and process.poll() is None:
                part, seconds, number = kill
                begun = next((at for stage, at in run.stages if stage == part), None)
                begun = 0.0 if part == "start-up" else begun
                if begun is not None and time.monotonic() - run.started >= begun + seconds:
                    process.send_signal(number)
                    signalled = True
                time.sleep(0.005)
            process.wait(timeout=HANG_GUARD_S if signalled else None)
        except subprocess.TimeoutExpired:
            run.stderr.append(f"torture: no exit {HANG_GUARD_S} s after the signal; killed\n")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        for reader in readers:
            reader.join(timeout=10)
        run.returncode, run.ended = process.returncode, time.monotonic()
        return run

    def key_folder(self) -> Path | None:
        """The build's folder in the cache (one build, one key), once it exists."""
        folders = [path for path in self.cache.iterdir() if path.is_dir()] if self.cache.is_dir() else []
        return folders[0] if len(folders) == 1 else None


def _written_during(path: Path, run: Run) -> bool:
    """Whether `path` was (re)written while `run` ran (its wall-clock span)."""
    return path.is_file() and path.stat().st_mtime >= run.wall_started


def cached_stages(build: Build) -> list[str]:
    folder = build.key_folder()
    return [] if folder is None else [stage for stage in STAGES if (folder / stage).is_dir()]


def temporaries(build: Build) -> set[str]:
    """The dot-named temporaries beside the avatar and in the cache (writes that never finished)."""
    found = {str(path) for path in build.output.parent.glob(".*")}
    folder = build.key_folder()
    if folder is not None:
        found |= {str(path) for path in folder.glob(".*")}
    return found


def whole_stages(build: Build) -> tuple[list[str], list[str]]:
    """(whole stages, damaged stages) of the build's cache."""
    folder = build.key_folder()
    whole, damaged = [], []
    for stage in cached_stages(build):
        (whole if StageCache(folder).load(stage) is not None else damaged).append(stage)
    return whole, damaged


def avatar_differences(first: Path, second: Path) -> dict[str, float]:
    """Array name -> largest absolute difference, for the arrays that differ (empty: identical),
    and "provenance" -> 1.0 when the provenance differs beyond its wall-clock figures."""
    a, b = read_avatar(first), read_avatar(second)
    differences = {}
    for owner, name in [("rig", f.name) for f in dataclasses.fields(a.rig)] + [
        ("avatar", f.name) for f in dataclasses.fields(a)
    ]:
        left = getattr(a.rig if owner == "rig" else a, name)
        right = getattr(b.rig if owner == "rig" else b, name)
        if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
            if left is None or right is None or left.shape != right.shape or left.dtype != right.dtype:
                differences[f"{owner}.{name}"] = float("inf")
            elif not np.array_equal(left, right):
                gap = np.abs(left.astype(np.float64) - right.astype(np.float64))
                differences[f"{owner}.{name}"] = float(np.nanmax(gap))
    if _stable(a.provenance) != _stable(b.provenance):
        differences["provenance"] = 1.0
    return differences


def _stable(provenance: dict) -> dict:
    copy = json.loads(json.dumps(provenance))
    for path in VOLATILE_PROVENANCE:
        node = copy
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return copy


def stage_differences(reference: Build, tortured: Build) -> list[str]:
    """The stages whose cached files differ between the two builds' caches (which stage diverged)."""
    first, second = reference.key_folder(), tortured.key_folder()
    if first is None or second is None:
        return ["(no cache to compare)"]
    differing = []
    for stage in STAGES:
        records = [json.loads((root / stage / "meta.json").read_text()) for root in (first, second)]
        if records[0]["files"] != records[1]["files"] or records[0]["meta"] != records[1]["meta"]:
            differing.append(stage)
    return differing


def kill_moment(
    rng: random.Random, startup: float, stage_seconds: dict[str, float], cached: set[str]
) -> tuple[str, float]:
    """A part of what the build still has to do (start-up, a stage not cached yet, the write) and
    a moment in it or just past its end (where the stage is saved), in seconds from its start."""
    parts = [("start-up", startup)] + [
        (stage, seconds) for stage, seconds in stage_seconds.items() if stage not in cached
    ]
    part, seconds = parts[rng.randrange(len(parts))]
    return part, rng.uniform(0.0, 1.1 * seconds + 0.5)


def choose_photos(count: int, folder: Path) -> list[Path]:
    """`count` photos spread evenly round the turn-around."""
    photos = sorted(folder.glob("*.png"))
    if not 1 <= count <= len(photos):
        raise SystemExit(f"--photos must be between 1 and {len(photos)}")
    return [photos[round(index * len(photos) / count)] for index in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=50, help="kills in all (default 50)")
    parser.add_argument("--quality", default="preview", choices=("preview", "standard", "high"))
    parser.add_argument("--photos", type=int, default=3, help="example photos to build from (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kills' moments and signals")
    parser.add_argument("--work", type=Path, help="working folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="run the engine with a smaller preview preset (tests/engine/quick_engine.py: every stage, "
        "fewer fitting steps and Gaussians), for many kills on a slow machine",
    )
    parser.add_argument(
        "--reuse-reference",
        action="store_true",
        help="with --work: take the reference build a previous run left there (and its timings)",
    )
    args = parser.parse_args()
    # A shell without job control starts background jobs with SIGINT ignored, and the builds would
    # inherit that (a Ctrl-C that nobody hears): catching it here gives them the default back.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    work = args.work or Path(tempfile.mkdtemp(prefix="lca-torture-"))
    work.mkdir(parents=True, exist_ok=True)
    photos = work / "photos"
    shutil.rmtree(photos, ignore_errors=True)
    photos.mkdir()
    for path in choose_photos(args.photos, EXAMPLE_PHOTOS):
        shutil.copyfile(path, photos / path.name)
    timings_file = work / "reference" / "timings.json"
    reuse = args.reuse_reference and timings_file.is_file() and (work / "reference" / "avatar.lca").is_file()
    for name in ("tortured",) if reuse else ("reference", "tortured"):
        shutil.rmtree(work / name, ignore_errors=True)
        (work / name).mkdir()
    if args.quick and args.quality != "preview":
        raise SystemExit("--quick shrinks the preview preset: use it with --quality preview")
    reference, tortured = (
        Build(photos, work / name / "avatar.lca", work / name / "cache", args.quality, args.quick)
        for name in ("reference", "tortured")
    )
    rng = random.Random(args.seed)
    summary: dict = {
        "quality": args.quality + (" (quick: fewer steps and Gaussians)" if args.quick else ""),
        "photos": sorted(p.name for p in photos.iterdir()),
        "seed": args.seed,
    }

    if not reuse:
        print(f"Reference build in {work} ...", file=sys.stderr)
        first = reference.run()
        if first.returncode != 0:
            print("".join(first.stderr[-40:]), file=sys.stderr)
            raise SystemExit("the reference build failed")
        # Each stage's time, from the moment it was announced to the next (the last one to the end).
        marks = first.stages + [("end", first.ended - first.started)]
        timings = {
            "seconds": round(first.ended - first.started, 1),
            "startup_seconds": round(first.stages[0][1] if first.stages else 0.0, 1),
            "stage_seconds": {
                stage: round(marks[i + 1][1] - at, 1) for i, (stage, at) in enumerate(first.stages)
            },
        }
        timings_file.write_text(json.dumps(timings))
    summary["reference"] = timings = json.loads(timings_file.read_text())
    startup, stage_seconds = timings["startup_seconds"], timings["stage_seconds"]

    problems: list[str] = []
    kills = {name: 0 for name in SIGNALS}
    kill_stages: dict[str, int] = {}
    restarts: dict[str, int] = {}  # rounds begun again from each stage after a build finished
    orphans_after_sigkill = completed_before_kill = early_stops = late_stops = 0
    started = time.monotonic()
    attempt = 0
    while sum(kills.values()) < args.kills:
        attempt += 1
        part, delay = kill_moment(rng, startup, stage_seconds, set(cached_stages(tortured)))
        name = rng.choice(list(SIGNALS))
        before = temporaries(tortured)
        run = tortured.run((part, delay, SIGNALS[name]))
        stage = run.stages[-1][0] if run.stages else "start-up"
        label = f"attempt {attempt} ({name} {delay:.1f} s into {part}, in {stage})"
        if run.returncode == 0:
            completed_before_kill += 1
            stage = "finished first"
        else:
            kills[name] += 1
            expected = {-signal.SIGKILL} if name == "SIGKILL" else {EXIT_CANCELLED}
            early = not run.stages and name != "SIGKILL"
            if early:
                # Killed while Python was still importing the engine, before it had its handlers:
                # the signal's default action, or a KeyboardInterrupt in an import. Nothing is
                # written before the first stage, so it is a plain stop, not a failure.
                expected |= {-SIGNALS[name], 1}
                early_stops += run.returncode != EXIT_CANCELLED
            late = name != "SIGKILL" and _written_during(tortured.output, run)
            if late:
                # The avatar was written: the signal found Python shutting down, after it had put
                # its own handlers away (the default action then ends the process). Nothing is lost.
                expected.add(-SIGNALS[name])
                late_stops += run.returncode != EXIT_CANCELLED
            if run.returncode not in expected:
                problems.append(f"{label}: exit {run.returncode}: {''.join(run.stderr[-6:]).strip()}")
            if not early and name != "SIGKILL" and any("Traceback" in line for line in run.stderr):
                problems.append(f"{label}: a traceback on cancel: {''.join(run.stderr[-6:]).strip()}")
        kill_stages[stage] = kill_stages.get(stage, 0) + 1

        whole, damaged = whole_stages(tortured)
        if damaged:
            problems.append(f"{label}: damaged stage folders {damaged}")
        if tortured.output.exists():
            try:
                differences = avatar_differences(reference.output, tortured.output)
            except AvatarError as error:
                problems.append(f"{label}: a partial avatar: {error}")
            else:
                if differences:
                    problems.append(f"{label}: a finished avatar unlike the reference: {differences}")
        left = temporaries(tortured) - before
        if left and name != "SIGKILL" and run.returncode != 0:
            problems.append(f"{label}: temporaries left after {name}: {sorted(left)}")
        elif left:
            orphans_after_sigkill += len(left)
        print(f"{label}: exit {run.returncode}; cached {whole}", file=sys.stderr)

        if run.returncode == 0:  # the build won: a new round, from a random stage on (or the write)
            restart = rng.randrange(len(STAGES) + 1)
            folder = tortured.key_folder()
            for stage in STAGES[restart:]:
                shutil.rmtree(folder / stage, ignore_errors=True)
            tortured.output.unlink()
            begun = (*STAGES, "write")[restart]
            restarts[begun] = restarts.get(begun, 0) + 1

    final = tortured.run()
    if final.returncode != 0:
        problems.append(
            f"the final run failed: exit {final.returncode}: {''.join(final.stderr[-6:]).strip()}"
        )
        differences = {"avatar": float("inf")}
    else:
        differences = avatar_differences(reference.output, tortured.output)
    summary |= {
        "kills": dict(kills, total=sum(kills.values())),
        "attempts": attempt,
        "builds_that_finished_before_their_kill": completed_before_kill,
        "rounds_begun_again_from": restarts,
        "kills_by_stage": kill_stages,
        "stopped_before_the_engine_had_its_handlers": early_stops,
        "stopped_while_exiting_after_the_avatar_was_written": late_stops,
        "problems": problems,
        "partial_files_found": sum("partial" in p or "damaged" in p or "temporaries" in p for p in problems),
        "temporaries_left_by_sigkill": orphans_after_sigkill,
        "final_equals_reference": not differences,
        "final_differences": differences,
        "stages_differing_from_reference": [] if not differences else stage_differences(reference, tortured),
        "torture_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary, indent=2))
    if not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not problems and not differences else 1


if __name__ == "__main__":
    sys.exit(main())
