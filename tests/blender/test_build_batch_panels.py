"""Build, batch, the engine installer, hand poses and the sidebar, driven headlessly with a fake engine.

Timers never fire in the bpy module, so the tests step the operators' controllers themselves, or
call the operators, which run their controller to the end when there is no window (as in
background Blender).
"""

from __future__ import annotations

import importlib
import json
import math
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING

import bpy
import pytest
from conftest import process_is_gone
from mathutils import Quaternion

if TYPE_CHECKING:
    from conftest import InstalledExtension

REPO_ROOT = Path(__file__).resolve().parents[2]

# Stands in for `lca-avatar --progress jsonl build PHOTOS -o OUT ...`: reads its plan from the photo
# folder's engine.json, prints progress lines, leaves a stage cache beside its output, then fails
# with the engine's error line or copies the plan's template avatar to the output. With "paced_by"
# in the plan it goes on after each step only once a file "seen-<step>" shows in that folder (the
# test writes it when the step has reached the sidebar); otherwise "delay" seconds later. With
# "pid_file" it writes its process id there. `batch` is the engine's own batch (no contact sheet:
# that needs the renderer), whose builds come back to this stand-in.
FAKE_ENGINE = """
import json, os, shutil, sys, time
from pathlib import Path

arguments = sys.argv[1:]
if arguments[:3] == ["--progress", "jsonl", "batch"]:
    from lca_blender.cli import run

    sys.argv[1:] = [*arguments, "--no-cast"]
    run()
assert arguments[:3] == ["--progress", "jsonl", "build"], arguments
output = Path(arguments[arguments.index("-o") + 1])
photo = Path(arguments[3])
plan = json.loads(((photo if photo.is_dir() else photo.parent) / "engine.json").read_text())
if "pid_file" in plan:
    Path(plan["pid_file"]).write_text(str(os.getpid()))
(output.parent / "stage-cache.npy").write_bytes(b"cache")
steps = plan.get("steps", 4)
for step in range(1, steps + 1):
    print(json.dumps({"stage": "fit_body", "fraction": step / steps, "message": f"step {step}",
                      "eta_s": 90.0 * (steps - step)}), flush=True)
    if "paced_by" in plan:
        seen, deadline = Path(plan["paced_by"]) / f"seen-{step}", time.monotonic() + 60
        while not seen.exists():
            assert time.monotonic() < deadline, f"nobody saw step {step}"
            time.sleep(0.005)
    else:
        time.sleep(plan.get("delay", 0.02))
if "fail" in plan:
    print("lca-avatar: error: " + plan["fail"], file=sys.stderr)
    sys.exit(2)
shutil.copyfile(plan["template"], output)
"""


@pytest.fixture
def ext(enabled_extension: ModuleType) -> SimpleNamespace:
    """The add-on's modules, as Blender loaded them from the installed package."""
    name = enabled_extension.__name__

    def module(path: str) -> ModuleType:
        return importlib.import_module(f"{name}.{path}")

    return SimpleNamespace(
        root=enabled_extension,
        build=module("operators.build"),
        batch=module("operators.batch"),
        engine=module("operators.engine"),
        animation=module("operators.animation"),
        sidebar=module("panels.sidebar"),
        process=module("lca_blender.addon.engine_process"),
        core=SimpleNamespace(
            avatar=module("lca_blender.avatar"),
            rotations=module("lca_blender.maths.rotations"),
            sample=module("lca_blender.reconstruct.sample"),
            lca=module("lca_blender.formats.lca"),
        ),
    )


@pytest.fixture
def fake_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    script = tmp_path / "fake_engine.py"
    script.write_text(FAKE_ENGINE)
    command = [sys.executable, str(script)]
    monkeypatch.setenv("LCA_ENGINE_COMMAND", shlex.join(command))
    return command


@pytest.fixture
def template_avatar(ext: SimpleNamespace, tmp_path: Path) -> Path:
    """A tiny valid .lca: a box skinned to two bones, covered by the core's sample Gaussians."""
    import numpy as np

    corners = np.array([[x, y, z] for x in (-0.1, 0.1) for y in (-0.1, 0.1) for z in (0.0, 0.4)], np.float32)
    faces = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    triangles = np.array([t for a, b, c, d in faces for t in ((a, b, c), (a, c, d))], np.int32)
    heads = np.array([[0, 0, 0], [0, 0, 0.2]], np.float64)
    tails = np.array([[0, 0, 0.2], [0, 0, 0.4]], np.float64)
    rotations = ext.core.rotations
    rest = rotations.bone_matrix(heads, tails, rotations.bone_roll_towards(heads, tails, np.eye(3)[[0, 0]]))
    upper = (corners[:, 2] > 0.2).astype(np.int32)
    rig = ext.core.avatar.Rig(
        joint_names=["root", "spine"],
        joint_parents=np.array([-1, 0], np.int32),
        rest_transforms=rest.astype(np.float32),
        bone_tails=tails.astype(np.float32),
        vertices=corners,
        triangles=triangles,
        skin_indices=upper[:, None],
        skin_weights=np.ones((8, 1), np.float32),
        expression_names=["jawOpen"],
        expression_deltas=np.zeros((1, 8, 3), np.float32),
        body_model="test-box",
    )
    path = tmp_path / "template.lca"
    ext.core.lca.write_avatar(path, ext.core.sample.sample_avatar(rig, 200, sh_degree=0))
    return path


@pytest.fixture
def clean_scene() -> Iterator[bpy.types.Scene]:
    scene = bpy.context.scene
    before, collections_before = set(bpy.data.objects), set(bpy.data.collections)
    yield scene
    for obj in set(bpy.data.objects) - before:
        bpy.data.objects.remove(obj)
    for collection in set(bpy.data.collections) - collections_before:
        bpy.data.collections.remove(collection)
    report = bpy.data.texts.get("LCA batch report")
    if report is not None:
        bpy.data.texts.remove(report)


def _photos(folder: Path, **plan) -> Path:
    folder.mkdir(parents=True)
    (folder / "front.jpg").write_bytes(b"jpeg")
    (folder / "engine.json").write_text(json.dumps(plan))
    return folder


def _step_until(controller, condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the fake engine took too long"
        controller.step()
        time.sleep(0.01)


# ---------------------------------------------------------------- build


def test_build_shows_progress_then_imports(
    ext, fake_engine, template_avatar, clean_scene, tmp_path: Path
) -> None:
    paces = tmp_path / "paces"
    paces.mkdir()
    photos = _photos(tmp_path / "alice", steps=5, paced_by=str(paces), template=str(template_avatar))
    output = tmp_path / "avatars" / "alice.lca"
    build = ext.process.AvatarBuild(fake_engine, [photos], output, ["--device", "cpu"], None)
    controller = ext.build.BuildController(clean_scene, build).start()
    state = clean_scene.lca
    assert state.build_running and ext.engine.running_controller() is controller

    seen = []  # each step as the sidebar showed it; the engine waits for the test to see each one
    deadline = time.monotonic() + 60
    while not controller.step().finished:
        assert time.monotonic() < deadline, f"the fake engine stopped after {seen}"
        reading = (state.build_progress, state.build_stage, state.build_message)
        if state.build_running and reading[1].startswith("fit_body") and (not seen or seen[-1] != reading):
            seen.append(reading)
            (paces / f"seen-{reading[2].split()[-1]}").touch()
        time.sleep(0.01)
    assert [message for _, _, message in seen] == [f"step {step}" for step in range(1, 6)]
    progress = [fraction for fraction, _, _ in seen]
    assert progress == sorted(progress) and 0 < progress[0] < progress[-1] <= 1, progress
    assert "min left" in seen[0][1]  # the ETA is in the bar's text

    assert controller.status is ext.process.JobStatus.SUCCEEDED
    assert not state.build_running and state.build_progress == 1.0
    assert state.build_message == "Built and imported alice.lca"
    assert ext.engine.running_controller() is None
    assert output.read_bytes() == template_avatar.read_bytes()
    assert sorted(p.name for p in output.parent.iterdir()) == ["alice.lca"]  # no work folder left
    # Imported by the add-on's own `lca.import_avatar`, into parts the sidebar finds.
    imported = {obj.name: obj for obj in controller.imported}
    assert set(imported) == {"alice_rig", "alice_body", "alice_splats"}
    rig, splats = imported["alice_rig"], imported["alice_splats"]
    assert (
        ext.animation.avatar_splats(rig) == splats and ext.animation.avatar_body(splats).name == "alice_body"
    )


def test_build_failure_surfaces_the_engine_message(
    ext, fake_engine, template_avatar, clean_scene, tmp_path: Path
) -> None:
    photos = _photos(tmp_path / "bob", fail="No person was found in 'front.jpg'.")
    output = tmp_path / "avatars" / "bob.lca"
    build = ext.process.AvatarBuild(fake_engine, [photos], output, [], None)
    controller = ext.build.BuildController(clean_scene, build).start()
    assert controller.run_to_end(timeout_s=30) is ext.process.JobStatus.FAILED
    assert controller.error_message == "No person was found in 'front.jpg'."
    assert "No person was found in 'front.jpg'." in clean_scene.lca.build_message
    assert not clean_scene.lca.build_running
    assert list(output.parent.iterdir()) == []


def test_an_avatar_that_does_not_import_is_a_failure(ext, fake_engine, clean_scene, tmp_path: Path) -> None:
    broken = tmp_path / "broken.lca"
    broken.write_bytes(b"not a zip")
    photos = _photos(tmp_path / "kim", template=str(broken))
    build = ext.process.AvatarBuild(fake_engine, [photos], tmp_path / "avatars" / "kim.lca", [], None)
    controller = ext.build.BuildController(clean_scene, build).start()
    assert controller.run_to_end(timeout_s=30) is ext.process.JobStatus.FAILED
    assert controller.error_message.startswith("Importing 'kim.lca' failed")
    assert controller.message.startswith("Building kim failed: Importing 'kim.lca' failed")
    assert not controller.imported
    errors = ext.root.lca_blender.errors
    with pytest.raises(errors.AvatarError, match="Importing 'broken.lca' failed") as caught:
        ext.build.import_built_avatar(broken)
    assert isinstance(caught.value.__cause__, errors.AvatarFileError)  # the reader's own error, kept


def test_build_operator_fails_then_succeeds_into_the_user_folder(
    ext, fake_engine, template_avatar, clean_scene, tmp_path: Path
) -> None:
    # Background Blender has no window: the operator runs its controller to the end itself.
    photos = _photos(tmp_path / "erin", fail="The photos are too small (at least 256 pixels a side).")
    avatars = Path(bpy.utils.extension_path_user(ext.engine.ADDON_PACKAGE, path="avatars", create=True))
    before = set(avatars.iterdir())
    with pytest.raises(RuntimeError, match="too small"):
        bpy.ops.lca.build_avatar(directory=str(photos), files=[{"name": "front.jpg"}])
    assert set(avatars.iterdir()) == before

    (photos / "engine.json").write_text(json.dumps({"template": str(template_avatar)}))
    assert bpy.ops.lca.build_avatar(directory=str(photos), files=[{"name": "front.jpg"}]) == {"FINISHED"}
    built = set(avatars.iterdir()) - before
    try:
        assert [path.name for path in built] == ["front.lca"]
        assert clean_scene.lca.build_message == "Built and imported front.lca"
    finally:
        for path in built:
            path.unlink()


def test_build_cancel_kills_the_engine_and_leaves_nothing(
    ext, fake_engine, template_avatar, clean_scene, tmp_path: Path
) -> None:
    photos = _photos(tmp_path / "dave", steps=100, delay=1.0, template=str(template_avatar))
    output = tmp_path / "avatars" / "dave.lca"
    build = ext.process.AvatarBuild(fake_engine, [photos], output, [], None)
    controller = ext.build.BuildController(clean_scene, build).start()
    _step_until(controller, lambda: clean_scene.lca.build_stage.startswith("fit_body"))
    assert any(output.parent.iterdir())  # the engine's work folder, with its stage cache

    assert bpy.ops.lca.cancel_build() == {"FINISHED"}  # the sidebar's Cancel button
    assert controller.status is ext.process.JobStatus.CANCELLED
    assert process_is_gone(build.job.pid)
    assert list(output.parent.iterdir()) == []
    assert not clean_scene.lca.build_running and clean_scene.lca.build_message.endswith("cancelled")
    assert ext.engine.running_controller() is None
    assert not bpy.ops.lca.cancel_build.poll()


class _ModalShell:
    """The operators' modal shell outside an operator, with what Blender would hand it recorded."""

    def __init__(self, ext, controller) -> None:
        self.shell = type("Shell", (ext.engine.ModalControllerMixin,), {"report": self._report})()
        self.shell._controller, self.shell._timer = controller, "the timer"
        self.reports: list[tuple[set, str]] = []
        self.removed_timers: list = []
        window_manager = SimpleNamespace(event_timer_remove=self.removed_timers.append)
        self.context = SimpleNamespace(window_manager=window_manager, scene=bpy.context.scene)

    def _report(self, kind: set, message: str) -> None:
        self.reports.append((kind, message))

    def event(self, kind: str, value: str = "NOTHING") -> set[str]:
        return self.shell.modal(self.context, SimpleNamespace(type=kind, value=value))


def test_the_modal_shell_steps_on_timer_events_and_cancels_on_esc(
    ext, fake_engine, template_avatar, clean_scene, tmp_path: Path
) -> None:
    photos = _photos(tmp_path / "ivy", steps=100, delay=1.0, template=str(template_avatar))
    output = tmp_path / "avatars" / "ivy.lca"
    build = ext.process.AvatarBuild(fake_engine, [photos], output, [], None)
    modal = _ModalShell(ext, ext.build.BuildController(clean_scene, build).start())
    deadline = time.monotonic() + 30
    while build.job.last_event is None:
        assert modal.event("TIMER") == {"RUNNING_MODAL"}
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert clean_scene.lca.build_running and clean_scene.lca.build_stage.startswith("fit_body")
    assert modal.event("MOUSEMOVE") == {"PASS_THROUGH"}  # Blender stays usable meanwhile

    assert modal.event("ESC", "PRESS") == {"CANCELLED"}
    assert modal.removed_timers == ["the timer"]
    assert modal.reports == [({"WARNING"}, "Building ivy: cancelled")]
    assert process_is_gone(build.job.pid) and list(output.parent.iterdir()) == []

    # A build that succeeds: timer ticks until the import, then the shell finishes.
    (photos / "engine.json").write_text(json.dumps({"template": str(template_avatar)}))
    build = ext.process.AvatarBuild(fake_engine, [photos], output, [], None)
    modal = _ModalShell(ext, ext.build.BuildController(clean_scene, build).start())
    deadline = time.monotonic() + 30
    while (result := modal.event("TIMER")) == {"RUNNING_MODAL"}:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert result == {"FINISHED"}
    assert modal.reports == [({"INFO"}, "Built and imported ivy.lca")]
    assert output.is_file()


def test_a_bug_in_the_import_keeps_its_traceback_and_ends_the_job(
    ext, fake_engine, template_avatar, clean_scene, tmp_path: Path
) -> None:
    photos = _photos(tmp_path / "lee", template=str(template_avatar))
    build = ext.process.AvatarBuild(fake_engine, [photos], tmp_path / "avatars" / "lee.lca", [], None)

    def broken_import(path: Path) -> list:
        raise ValueError("a bug in the import")

    modal = _ModalShell(ext, ext.build.BuildController(clean_scene, build, on_built=broken_import).start())
    deadline = time.monotonic() + 30
    with pytest.raises(ValueError, match="a bug in the import"):
        while modal.event("TIMER") == {"RUNNING_MODAL"}:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert modal.removed_timers == ["the timer"] and modal.reports == []
    assert ext.engine.running_controller() is None and bpy.ops.lca.build_avatar.poll()
    assert not clean_scene.lca.build_running
    assert clean_scene.lca.build_message == "Building lee: importing the avatar failed (see the console)"


def test_one_build_at_a_time(ext, fake_engine, template_avatar, clean_scene, tmp_path: Path) -> None:
    photos = _photos(tmp_path / "frank", steps=100, delay=1.0, template=str(template_avatar))

    def make(name: str):
        return ext.process.AvatarBuild(fake_engine, [photos], tmp_path / name, [], None)

    first = ext.build.BuildController(clean_scene, make("a.lca")).start()
    try:
        assert not bpy.ops.lca.build_avatar.poll() and not bpy.ops.lca.batch_build.poll()
        with pytest.raises(ext.root.lca_blender.errors.AvatarError, match="already running"):
            ext.build.BuildController(clean_scene, make("b.lca")).start()
    finally:
        first.cancel()
    assert bpy.ops.lca.build_avatar.poll()


def test_engine_not_found_is_reported(
    ext, clean_scene, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LCA_ENGINE_COMMAND", raising=False)
    monkeypatch.delenv("LCA_ENGINE_PYTHON", raising=False)
    preferences = ext.engine.preferences()
    preferences.engine_python = str(tmp_path / "no-such-python")
    try:
        photos = _photos(tmp_path / "gina")
        with pytest.raises(RuntimeError, match="does not exist"):
            bpy.ops.lca.build_avatar(directory=str(photos))
    finally:
        preferences.engine_python = ""


def test_avatar_name_and_unused_path(ext, tmp_path: Path) -> None:
    folder = tmp_path / "Jane Doe"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.jpg").write_bytes(b"")
    assert ext.build.avatar_name([folder]) == "Jane_Doe"
    assert ext.build.avatar_name([folder / "a.jpg"]) == "a"
    assert ext.build.avatar_name([folder / "a.jpg", folder / "b.jpg"]) == "Jane_Doe"
    (tmp_path / "x.lca").write_bytes(b"")
    assert ext.build.unused_path(tmp_path, "x").name == "x.001.lca"
    assert ext.build.unused_path(tmp_path, "y").name == "y.lca"


# ---------------------------------------------------------------- batch


def test_batch_continues_past_failures_places_a_row_and_skips_finished_subjects(
    ext, fake_engine, template_avatar, clean_scene, tmp_path: Path
) -> None:
    root = tmp_path / "cast"
    _photos(root / "alice", template=str(template_avatar))
    _photos(root / "bob", fail="Bob's photos show two people.")
    _photos(root / "carol", template=str(template_avatar))
    (root / "empty").mkdir()  # no photos: not a subject
    output = tmp_path / "avatars"

    assert bpy.ops.lca.batch_build(directory=str(root), output_directory=str(output)) == {"FINISHED"}
    assert sorted(path.name for path in output.glob("*.lca")) == ["alice.lca", "carol.lca"]
    report = bpy.data.texts["LCA batch report"].as_string()
    assert "2 built, 0 skipped, 1 failed" in report
    assert "bob: failed: Bob's photos show two people." in report
    assert f"Report: {output / 'batch_report.json'}" in report
    assert "bob: Bob's photos show two people." in clean_scene.lca.build_message
    # The engine's batch did the work: its report beside the avatars says the same.
    engine_report = json.loads((output / "batch_report.json").read_text())
    assert engine_report["counts"]["built"] == 2 and engine_report["counts"]["failed"] == 1

    def row() -> dict[str, float]:
        # The top objects of each import, by the avatar they came from.
        placed = {}
        for obj in bpy.data.objects:
            for name in ("alice", "bob", "carol"):
                if obj.name.startswith(name) and obj.parent is None:
                    placed.setdefault(name, set()).add(round(obj.location.x, 6))
        return placed

    assert row() == {"alice": {0.0}, "carol": {2.0}}  # bob's place stays free
    objects_after_first_run = len(bpy.data.objects)

    # Rerun: finished subjects are skipped, bob fails again (the only build of the run: an error).
    with pytest.raises(RuntimeError, match="bob: Bob's photos show two people"):
        bpy.ops.lca.batch_build(directory=str(root), output_directory=str(output))
    report = bpy.data.texts["LCA batch report"].as_string()
    assert "0 built, 2 skipped, 1 failed" in report
    assert "alice: skipped: up to date" in report and "carol: skipped: up to date" in report
    assert len(bpy.data.objects) == objects_after_first_run

    # Bob's photos fixed: the next run builds only bob, into his place in the row.
    (root / "bob" / "engine.json").write_text(json.dumps({"template": str(template_avatar)}))
    assert bpy.ops.lca.batch_build(directory=str(root), output_directory=str(output)) == {"FINISHED"}
    assert "1 built, 2 skipped, 0 failed" in bpy.data.texts["LCA batch report"].as_string()
    assert row() == {"alice": {0.0}, "bob": {1.0}, "carol": {2.0}}

    # A photo that changed: that subject is built again (its bytes count, not its date).
    (root / "alice" / "front.jpg").write_bytes(b"another jpeg")
    assert bpy.ops.lca.batch_build(directory=str(root), output_directory=str(output)) == {"FINISHED"}
    report = bpy.data.texts["LCA batch report"].as_string()
    assert "1 built, 2 skipped, 0 failed" in report and "alice: built" in report


def test_batch_progress_and_cancel(ext, fake_engine, template_avatar, clean_scene, tmp_path: Path) -> None:
    root = tmp_path / "cast"
    pid_file = tmp_path / "a.pid"
    _photos(root / "a", steps=100, delay=1.0, template=str(template_avatar), pid_file=str(pid_file))
    _photos(root / "b", template=str(template_avatar))
    output = tmp_path / "avatars"
    controller = ext.batch.BatchController(
        clean_scene, fake_engine, root, output, ["--jobs", "1"], ext.engine.engine_env()
    ).start()
    _step_until(controller, lambda: clean_scene.lca.build_progress > 0.0 and pid_file.exists())
    assert clean_scene.lca.build_stage.startswith("Batch") and "building a" in clean_scene.lca.build_message
    assert clean_scene.lca.build_progress < 0.5
    controller.cancel()
    assert controller.status is ext.process.JobStatus.CANCELLED
    assert process_is_gone(controller.job.pid)  # the batch
    _step_until(controller, lambda: process_is_gone(int(pid_file.read_text())), timeout=10)  # its build
    assert list(output.glob("*.lca")) == []
    report = bpy.data.texts["LCA batch report"].as_string()
    assert "a: cancelled: The batch was cancelled during this subject's build." in report
    assert "b: cancelled: The batch was cancelled before this subject's build started." in report
    assert not clean_scene.lca.build_running


# ---------------------------------------------------------------- engine installer


def test_install_engine_refuses_without_online_access(ext) -> None:
    assert bpy.app.online_access is False  # the bpy module starts offline
    with pytest.raises(RuntimeError, match="Allow Online Access"):
        bpy.ops.lca.install_engine()
    assert not ext.engine.installed_engine_venv().exists()


def test_install_engine_commands(ext, tmp_path: Path) -> None:
    venv = tmp_path / "engine"
    steps = ext.engine.install_steps(venv, "CPU")
    python = str(venv / "bin" / "python")
    assert [step.argv for step in steps] == [
        [sys.executable, "-m", "venv", str(venv)],
        [python, "-m", "pip", "install", "--disable-pip-version-check", "--index-url",
         "https://download.pytorch.org/whl/cpu", "torch==2.13.0"],
        [python, "-m", "pip", "install", "--disable-pip-version-check", "lca-avatars[engine]==0.1.0"],
        [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "mediapipe==0.10.21"],
    ]  # fmt: skip
    # From a checkout, the engine is installed from the checkout itself.
    from_checkout = ext.engine.install_steps(venv, "AUTO", source=REPO_ROOT)
    assert from_checkout[1].argv[-1] == "torch==2.13.0" and "--index-url" not in from_checkout[1].argv
    assert from_checkout[2].argv[-1] == f"{REPO_ROOT}[engine]"


def test_install_engine_runs_its_steps_when_online(ext, monkeypatch: pytest.MonkeyPatch) -> None:
    quick = [sys.executable, "-c", "pass"]
    failing = [sys.executable, "-c", "import sys; print('no space left', file=sys.stderr); sys.exit(1)"]
    monkeypatch.setattr(ext.engine, "online_access_allowed", lambda: True)
    monkeypatch.setattr(
        ext.engine, "install_steps", lambda venv, device: [ext.engine.InstallStep("one", quick)]
    )
    assert bpy.ops.lca.install_engine() == {"FINISHED"}

    steps = [ext.engine.InstallStep("one", quick), ext.engine.InstallStep("Installing torch", failing)]
    monkeypatch.setattr(ext.engine, "install_steps", lambda venv, device: steps)
    with pytest.raises(RuntimeError, match="Installing torch failed: no space left"):
        bpy.ops.lca.install_engine()


def test_install_progress_and_clean_up(ext, clean_scene, tmp_path: Path) -> None:
    venv = tmp_path / "engine"
    make_venv = [sys.executable, "-c", f"import os; os.makedirs({str(venv / 'bin')!r})"]
    slow = [sys.executable, "-c", "import time; time.sleep(60)"]
    steps = [
        ext.engine.InstallStep("Creating the environment", make_venv),
        ext.engine.InstallStep("Installing torch", slow),
    ]
    controller = ext.engine.InstallController(clean_scene, venv, steps).start()
    assert clean_scene.lca.build_stage == "Creating the environment"
    _step_until(controller, lambda: clean_scene.lca.build_stage == "Installing torch")
    assert clean_scene.lca.build_running and clean_scene.lca.build_progress == pytest.approx(0.5)
    assert venv.is_dir() and bpy.ops.lca.cancel_build.poll()
    process = controller.job
    bpy.ops.lca.cancel_build()
    assert controller.status is ext.process.JobStatus.CANCELLED and process_is_gone(process.pid)
    assert not venv.exists()  # a half-made environment would be mistaken for an engine
    assert controller.message == "Engine installation cancelled" and not clean_scene.lca.build_running


# ---------------------------------------------------------------- hands and expressions


@pytest.fixture
def hand_rig(ext, clean_scene) -> Iterator[bpy.types.Object]:
    """An armature with Anny's finger bone names: five fingers, three phalanges, both hands."""
    armature = bpy.data.armatures.new("hands")
    rig = bpy.data.objects.new("hands_rig", armature)
    clean_scene.collection.objects.link(rig)
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    for side, x in (("L", 0.5), ("R", -0.5)):
        for finger in range(1, 6):
            parent = None
            for phalanx in range(1, 4):
                bone = armature.edit_bones.new(f"finger{finger}-{phalanx}.{side}")
                bone.head = (x, 0.02 * finger, 0.03 * (phalanx - 1))
                bone.tail = (x, 0.02 * finger, 0.03 * phalanx)
                bone.parent = parent
                parent = bone
    bpy.ops.object.mode_set(mode="OBJECT")
    yield rig
    bpy.data.objects.remove(rig)
    bpy.data.armatures.remove(armature)


def about(axis: tuple[float, float, float], degrees: float) -> Quaternion:
    return Quaternion(axis, math.radians(degrees))


def assert_same_rotation(actual: Quaternion, expected: Quaternion, what: str) -> None:
    """Equal up to float32 rounding, q and -q being one rotation.

    Compares components: a few roundings of unit-size float32 numbers stay within 1e-6 (eps is
    6e-8), while the angle between the two (2 acos w) would magnify that to about 1e-3 rad.
    """
    apart = min(
        max(abs(a - e) for a, e in zip(actual, expected, strict=True)),
        max(abs(a + e) for a, e in zip(actual, expected, strict=True)),
    )
    assert apart < 1e-6, (what, actual, expected)


def test_hand_pose_sets_the_finger_bones(ext, hand_rig: bpy.types.Object) -> None:
    bones = hand_rig.pose.bones
    bones["finger3-2.L"].rotation_mode = "XYZ"  # an animator's choice the helper must respect
    assert bpy.ops.lca.hand_pose(side="L", curl=1.0, spread=0.5) == {"FINISHED"}

    x, z = (1, 0, 0), (0, 0, 1)
    expected = {
        "finger1-1.L": about(x, 54),  # the thumb curls 0.6 as far and does not spread
        "finger1-3.L": about(x, 54),
        "finger2-1.L": about(z, 5) @ about(x, 90),  # the index finger fans out one step
        "finger2-2.L": about(x, 90),
        "finger3-1.L": about(x, 90),  # the middle finger stays in the middle
        "finger5-1.L": about(z, -10) @ about(x, 90),  # the little finger fans out two steps
    }
    for name, rotation in expected.items():
        assert_same_rotation(bones[name].rotation_quaternion, rotation, name)
    assert math.degrees(bones["finger3-2.L"].rotation_euler.x) == pytest.approx(90, abs=1e-4)
    for bone in bones:  # the other hand is untouched
        if bone.name.endswith(".R"):
            assert bone.rotation_quaternion == Quaternion()

    # The right hand mirrors the spread; the posed bone really bends.
    bpy.ops.lca.hand_pose(side="R", curl=0.0, spread=1.0)
    assert_same_rotation(bones["finger2-1.R"].rotation_quaternion, about(z, -10), "finger2-1.R")
    bpy.context.view_layer.update()
    tip = bones["finger2-3.L"].tail
    assert tip.z < 0.03 * 1.5  # curled fingers end far below the straight finger's 9 cm


def test_hand_pose_needs_finger_bones(ext, clean_scene) -> None:
    rig = bpy.data.objects.new("plain", bpy.data.armatures.new("plain"))
    clean_scene.collection.objects.link(rig)
    bpy.context.view_layer.objects.active = rig
    with pytest.raises(RuntimeError, match="no finger bones"):
        bpy.ops.lca.hand_pose(side="L", curl=1)
    bpy.context.view_layer.objects.active = None
    assert not bpy.ops.lca.hand_pose.poll()


@pytest.fixture
def face_avatar(hand_rig: bpy.types.Object, ext) -> SimpleNamespace:
    """hand_rig plus a body with a few ARKit shape keys and a splats object, as an import makes them."""
    names = ["browInnerUp", "eyeBlinkLeft", "jawOpen", "mouthSmileLeft", "cheekPuff", "noseSneerLeft",
             "tongueOut", "customWrinkle"]  # fmt: skip
    mesh = bpy.data.meshes.new("face")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    body = bpy.data.objects.new("face_body", mesh)
    body.parent = hand_rig
    body.modifiers.new("Armature", "ARMATURE").object = hand_rig
    body.shape_key_add(name="Basis").value = 0.0  # as an import sets it (Blender 5.3 would give 1.0)
    for name in names:
        body.shape_key_add(name=name).value = 0.5
    splats = bpy.data.objects.new("face_splats", bpy.data.meshes.new("splats"))
    splats.parent = body
    splats.lca.is_splats = True
    splats.lca.avatar_name = "face"
    for obj in (body, splats):
        bpy.context.scene.collection.objects.link(obj)
    return SimpleNamespace(rig=hand_rig, body=body, splats=splats, names=names)


def test_avatar_parts_are_found_from_any_of_its_objects(ext, face_avatar) -> None:
    animation = ext.animation
    for obj in (face_avatar.rig, face_avatar.body, face_avatar.splats):
        assert animation.avatar_armature(obj) == face_avatar.rig, obj.name
        assert animation.avatar_body(obj) == face_avatar.body, obj.name
        assert animation.avatar_splats(obj) == face_avatar.splats, obj.name
    for finder in (animation.avatar_armature, animation.avatar_body, animation.avatar_splats):
        assert finder(None) is None


def test_reset_expressions(ext, face_avatar) -> None:
    bpy.context.view_layer.objects.active = face_avatar.splats
    assert bpy.ops.lca.reset_expressions() == {"FINISHED"}
    keys = face_avatar.body.data.shape_keys.key_blocks
    assert [key.value for key in keys] == [0.0] * len(keys)


def test_toggle_cage_shows_and_hides_the_body_from_any_avatar_object(ext, face_avatar) -> None:
    body = face_avatar.body
    body.hide_set(True)  # as imported
    for active, hidden_after in ((face_avatar.splats, False), (face_avatar.rig, True), (body, False)):
        bpy.context.view_layer.objects.active = active
        assert bpy.ops.lca.toggle_cage() == {"FINISHED"}
        assert body.hide_get() == hidden_after, active.name
        assert not body.hide_viewport  # still evaluated: the splats follow its evaluated mesh
    bpy.context.view_layer.objects.active = None
    assert not bpy.ops.lca.toggle_cage.poll()


def test_expression_groups(ext) -> None:
    grouped = ext.sidebar.group_expressions(list(ext.core.avatar.ARKIT_EXPRESSIONS) + ["customWrinkle"])
    titles = [title for title, _ in grouped]
    assert titles == ["Brows", "Eyes", "Jaw", "Mouth", "Cheeks", "Nose", "Tongue", "Other"]
    members = dict(grouped)
    assert sum(len(names) for title, names in grouped if title != "Other") == 52
    assert members["Other"] == ["customWrinkle"]
    assert "jawOpen" in members["Jaw"] and "mouthClose" in members["Mouth"]
    assert "eyeBlinkLeft" in members["Eyes"] and "tongueOut" in members["Tongue"]


# ---------------------------------------------------------------- panels and preferences


class _Recorder:
    """A stand-in UILayout that records what a panel draws and checks icons and properties exist."""

    icons = set(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())
    operator_parameters = set(bpy.types.UILayout.bl_rna.functions["operator"].parameters.keys())

    def __init__(self, log: list) -> None:
        self.log = log
        self.active = True

    def _check(self, kwargs: dict) -> None:
        assert kwargs.get("icon", "NONE") in self.icons, kwargs["icon"]

    def column(self, **kwargs) -> _Recorder:
        return self

    row = box = column

    def label(self, **kwargs) -> None:
        self._check(kwargs)
        self.log.append(("label", kwargs.get("text", "")))

    def operator(self, idname: str, **kwargs) -> SimpleNamespace:
        self._check(kwargs)
        assert set(kwargs) <= self.operator_parameters, kwargs
        self.log.append(("operator", idname))
        return SimpleNamespace()

    def prop(self, data, name: str, **kwargs) -> None:
        self._check(kwargs)
        assert name in data.bl_rna.properties, name
        self.log.append(("prop", kwargs.get("text") or name))

    def progress(self, **kwargs) -> None:
        self.log.append(("progress", kwargs["factor"], kwargs["text"]))


class _Drawn:
    """`self` for a panel's or preferences' draw(): the recording layout, the rest from `data`."""

    def __init__(self, layout: _Recorder, data) -> None:
        self.layout = layout
        self._data = data

    def __getattr__(self, name: str):
        return getattr(self._data, name)


def _draw(panel: type, context, data=None) -> list:
    log: list = []
    panel.draw(_Drawn(_Recorder(log), data), context)
    return log


def test_panels_are_registered_in_the_lca_tab(ext) -> None:
    for name in ("LCA_PT_avatar", "LCA_PT_expressions", "LCA_PT_hands"):
        panel = getattr(bpy.types, name)
        assert panel.is_registered and panel.bl_category == "LCA" and panel.bl_space_type == "VIEW_3D"


def test_panels_draw_without_an_avatar(ext, clean_scene) -> None:
    context = SimpleNamespace(scene=clean_scene, active_object=None)
    log = _draw(ext.sidebar.LCA_PT_avatar, context)
    assert ("operator", "lca.build_avatar") in log and ("operator", "lca.batch_build") in log
    assert ("operator", "lca.import_avatar") in log and ("operator", "lca.export_posed_ply") in log
    assert ("label", "Select an avatar to adjust its preview") in log
    assert not ext.sidebar.LCA_PT_expressions.poll(context)
    assert not ext.sidebar.LCA_PT_hands.poll(context)
    _draw(ext.sidebar.LCA_PT_expressions, context)  # drawn anyway (selection changed): no crash


def test_avatar_panel_shows_the_build_progress_and_cancel(ext, clean_scene) -> None:
    state = clean_scene.lca
    state.build_running, state.build_progress, state.build_stage = True, 0.4, "fit_body (2 min left)"
    state.build_message = "Fitting the body"
    try:
        log = _draw(ext.sidebar.LCA_PT_avatar, SimpleNamespace(scene=clean_scene, active_object=None))
    finally:
        state.build_running, state.build_progress, state.build_stage, state.build_message = False, 0, "", ""
    assert ("progress", pytest.approx(0.4), "fit_body (2 min left)") in log
    assert ("operator", "lca.cancel_build") in log


def test_panels_draw_an_avatar(ext, face_avatar) -> None:
    context = SimpleNamespace(scene=bpy.context.scene, active_object=face_avatar.body)
    log = _draw(ext.sidebar.LCA_PT_avatar, context)
    assert [entry[1] for entry in log if entry[0] == "prop"] == [
        "Preview face",
        "look",
        "splat_scale",
        "opacity",
    ]
    assert ("operator", "lca.toggle_cage") in log

    assert ext.sidebar.LCA_PT_expressions.poll(context)
    log = _draw(ext.sidebar.LCA_PT_expressions, context)
    labels = [entry[1] for entry in log if entry[0] == "label"]
    assert labels == ["Brows", "Eyes", "Jaw", "Mouth", "Cheeks", "Nose", "Tongue", "Other"]
    assert [entry[1] for entry in log if entry[0] == "prop"] == face_avatar.names

    assert ext.sidebar.LCA_PT_hands.poll(context)
    log = _draw(ext.sidebar.LCA_PT_hands, context)
    assert log.count(("operator", "lca.hand_pose")) == 8


def test_preferences(ext) -> None:
    preferences = ext.engine.preferences()
    assert preferences.device == "AUTO" and preferences.quality == "STANDARD"
    assert ext.engine.build_options() == ["--device", "auto", "--quality", "standard"]
    preferences.device, preferences.quality = "CUDA", "HIGH"
    try:
        assert ext.engine.build_options() == ["--device", "cuda", "--quality", "high"]
    finally:
        preferences.device, preferences.quality = "AUTO", "STANDARD"
    log = _draw(type(preferences), bpy.context, preferences)
    assert ("operator", "lca.install_engine") in log
    assert ("prop", "device") in log and ("prop", "quality") in log


# ---------------------------------------------------------------- disable


def test_disabling_mid_build_stops_the_engine_and_leaves_nothing(
    installed_extension: InstalledExtension, fake_engine, tmp_path: Path
) -> None:
    root = installed_extension.enable()
    try:
        build_module = importlib.import_module(f"{root.__name__}.operators.build")
        engine_module = importlib.import_module(f"{root.__name__}.operators.engine")
        process = importlib.import_module(f"{root.__name__}.lca_blender.addon.engine_process")
        photos = _photos(tmp_path / "hal", steps=100, delay=1.0, template="unused")
        output = tmp_path / "avatars" / "hal.lca"
        build = process.AvatarBuild(fake_engine, [photos], output, [], None)
        controller = build_module.BuildController(bpy.context.scene, build).start()
        _step_until(controller, lambda: build.job.last_event is not None)
    finally:
        installed_extension.disable()
    assert process_is_gone(build.job.pid)
    assert list(output.parent.iterdir()) == []
    assert engine_module.running_controller() is None
    assert not hasattr(bpy.types, "LCA_OT_build_avatar") and not hasattr(bpy.types, "LCA_PT_avatar")
