"""Fuzz the readers (.lca, .ply, photos) at length; print a JSON report.

    nice -n 10 .venv/bin/python scripts/fuzz_readers.py --cases 10000

Each case is a structure-aware mutation of a valid file (tests/core/fuzzing.py), run in a process
of its own, forked from this one, under an address-space limit (--memory-mb above what this
process already maps) and a time limit (--timeout). The promise checked: a reader loads the file
or refuses it with an AvatarError, never another exception, a hang or a crash. Reported per
reader: the cases, their outcomes, the other exceptions by type and place, cases over --slow
seconds, and the peak memory of a case (its largest resident set, and that above the parent's).
A case replays from its reader, --seed and number: the inputs of failures are saved under --keep.
Then a few special inputs: a named pipe, a device, a folder, the regression files in
tests/data/fuzz_cases/, and (unless --no-bomb) an honest zip bomb.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: a forked case starts no BLAS threads

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests" / "core")]

from fuzzing import READERS, Outcome, RandomDraw, honest_bomb  # noqa: E402

from lca_blender.errors import AvatarError  # noqa: E402
from lca_blender.formats import lca  # noqa: E402

REGRESSION_CASES = REPO_ROOT / "tests" / "data" / "fuzz_cases"
CHECK_BY_FOLDER = {"lca": "lca", "ply": "ply", "images": "image"}


def _mapped_bytes() -> int:
    """This process's virtual size (what RLIMIT_AS counts)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def run_isolated(check: Callable[[Path], Outcome], path: Path, memory_bytes: int, timeout: float) -> dict:
    """`check(path)` in a forked process limited to `memory_bytes` more address space than this
    one and to `timeout` seconds: its outcome, time, peak resident memory and how much of that
    the case added to what the process held when it started."""
    read_end, write_end = os.pipe()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the case's process: report through the pipe, never return
        try:
            os.close(read_end)
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            start_rss = _resident_bytes()
            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (_mapped_bytes() + memory_bytes, hard))
            warnings.simplefilter("ignore")
            try:
                outcome = check(path)
                result = {"outcome": outcome.kind, "message": outcome.message[:300]}
            except AvatarError as error:  # the checks catch these; one that escapes is still kept
                result = {"outcome": "refused", "message": str(error)[:300]}
            except BaseException as error:  # noqa: BLE001 - every other exception is the finding
                frame = traceback.extract_tb(error.__traceback__)[-1]
                result = {
                    "outcome": "other exception",
                    "type": type(error).__qualname__,
                    "message": str(error)[:300],
                    "where": f"{Path(frame.filename).name}:{frame.lineno} {frame.name}",
                }
            result["start_rss_bytes"] = start_rss
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], timeout)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - started
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read()
    if report:
        result = json.loads(report)
    elif not ready:
        result = {"outcome": "hang"}
    else:
        result = {"outcome": "crash", "message": f"status {status}"}
    peak = usage.ru_maxrss * 1024
    result.update(
        seconds=seconds, peak_rss_bytes=peak, growth_bytes=peak - result.pop("start_rss_bytes", peak)
    )
    return result


def _refusal_kind(message: str) -> str:
    """A refusal's message without the file's name and numbers, to count kinds of refusal."""
    text = message.split(": ", 1)[-1] if "Cannot" in message[:40] else message
    return "".join("#" if c.isdigit() else c for c in text)[:90]


def fuzz_reader(name: str, cases: int, seed: int, args: argparse.Namespace, work: Path) -> dict:
    reader = READERS[name]
    seeds = reader.seeds(work / f"{name}_seeds")
    seed_bytes = [path.read_bytes() for path in seeds]
    keep = Path(args.keep) / name
    outcomes: collections.Counter[str] = collections.Counter()
    others: collections.Counter[str] = collections.Counter()
    refusals: collections.Counter[str] = collections.Counter()
    examples, slow, seconds, peaks, growths = [], [], [], [], []
    largest = {"growth_mb": -1.0}
    reader.check(seeds[0])  # imports and caches warmed here, once, not in every case
    case_path = work / f"case{reader.suffix}"
    started = time.perf_counter()
    for number in range(cases):
        draw = RandomDraw(random.Random(f"{seed}:{name}:{number}"))
        index = draw.integer(0, len(seeds) - 1)
        try:
            data, mutations = reader.mutate(draw, seed_bytes[index])
        except Exception as error:  # noqa: BLE001 - a bug of the harness, counted, not fatal
            outcomes["mutation failed"] += 1
            others[f"mutation: {type(error).__qualname__}: {error}"[:200]] += 1
            continue
        case_path.write_bytes(data)
        result = run_isolated(reader.check, case_path, args.memory_mb * 1024**2, args.timeout)
        outcomes[result["outcome"]] += 1
        seconds.append(result["seconds"])
        peaks.append(result["peak_rss_bytes"])
        growths.append(result["growth_bytes"])
        if result["growth_bytes"] / 1024**2 > largest["growth_mb"]:
            largest = {
                "case": number,
                "growth_mb": round(result["growth_bytes"] / 1024**2, 1),
                "seed_file": seeds[index].name,
                "mutations": mutations,
                "outcome": result["outcome"],
                "message": result.get("message", "")[:160],
            }
        if result["outcome"] in ("refused", "refused when posed"):
            refusals[_refusal_kind(result["message"])] += 1
        if result["seconds"] > args.slow:
            slow.append({"case": number, "seconds": round(result["seconds"], 2), "mutations": mutations})
        if result["outcome"] not in ("loaded", "rig", "refused"):
            if result["outcome"] == "other exception":
                others[f"{result['type']} at {result['where']}"] += 1
            saved = keep / f"{number}_{result['outcome'].replace(' ', '_')}{reader.suffix}"
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_bytes(data)
            if len(examples) < 12:
                examples.append(
                    {
                        "case": number,
                        "seed_file": seeds[index].name,
                        "mutations": mutations,
                        **result,
                        "saved": str(saved),
                    }
                )
    return {
        "cases": cases,
        "wall_minutes": round((time.perf_counter() - started) / 60, 2),
        "outcomes": dict(outcomes),
        "other_exceptions": sum(others.values()),
        "other_exceptions_by_place": dict(others.most_common()),
        "hangs_or_crashes": outcomes["hang"] + outcomes["crash"],
        "over_slow_seconds": len(slow),
        "slow_cases": slow[:10],
        "seconds_median": round(statistics.median(seconds), 4),
        "seconds_max": round(max(seconds), 3),
        "peak_rss_mb": round(max(peaks) / 1024**2, 1),
        "peak_growth_mb": round(max(growths) / 1024**2, 1),
        "largest_growth_case": largest,
        "memory_refusals": sum(count for kind, count in refusals.items() if "memory" in kind),
        "top_refusals": dict(refusals.most_common(8)),
        "failures": examples,
    }


def specials(args: argparse.Namespace, work: Path) -> dict:
    results = {}
    limit = args.special_memory_mb * 1024**2
    fifo = work / "pipe"
    os.mkfifo(fifo)
    folder = work / "folder"
    folder.mkdir()
    for reader in ("lca", "ply", "image"):
        for label, path in (("named pipe", fifo), ("/dev/zero", Path("/dev/zero")), ("folder", folder)):
            result = run_isolated(READERS[reader].check, path, limit, args.timeout)
            results[f"{reader}: {label}"] = _brief(result)
    for case in sorted(REGRESSION_CASES.glob("*/*")):
        if case.parent.name in CHECK_BY_FOLDER:
            check = READERS[CHECK_BY_FOLDER[case.parent.name]].check
            results[f"{case.parent.name}/{case.name}"] = _brief(
                run_isolated(check, case, limit, args.timeout)
            )
    if not args.no_bomb:
        bomb = work / "honest_bomb.lca"
        honest_bomb(bomb, READERS["lca"].seeds(work / "bomb_seed")[0], args.bomb_mb * 1024**2)
        result = run_isolated(_read_avatar, bomb, limit, max(args.timeout, 120))
        results[f"honest bomb: {bomb.stat().st_size // 1024} KiB inflating to {args.bomb_mb} MiB"] = _brief(
            result
        )
    return results


def _read_avatar(path: Path) -> Outcome:
    """read_avatar alone (check_lca reads the rig again after a refusal, which a bomb would double)."""
    lca.read_avatar(path)
    return Outcome("loaded")


def _brief(result: dict) -> dict:
    return {
        "outcome": result["outcome"],
        "message": result.get("message", "")[:160],
        **({"type": result["type"], "where": result["where"]} if "type" in result else {}),
        "seconds": round(result["seconds"], 3),
        "peak_rss_mb": round(result["peak_rss_bytes"] / 1024**2, 1),
        "peak_growth_mb": round(result["growth_bytes"] / 1024**2, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases per reader (default 10000)")
    parser.add_argument("--readers", default="lca,ply,image", help="comma-separated: lca, ply, image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-mb", type=int, default=1024, help="address space a case may add (1024)")
    parser.add_argument("--special-memory-mb", type=int, default=4096, help="the same for special inputs")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a case counts as a hang")
    parser.add_argument("--slow", type=float, default=5.0, help="seconds over which a case is reported slow")
    parser.add_argument("--keep", default=str(REPO_ROOT / "out" / "fuzz"), help="where failing inputs go")
    parser.add_argument("--no-specials", action="store_true")
    parser.add_argument(
        "--no-bomb", action="store_true", help="skip the honest zip bomb (a few GB of memory)"
    )
    parser.add_argument("--bomb-mb", type=int, default=2048, help="what the honest bomb inflates to")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # zipfile's "Duplicate name" while mutating, and the like
    with tempfile.TemporaryDirectory(prefix="lca-fuzz-") as folder:
        work = Path(folder)
        report = {
            "seed": args.seed,
            "memory_limit_mb": args.memory_mb,
            "timeout_s": args.timeout,
            "readers": {},
        }
        for name in args.readers.split(","):
            report["readers"][name] = fuzz_reader(name, args.cases, args.seed, args, work)
        if not args.no_specials:
            report["specials"] = specials(args, work)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
