"""Importing a .lca avatar vs Blender's own .ply importer on the same splats, on each Blender.

Run with any Python: `python3 bench/blender_import.py` runs the benchmark in every Blender set up
here (`.venv-blender`: Blender 4.5 LTS; `.venv-blender53`: Blender 5.3), each in its own process,
at each size of `--gaussians` (200k and 1M by default), and prints one JSON document with every
run. The avatar comes from the engine (`.venv/bin/python -m lca_blender.cli new`); its rest splats
are written as a 3DGS .ply by the core writer. Ours builds the armature, the body (vertex groups,
52 shape keys) and the splats mesh with every attribute, then poses the first preview (on 5.3 it
adds the native splats' modifier instead); Blender's `wm.ply_import` only reads the points. The
target is at most 2x Blender's importer (1x was retired: the floor below is already 1.6x).

A second series of our imports times each part (reading the file, binding, each Blender object,
the first pose, and `create_avatar_objects`, all of them: what the whole import takes beyond it is
Blender evaluating the new objects after the operator, on 5.3 the native splats' node group), so
that what the import spends its time on is in the output too. A third, the
floor, does only what no importer of this avatar can skip: it reads the file's entries (inflating
and checking them, nothing more) and makes the same armature, body and splats mesh, the splats'
attributes converted beforehand (the body's few milliseconds of numpy stay in), with no binding
and no first pose. Last, a pose change: the median update of the scene after a bone turns, with
the splats and with the body alone (the splats hidden), which is what each frame of playback costs
(on 5.3 the native splats' node group; on 4.5 the add-on's own posing runs in both).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SANDBOX = REPO_ROOT / ".cache" / "blender-home"


@contextlib.contextmanager
def _quiet_stdout():
    """Send what C code writes to file descriptor 1 to /dev/null for the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def _sandbox_home() -> None:
    """Keep Blender's preferences and temporary files inside the checkout (as the tests do)."""
    for variable, folder in (
        ("HOME", SANDBOX),
        ("XDG_CONFIG_HOME", SANDBOX / "config"),
        ("XDG_CACHE_HOME", SANDBOX / "cache"),
        ("TMPDIR", SANDBOX / "tmp"),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[variable] = str(folder)
    tempfile.tempdir = None


def _load_add_on():
    """The checkout as the add-on package `lca_avatars` (its modules import the core relatively)."""
    spec = importlib.util.spec_from_file_location(
        "lca_avatars", REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["lca_avatars"] = module
    spec.loader.exec_module(module)
    return module


def _clear(bpy) -> None:
    data = bpy.data
    for collection in (data.objects, data.meshes, data.pointclouds, data.armatures, data.collections):
        for block in list(collection):
            collection.remove(block)


def _best_of(bpy, repeats: int, run) -> list[float]:
    seconds = []
    for _ in range(repeats):
        _clear(bpy)
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    _clear(bpy)
    return seconds


# (module under lca_avatars, function): the import's parts, timed in the second series.
PARTS = (
    ("operators.import_export", "create_avatar_objects"),
    ("lca_blender.formats.lca", "read_avatar"),
    ("lca_blender.maths.deform", "bind"),
    ("operators.import_export", "_build_armature"),
    ("operators.import_export", "_build_body"),
    ("operators.import_export", "_build_splats"),
    ("viewport.posing", "bind_splats"),
    ("viewport.native_splats", "add_native_splats"),
    ("viewport.posing", "update_previews"),
)


@contextlib.contextmanager
def _timed_parts(seconds: dict[str, list[float]]):
    """Wrap each of PARTS so that every call adds its duration to `seconds[name]`."""
    originals = []
    for module_name, name in PARTS:
        module = importlib.import_module(f"lca_avatars.{module_name}")
        original = getattr(module, name)
        originals.append((module, name, original))

        def timed(*args, _original=original, _name=name, **kwargs):
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                seconds.setdefault(_name, []).append(time.perf_counter() - started)

        setattr(module, name, timed)
    try:
        yield
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


def _floor(bpy, avatar_path: Path, repeats: int) -> list[float]:
    """Seconds of the floor series (see the module docstring)."""
    from lca_avatars.lca_blender.addon.blender_data import splat_attributes
    from lca_avatars.lca_blender.formats.lca import read_avatar
    from lca_avatars.operators import import_export

    avatar = read_avatar(avatar_path)
    converted = splat_attributes(avatar)

    def make_objects() -> None:
        with zipfile.ZipFile(avatar_path) as archive:
            for member in archive.infolist():
                archive.read(member)
        context = bpy.context
        collection = bpy.data.collections.new("floor")
        context.scene.collection.children.link(collection)
        rig = import_export._build_armature(context, collection, "floor_rig", avatar.rig)
        body = import_export._build_body(context, "floor_body", avatar.rig, rig)
        import_export._build_splats("floor_splats", avatar, None, body)
        collection.objects.link(body)

    # The importer takes splat_attributes from the module when it runs: hand it the arrays.
    blender_data = importlib.import_module("lca_avatars.lca_blender.addon.blender_data")
    blender_data.splat_attributes = lambda *_arguments: converted
    try:
        return _best_of(bpy, repeats, make_objects)
    finally:
        blender_data.splat_attributes = splat_attributes


def _pose_updates(bpy, avatar_path: Path, repeats: int) -> dict[str, float]:
    """Median seconds of the scene's update after a bone turns, with the avatar's splats posed by
    the add-on (on 5.3 the native splats' node group) and with the body alone (the splats hidden
    from the update): what each frame of playback costs beyond Blender's own skinning."""
    bpy.ops.lca.import_avatar(filepath=str(avatar_path))
    armature = next(item for item in bpy.data.objects if item.type == "ARMATURE")
    splats = next(item for item in bpy.data.objects if item.type == "MESH" and "splat" in item.name.lower())
    bone = armature.pose.bones[1]  # any bone: the splats' update redoes every splat
    bone.rotation_mode = "XYZ"

    def median_update() -> float:
        seconds = []
        for index in range(repeats * 4):
            bone.rotation_euler[0] = 0.01 * (index % 7 + 1)
            started = time.perf_counter()
            bpy.context.view_layer.update()
            seconds.append(time.perf_counter() - started)
        return statistics.median(seconds)

    with_splats = median_update()
    splats.hide_viewport = True  # a hidden object is left out of the depsgraph's evaluation
    body_alone = median_update()
    _clear(bpy)
    return {"with_splats_s": with_splats, "body_alone_s": body_alone}


BLENDER_VENVS = (".venv-blender", ".venv-blender53")
TARGET_RATIO_AT_MOST = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--in-blender", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_blender:
        _run_in_blender(args.gaussians[0], args.repeats)
        return
    runs = []
    for venv in BLENDER_VENVS:
        python = REPO_ROOT / venv / "bin" / "python"
        if not python.exists():
            runs.append({"blender_venv": venv, "skipped": "not set up (scripts/test.sh makes it)"})
            continue
        for gaussians in args.gaussians:
            result = subprocess.run(
                [str(python), __file__, "--in-blender", "--gaussians", str(gaussians), "--repeats",
                 str(args.repeats)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            # Blender may print lines of its own first: the JSON is the last line.
            runs.append({"blender_venv": venv, **json.loads(result.stdout.strip().splitlines()[-1])})
    print(json.dumps({"benchmark": "blender_import", "runs": runs}, indent=2))


def _run_in_blender(gaussians: int, repeats: int) -> None:
    """One run in this process's Blender; prints its JSON."""
    _sandbox_home()
    import bpy

    work = Path(tempfile.mkdtemp(prefix="lca-bench-"))
    avatar_path = work / "bench.lca"
    subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "python"), "-m", "lca_blender.cli", "--progress", "none", "new",
         "-o", str(avatar_path), "--gaussians", str(gaussians)],
        cwd=REPO_ROOT, check=True, capture_output=True,
    )  # fmt: skip

    add_on = _load_add_on()
    add_on.register()
    try:
        from lca_avatars.lca_blender.formats.lca import read_avatar
        from lca_avatars.lca_blender.formats.ply import write_ply
        from lca_avatars.lca_blender.maths.deform import pose_avatar

        ply_path = work / "bench.ply"
        write_ply(ply_path, pose_avatar(read_avatar(avatar_path)))

        def import_ours():
            bpy.ops.lca.import_avatar(filepath=str(avatar_path))

        ours = _best_of(bpy, repeats, import_ours)
        parts: dict[str, list[float]] = {}
        with _timed_parts(parts):
            _best_of(bpy, repeats, import_ours)
        floor = _floor(bpy, avatar_path, repeats)
        updates = _pose_updates(bpy, avatar_path, repeats)
        with _quiet_stdout():  # Blender's importer prints a line per run; stdout is for the JSON
            theirs = _best_of(bpy, repeats, lambda: bpy.ops.wm.ply_import(filepath=str(ply_path)))
    finally:
        add_on.unregister()

    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    part_medians = {name: statistics.median(seconds) for name, seconds in parts.items()}
    print(
        json.dumps(
            {
                "gaussians": gaussians,
                "blender": bpy.app.version_string,
                "ours_import_s": round(ours_s, 4),
                "blender_ply_import_s": round(theirs_s, 4),
                "ratio": round(ours_s / theirs_s, 3),
                "target_ratio_at_most": TARGET_RATIO_AT_MOST,
                "floor_s": round(statistics.median(floor), 4),
                "floor_ratio": round(statistics.median(floor) / theirs_s, 3),
                "ours_parts_ms": {name: round(1000 * s, 1) for name, s in part_medians.items()},
                "ours_parts_ratio": {name: round(s / theirs_s, 3) for name, s in part_medians.items()},
                "pose_update_ms": round(1000 * updates["with_splats_s"], 2),
                "pose_update_body_alone_ms": round(1000 * updates["body_alone_s"], 2),
                "pose_update_ratio_to_body_alone": round(
                    updates["with_splats_s"] / updates["body_alone_s"], 3
                ),
                "ours_all_s": [round(s, 4) for s in ours],
                "theirs_all_s": [round(s, 4) for s in theirs],
            },
        )
    )
    sys.stdout.flush()
    # bpy 4.5 can hang at exit after add-on use (see TESTING.md); leave at once.
    os._exit(0)


if __name__ == "__main__":
    main()
