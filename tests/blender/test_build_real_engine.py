"""The Build operator's controller driving the real engine (`lca-avatar build`) on the example photos.

The fake-engine tests (test_build_batch_panels.py) cover every branch quickly; this one checks that
the add-on finds the engine the README sets up, starts it with the add-on's own copy of the core,
reads its real progress stages and cancels it cleanly mid-build. A whole build takes minutes on a
CPU, so it stops once the engine is into its first long stage.
"""

from __future__ import annotations

import importlib
import os
import shutil
import time
from pathlib import Path
from types import ModuleType

import bpy
import pytest
from conftest import process_is_gone

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
PHOTOS = REPO_ROOT / "examples" / "subject" / "photos"


def test_real_engine_build_reports_its_stages_and_cancels_cleanly(
    enabled_extension: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not ENGINE_PYTHON.exists():
        pytest.skip("the engine environment (.venv) is not set up; scripts/test.sh makes it")
    name = enabled_extension.__name__
    engine = importlib.import_module(f"{name}.operators.engine")
    build_module = importlib.import_module(f"{name}.operators.build")
    process = importlib.import_module(f"{name}.lca_blender.addon.engine_process")
    monkeypatch.delenv(process.ENGINE_COMMAND_VARIABLE, raising=False)
    monkeypatch.setenv("LCA_CACHE_DIR", str(tmp_path / "cache"))  # a fresh build, not a cached one
    photos = tmp_path / "subject"
    shutil.copytree(PHOTOS, photos)

    preferences = engine.preferences()
    preferences.engine_python, preferences.quality, preferences.device = str(ENGINE_PYTHON), "PREVIEW", "CPU"
    try:
        command = engine.engine_start_command()
        options = engine.build_options()
        environment = engine.engine_env()
    finally:
        preferences.engine_python, preferences.quality, preferences.device = "", "STANDARD", "AUTO"
    assert command == [str(ENGINE_PYTHON), "-m", "lca_blender.cli"]
    assert options == ["--device", "cpu", "--quality", "preview"]
    # The engine imports the add-on's own copy of the core, not the checkout's.
    assert environment["PYTHONPATH"].split(os.pathsep)[0] == str(Path(enabled_extension.__file__).parent)

    output = tmp_path / "avatars" / "subject.lca"
    build = process.AvatarBuild(command, [photos], output, options, environment)
    scene = bpy.context.scene
    controller = build_module.BuildController(scene, build).start()
    stages: list[tuple[str, float]] = []
    deadline = time.monotonic() + 600
    try:
        while not any(stage.startswith("fit_body") for stage, _ in stages):
            assert not controller.step().finished, f"the engine stopped: {controller.message}"
            assert time.monotonic() < deadline, f"the engine did not reach fit_body; stages seen: {stages}"
            reading = (scene.lca.build_stage, scene.lca.build_progress)
            if scene.lca.build_running and (not stages or stages[-1] != reading):
                stages.append(reading)
            time.sleep(0.05)
    finally:
        if not controller.status.finished:
            assert bpy.ops.lca.cancel_build() == {"FINISHED"}

    seen = [stage.split()[0] for stage, _ in stages]
    for stage in ("ingest", "perceive", "fit_body"):
        assert any(label.startswith(stage) for label in seen), seen
    # The bar fills over the whole build (each label numbers its stage): it never falls within a stage.
    for stage in set(seen):
        fractions = [fraction for (label, fraction), name in zip(stages, seen, strict=True) if name == stage]
        assert fractions == sorted(fractions), (stage, fractions)
    assert any(0 < fraction < 1 for _, fraction in stages)
    assert controller.status is process.JobStatus.CANCELLED
    assert process_is_gone(build.job.pid)
    assert not output.exists() and list(output.parent.iterdir()) == []
    assert not scene.lca.build_running and scene.lca.build_message.endswith("cancelled")
    assert engine.running_controller() is None
