"""The build's stage cache and device choice, with every stage's work replaced by a stand-in.

The stand-ins return small fixed results and count their calls, so these tests see only what the
pipeline itself does: which stages it computes, which it takes from the cache, what it does with a
damaged cache, and which errors it lets through.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))  # the shared rig builders
from rig_builders import make_tube_rig  # noqa: E402

from lca_blender.avatar import Pose  # noqa: E402
from lca_blender.errors import AvatarError  # noqa: E402
from lca_blender.formats.lca import read_avatar  # noqa: E402
from lca_blender.maths.cameras import Camera, look_at  # noqa: E402
from lca_blender.reconstruct import pipeline  # noqa: E402
from lca_blender.reconstruct.ingest import IngestResult, Photo  # noqa: E402
from lca_blender.reconstruct.perceive import PerceiveResult, Perception  # noqa: E402
from lca_blender.reconstruct.sample import sample_avatar  # noqa: E402
from lca_blender.reconstruct.views import BodyFit, View  # noqa: E402

SOURCES = ("front.png", "side.png")


@dataclasses.dataclass(frozen=True)
class TubeBody:
    """Stands in for `BodyChoice`: the small test rig, rebuilt from its parameters."""

    def cache_settings(self) -> dict[str, Any]:
        return {"body": "test-tube"}

    def rig(self, body_parameters: dict[str, Any]):
        return make_tube_rig(radius=body_parameters["radius"])


def _ingest(files, **_) -> IngestResult:
    rng = np.random.default_rng(0)
    photos = [Photo(source, rng.random((12, 10, 3)).astype(np.float32), None, (10, 12)) for source in SOURCES]
    return IngestResult(photos=photos, skipped={"notes.txt": "not an image"})


def _perceive(photos, **_) -> PerceiveResult:
    rng = np.random.default_rng(1)
    perceptions = [
        Perception(
            photo.source,
            rng.random((33, 4)).astype(np.float32),
            rng.random((21, 3)).astype(np.float32),
            None,
            None,
            rng.random((12, 10)).astype(np.float32),
        )
        for photo in photos
    ]
    return PerceiveResult(perceptions=perceptions, skipped={"wall.png": "no person found"})


def _fit_body(perceptions, photos, **_) -> BodyFit:
    rig = make_tube_rig()
    pose = Pose.rest(rig.joint_count)
    pose.translation[:] = (0.1234567, -0.2, 0.05)  # more decimals than the cache keeps
    intrinsics = np.array([[20.0, 0, 5], [0, 20.0, 6], [0, 0, 1]])
    views = []
    for index, (photo, seen) in enumerate(zip(photos, perceptions, strict=True)):
        position = np.array([3.0 * index - 1.5, -3.0, 0.5])
        camera = Camera(photo.source, position, look_at(position, np.zeros(3)), intrinsics, 10, 12)
        views.append(View(photo.source, photo.pixels, seen.mask, camera))
    expressions = np.array([0.25, 0.0], np.float32)
    return BodyFit(rig=rig, pose=pose, expressions=expressions, views=views, report={"iou": 0.9})


def _fit_gaussians(body, settings, **_):
    return sample_avatar(body.rig, 200, sh_degree=1, seed=3)


STAND_INS = {
    "ingest": ("ingest", _ingest),
    "perceive": ("perceive", _perceive),
    "cameras": ("_cameras", lambda photos, perceptions, progress: None),  # no SfM: a valid result
    "fit_body": ("fit_body", _fit_body),
    "fit_gaussians": ("fit_gaussians", _fit_gaussians),
}


@pytest.fixture
def calls(monkeypatch) -> collections.Counter:
    """How many times each stage's work ran (the stand-ins count themselves)."""
    counter: collections.Counter = collections.Counter()
    for stage, (attribute, function) in STAND_INS.items():

        def counted(*args, _stage=stage, _function=function, **kwargs):
            counter[_stage] += 1
            return _function(*args, **kwargs)

        monkeypatch.setattr(pipeline, attribute, counted)
    return counter


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for source in SOURCES:
        (folder / source).write_bytes(source.encode())  # the stand-in ingest never reads them
    return folder


def _build(photos: Path, tmp_path: Path, name: str = "avatar.lca") -> pipeline.BuildReport:
    options = {"quality": "preview", "device": "cpu", "cache": tmp_path / "cache", "body_model": TubeBody()}
    return pipeline.build_avatar([photos], tmp_path / name, **options)


def _stage_folder(report: pipeline.BuildReport, stage: str) -> Path:
    return report.cache / stage


def _same_avatar(first: Path, second: Path) -> None:
    a, b = read_avatar(first), read_avatar(second)
    for field in dataclasses.fields(a):
        if isinstance(getattr(a, field.name), np.ndarray):
            np.testing.assert_array_equal(getattr(a, field.name), getattr(b, field.name), err_msg=field.name)
    np.testing.assert_array_equal(a.rig.vertices, b.rig.vertices)
    assert a.provenance == b.provenance


def test_every_stage_is_cached_and_taken_back_whole(photos, tmp_path, calls):
    first = _build(photos, tmp_path, "first.lca")
    assert dict(calls) == dict.fromkeys(pipeline.STAGES, 1)
    assert not any(stage["cached"] for stage in first.stages.values())
    assert first.skipped == {"notes.txt": "not an image", "wall.png": "no person found"}
    assert first.body == {"iou": 0.9}

    second = _build(photos, tmp_path, "second.lca")
    assert dict(calls) == dict.fromkeys(pipeline.STAGES, 1)  # nothing ran again
    assert all(stage["cached"] for stage in second.stages.values())
    assert second.skipped == first.skipped and second.body == first.body
    _same_avatar(tmp_path / "first.lca", tmp_path / "second.lca")

    # What the cache gives back is what the stages returned.
    stages = pipeline.StageCache(second.cache)
    ingested = pipeline._load_ingest(*stages.load("ingest"))
    expected = _ingest(None)
    for got, want in zip(ingested.photos, expected.photos, strict=True):
        assert (got.source, got.original_size, got.alpha) == (want.source, want.original_size, None)
        np.testing.assert_array_equal(got.pixels, want.pixels)
    body = pipeline._load_body(
        stages.load("fit_body")[0], ingested.photos, _perceive(ingested.photos).perceptions, TubeBody()
    )
    fitted = _fit_body(_perceive(ingested.photos).perceptions, ingested.photos)
    np.testing.assert_allclose(body.pose.translation, fitted.pose.translation, atol=1e-6)  # 6 decimals
    np.testing.assert_array_equal(body.expressions, fitted.expressions)
    for got, want in zip(body.views, fitted.views, strict=True):
        np.testing.assert_allclose(got.camera.viewmat, want.camera.viewmat, rtol=0, atol=1e-15)
        np.testing.assert_allclose(got.camera.position, want.camera.position, rtol=0, atol=1e-14)


def test_a_resumed_build_fits_the_gaussians_to_the_same_body_as_one_that_ran_through(
    photos, tmp_path, monkeypatch
):
    """The next stage starts from a finished stage as the cache holds it, not as it was computed:
    else a build resumed after its body fit (which reads the body back from the cache, the pose
    kept to 6 decimals) fits its Gaussians to a slightly different body than one that ran through,
    and makes a different avatar from the same photos."""
    bodies = []

    def recording(body, settings, **_):
        bodies.append(body)
        return _fit_gaussians(body, settings)

    for stage, (attribute, function) in STAND_INS.items():
        monkeypatch.setattr(pipeline, attribute, recording if stage == "fit_gaussians" else function)
    through = _build(photos, tmp_path, "through.lca")
    shutil.rmtree(_stage_folder(through, "fit_gaussians"))  # stopped after the body fit, then resumed
    resumed = _build(photos, tmp_path, "resumed.lca")
    assert resumed.stages["fit_body"]["cached"] and not resumed.stages["fit_gaussians"]["cached"]
    ran_through, resumed_body = bodies
    np.testing.assert_array_equal(ran_through.pose.translation, resumed_body.pose.translation)
    np.testing.assert_array_equal(ran_through.pose.rotations, resumed_body.pose.rotations)
    np.testing.assert_array_equal(ran_through.expressions, resumed_body.expressions)
    for a, b in zip(ran_through.views, resumed_body.views, strict=True):
        np.testing.assert_array_equal(a.camera.viewmat, b.camera.viewmat)
        np.testing.assert_array_equal(a.camera.position, b.camera.position)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.pixels, b.pixels)


def test_loading_sfm_keeps_the_engines_signal_handlers():
    """COLMAP's glog puts its own SIGTERM handler in place as it loads: the engine loads it under
    its own, which stay (else the add-on's Cancel would print a stack and kill the build)."""
    script = textwrap.dedent(
        """
        import signal, sys
        from lca_blender.reconstruct import pipeline
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        pipeline.load_signal_taking_libraries()
        print("pycolmap" in sys.modules, signal.getsignal(signal.SIGTERM) is signal.default_int_handler)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded, kept = result.stdout.split()
    assert kept == "True"
    assert loaded == str(importlib.util.find_spec("pycolmap") is not None)


def test_the_engine_loads_sfm_before_it_takes_the_signals_for_a_build():
    """So that a Cancel in the cameras stage meets the engine's handler, never glog's."""
    script = textwrap.dedent(
        """
        import signal, sys
        from lca_blender import cli
        sys.argv = ["lca-avatar", "--progress", "jsonl", "build", "photos", "-o", "a.lca"]
        def main():
            print("pycolmap" in sys.modules, signal.getsignal(signal.SIGTERM) is signal.default_int_handler)
            return 0
        cli.main = main
        cli.run()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(importlib.util.find_spec("pycolmap") is not None), "True"]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(max(64, path.stat().st_size)))


def _same_size_change(path: Path) -> None:
    # One byte flipped near the end: every reader would still parse it, only a checksum sees it.
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {"truncated": _truncate, "garbage": _garbage, "one byte": _same_size_change, "deleted": Path.unlink}
DAMAGED_FILES = [
    ("ingest", "pixels_0001.npy"),
    ("ingest", "meta.json"),
    ("perceive", "mask_0000.npy"),
    ("cameras", "meta.json"),
    ("fit_body", "meta.json"),
    ("fit_gaussians", "avatar.lca"),
]


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize(("stage", "file_name"), DAMAGED_FILES)
def test_a_damaged_stage_is_redone_and_the_others_are_kept(
    photos, tmp_path, calls, caplog, stage, file_name, damage
):
    first = _build(photos, tmp_path, "first.lca")
    target = _stage_folder(first, stage) / file_name
    assert target.is_file(), sorted(path.name for path in target.parent.iterdir())
    DAMAGE[damage](target)

    with caplog.at_level(logging.WARNING, logger=pipeline.logger.name):
        second = _build(photos, tmp_path, "second.lca")
    assert calls[stage] == 2, f"the damaged {stage} stage was not redone"
    assert all(calls[other] == 1 for other in pipeline.STAGES if other != stage)
    assert [name for name, report in second.stages.items() if not report["cached"]] == [stage]
    assert any(stage in record.getMessage() for record in caplog.records), "no warning said so"
    _same_avatar(tmp_path / "first.lca", tmp_path / "second.lca")

    # The redone stage replaced the damaged one: a third build takes everything from the cache.
    third = _build(photos, tmp_path, "third.lca")
    assert all(report["cached"] for report in third.stages.values())
    assert calls[stage] == 2


def test_a_bug_in_a_stage_loader_is_not_taken_for_a_damaged_cache(photos, tmp_path, calls, monkeypatch):
    _build(photos, tmp_path)

    def broken_loader(meta, arrays):
        raise TypeError("a bug in the loader")

    # The cached files are intact, so the loader's error is the code's: it must surface, not be
    # hidden by quietly redoing the stage on every build.
    monkeypatch.setattr(pipeline, "_load_perceive", broken_loader)
    with pytest.raises(TypeError, match="a bug in the loader"):
        _build(photos, tmp_path, "again.lca")
    assert calls["perceive"] == 1


def test_without_a_cache_every_stage_runs_each_time(photos, tmp_path, calls):
    for name in ("first.lca", "second.lca"):
        pipeline.build_avatar(
            [photos], tmp_path / name, quality="preview", device="cpu", cache=None, body_model=TubeBody()
        )
    assert dict(calls) == dict.fromkeys(pipeline.STAGES, 2)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("stop_after", pipeline.STAGES[:-1])
def test_stop_after_runs_and_caches_the_stages_up_to_it(photos, tmp_path, calls, stop_after):
    report = pipeline.build_avatar(
        [photos], tmp_path / "a.lca", quality="preview", device="cpu", cache=tmp_path / "cache",
        body_model=TubeBody(), stop_after=stop_after,
    )  # fmt: skip
    done = pipeline.STAGES[: pipeline.STAGES.index(stop_after) + 1]
    assert list(report.stages) == list(done)
    assert dict(calls) == dict.fromkeys(done, 1)
    assert sorted(path.name for path in report.cache.iterdir()) == sorted(done)
    assert not (tmp_path / "a.lca").exists()


@pytest.mark.parametrize(
    "stop_after",
    ["ingest", "perceive", "cameras", "fit_body"],
)
def test_stop_after_still_reports_the_skipped_photos_and_the_body(photos, tmp_path, calls, stop_after):
    # `lca-avatar build --stop-after perceive` is the quick check of which photos are usable: its
    # report must name them, and `--stop-after fit_body` must report the body fit.
    report = pipeline.build_avatar(
        [photos], tmp_path / "a.lca", quality="preview", device="cpu", cache=tmp_path / "cache",
        body_model=TubeBody(), stop_after=stop_after,
    )  # fmt: skip
    done = pipeline.STAGES[: pipeline.STAGES.index(stop_after) + 1]
    expected = {"notes.txt": "not an image"} | ({"wall.png": "no person found"} if "perceive" in done else {})
    assert report.skipped == expected
    assert report.body == ({"iou": 0.9} if "fit_body" in done else {})


# Devices -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cuda", [False, True], ids=["no-gpu", "gpu"])
def test_resolve_device(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert pipeline.resolve_device("auto") == ("cuda" if cuda else "cpu")
    assert pipeline.resolve_device("cpu") == "cpu"  # asked for, even with a GPU there
    if cuda:
        assert pipeline.resolve_device("cuda") == "cuda"
    else:
        with pytest.raises(AvatarError, match="no CUDA GPU") as raised:
            pipeline.resolve_device("cuda")
        assert "--device cpu" in str(raised.value)  # says what to do instead


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:0", "", "mps"])
def test_unknown_devices_are_refused_with_the_choices(name):
    with pytest.raises(AvatarError, match=f"Unknown device '{name}'") as raised:
        pipeline.resolve_device(name)
    assert "auto, cpu or cuda" in str(raised.value)


def test_cuda_asked_for_without_a_gpu_fails_before_any_work(photos, tmp_path, calls, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AvatarError, match="--device cpu"):
        pipeline.build_avatar([photos], tmp_path / "a.lca", device="cuda", cache=tmp_path / "cache")
    assert not calls and not (tmp_path / "cache").exists()


def test_matte_is_asked_for_by_the_build_and_its_colours_reach_the_fits(photos, tmp_path, monkeypatch):
    asked, fitted = [], {}

    def perceive_with_foreground(photos, matte=None, **_):
        asked.append(matte)
        result = _perceive(photos)
        if matte is not None:
            colours = np.full((12, 10, 3), 0.25, np.float32)
            found = result.perceptions
            result.perceptions[:] = [dataclasses.replace(seen, foreground=colours) for seen in found]
        return result

    def fit_body_recording(perceptions, photos, **kwargs):
        fitted.update({photo.source: photo.pixels for photo in photos})
        return _fit_body(perceptions, photos, **kwargs)

    monkeypatch.setattr(pipeline, "perceive", perceive_with_foreground)
    monkeypatch.setattr(pipeline, "fit_body", fit_body_recording)
    monkeypatch.setattr(pipeline, "fit_gaussians", _fit_gaussians)
    monkeypatch.setattr(pipeline, "_cameras", lambda photos, perceptions, progress: None)
    monkeypatch.setattr(pipeline, "ingest", _ingest)
    options = {"quality": "preview", "device": "cpu", "cache": tmp_path / "cache", "body_model": TubeBody()}

    plain = pipeline.build_avatar([photos], tmp_path / "plain.lca", **options)
    assert asked == [None] and all(not np.all(pixels == 0.25) for pixels in fitted.values())
    matted = pipeline.build_avatar([photos], tmp_path / "matted.lca", matte=True, **options)
    assert asked[1] is pipeline.DEFAULT_MATTE
    assert all(np.all(pixels == 0.25) for pixels in fitted.values())  # the backdrop-free colours
    assert plain.cache != matted.cache  # the setting is part of the cache key
    # A cached matted perceive stage keeps its colours: the resumed build fits them again.
    fitted.clear()
    pipeline.build_avatar([photos], tmp_path / "again.lca", matte=True, **options)
    assert len(asked) == 2 and all(np.all(pixels == 0.25) for pixels in fitted.values())
