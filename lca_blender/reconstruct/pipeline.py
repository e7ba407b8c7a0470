"""The build: photos -> ingest -> perceive -> cameras -> fit_body -> fit_gaussians -> .lca.

Each stage's result is cached on disk (JSON + .npy, never pickle) under a folder named by a hash of
the inputs' bytes and the build's settings, so a cancelled or crashed build started again with the
same inputs skips the stages it finished. A stage's folder appears whole or not at all (it is
written beside its final name and renamed into place), and the avatar itself is written
atomically: a cancelled build leaves no partial `.lca`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..avatar import GaussianAvatar, Pose
from ..errors import AvatarError
from ..formats.lca import read_avatar, write_avatar
from ..maths.cameras import Camera
from ..maths.tone import tone_curve
from ..paths import cache_dir
from ..progress import Progress
from .fit_body import BodyChoice, BodyFitSettings, fit_body
from .fit_gaussians import fit_gaussians
from .ingest import IngestResult, Photo, collect_inputs, ingest
from .outer_layer import fit_outer_layer
from .perceive import DEFAULT_MATTE, PerceiveResult, Perception, matted_photos, perceive
from .views import BodyFit, Preset, View, capture_from_json, capture_to_json, preset

logger = logging.getLogger(__name__)

# Bump when a stage's cached result changes meaning (2: body, 3: checksums, 4: matte, 5: outer layer,
# 6: photos that disagree with the others left out of the hull and of the Gaussians' fit,
# 7: person masks completed from the backdrop, the outer layer snapped onto the photos' outlines,
# 8: the mouth's own mesh left out of the fit, 9: and the head's skin that no direction sees,
# 10: the Gaussians fitted antialiased, 11: the body's outline matched to its contour edges,
# 12: the body's joints turned only about the axes a person's can, 13: the floor's shadow taken out
# of the person masks). Each photo's own pose (`photo_poses`, off by default) is in the key only
# when asked for.
PIPELINE_VERSION = 13
STAGES = ("ingest", "perceive", "cameras", "fit_body", "fit_gaussians")


@dataclass
class BuildReport:
    """What a build did: per stage, whether it came from the cache and how long it took."""

    output: Path
    cache: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # photo -> why it was not used
    body: dict[str, Any] = field(default_factory=dict)
    gaussians: int = 0


class StageCache:
    """Finished stages of one build, each a folder of `meta.json`, `.npy` arrays and other files.

    `meta.json` records the sha256 of every file beside it, so a stage damaged on disk (truncated,
    overwritten, a file missing) is recognised before anything reads it and is redone. What passes
    that check is exactly what this pipeline version wrote, so an error while turning it back into
    a stage's result is a bug and propagates.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def load(self, stage: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """The stage's meta and arrays, or None when it is not cached or is damaged (then logged)."""
        folder = self.folder(stage)
        if folder is None or not folder.exists():
            return None
        try:
            record = json.loads((folder / "meta.json").read_text())
            damaged = [name for name, digest in record["files"].items() if _sha256(folder / name) != digest]
            if damaged:
                raise ValueError(f"{', '.join(damaged)} changed since it was written")
            arrays = {
                Path(name).stem: np.load(folder / name, allow_pickle=False)
                for name in sorted(record["files"])
                if name.endswith(".npy")
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            # Unreadable JSON, a missing file, a checksum or record that does not hold up: damaged.
            logger.warning("Ignoring the damaged cached %s stage (%s); redoing it.", stage, error)
            return None
        return record["meta"], arrays

    def folder(self, stage: str) -> Path | None:
        return None if self.root is None else self.root / stage

    def save(
        self,
        stage: str,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray],
        avatars: dict[str, GaussianAvatar] | None = None,
    ) -> None:
        """Write a stage: everything lands in a temporary folder renamed into place at the end."""
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{stage}.", dir=self.root))
        try:
            for name, array in arrays.items():
                np.save(temporary / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
            for name, avatar in (avatars or {}).items():
                write_avatar(temporary / name, avatar)
            written = {path.name: _sha256(path) for path in sorted(temporary.iterdir())}
            (temporary / "meta.json").write_text(json.dumps({"meta": meta, "files": written}))
            final = self.root / stage
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_settings(
    settings: Preset,
    seed: int,
    body_model: BodyChoice,
    matte: bool = False,
    outer_layer: bool = True,
    tone: str = "standard",
    photo_poses: bool = False,
) -> dict[str, Any]:
    """The settings that shape a build's result, for `build_key`."""
    return {
        "preset": dataclasses.asdict(settings),
        "seed": seed,
        "matte": matte,
        "outer_layer": outer_layer,
        "tone_curve": tone,
        **body_model.cache_settings(),
        **({"photo_poses": True} if photo_poses else {}),
    }


def build_key(files: Sequence[Path], settings: dict[str, Any]) -> str:
    """A hash of the inputs' names and bytes and of the settings that shape the result."""
    digest = hashlib.sha256(json.dumps({"version": PIPELINE_VERSION, **settings}, sort_keys=True).encode())
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def resolve_device(device: str) -> str:
    """ "cpu" or "cuda" for a `--device` of auto, cpu or cuda (auto: CUDA when torch sees a GPU)."""
    if device not in ("auto", "cpu", "cuda"):
        raise AvatarError(f"Unknown device '{device}'. Use auto, cpu or cuda.")
    if device == "cuda" and not torch.cuda.is_available():
        raise AvatarError("--device cuda was asked for, but torch sees no CUDA GPU here. Use --device cpu.")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


STAGE_SHARES = {
    "ingest": 0.02, "perceive": 0.04, "cameras": 0.02, "fit_body": 0.40, "fit_gaussians": 0.51, "write": 0.01,
}  # fmt: skip
"""Each stage's share of a whole build's time (12 photos, standard preset, CPU), for whole-build
progress; the ETA then follows the machine's actual pace."""


def build_avatar(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    quality: str = "standard",
    device: str = "auto",
    cache: str | os.PathLike | None = "auto",
    progress: Progress | None = None,
    seed: int = 0,
    stop_after: str | None = None,
    body_model: BodyChoice | None = None,
    matte: bool = False,
    outer_layer: bool = True,
    tone: str = "standard",
    photo_poses: bool = False,
) -> BuildReport:
    """Build an avatar from photos or a video; see the module docstring for the stages.

    `stop_after` names a stage after which to stop (its results cached, no avatar written).
    `body_model` is the body to fit (`fit_body.body_choice`; default Anny); it is part of the
    cache key, so builds on different body models never share a stage. `matte` refines each
    person's matte at its edges and fits the colours without the backdrop (`matte.py`): for green
    screens and busy backdrops; off by default until it is measured on the example subject.
    `outer_layer` fits the surface beyond the skin (skirts, coats, hair; `outer_layer.py`) before
    the Gaussians; without it every Gaussian rides within a few centimetres of the skin. `tone`
    names the photos' tone curve (`maths/tone.py`: "standard" sRGB, or "agx", Blender's default
    view transform), so the albedo is estimated in scene-linear light. `photo_poses` gives each
    photo its own turn of head, neck and arms where its landmarks show the person moved
    (`fit_body/photo_heads.py`, `photo_arms.py`).
    """
    tone_curve(tone)  # an unknown name fails here, before any work
    progress = progress or Progress()
    progress.plan(STAGE_SHARES)
    settings = preset(quality)
    chosen_device = resolve_device(device)
    files = collect_inputs(inputs)
    body_model = body_model or BodyChoice()
    key = build_key(files, build_settings(settings, seed, body_model, matte, outer_layer, tone, photo_poses))
    root = None if cache is None else (cache_dir() / "builds" if cache == "auto" else Path(cache)) / key
    stages = StageCache(root)
    report = BuildReport(output=Path(output), cache=root or Path())
    logger.info("Build cache: %s", root)

    try:
        run = _StageRunner(report, stages, progress, stop_after)
        avatar = _run_stages(
            run, files, settings, body_model, chosen_device, seed, matte, outer_layer, tone, photo_poses
        )
    except _StoppedAfter:
        return report
    progress.stage("write", f"Writing {Path(output).name}")
    write_avatar(output, avatar)
    report.gaussians = avatar.gaussian_count
    progress.done(f"Wrote {output}")
    return report


def _run_stages(
    run: _StageRunner,
    files: Sequence[Path],
    settings: Preset,
    body_model: BodyChoice,
    device: str,
    seed: int,
    matte: bool,
    outer_layer: bool,
    tone: str,
    photo_poses: bool = False,
) -> GaussianAvatar:
    """The five stages in order, each from the cache when it holds it; the fitted avatar."""
    photos = run(
        "ingest",
        "Reading the photos",
        lambda: ingest(files, max_side=settings.max_side, progress=run.progress),
        save=_save_ingest,
        load=_load_ingest,
    )
    run.report.skipped.update(photos.skipped)
    seen = run(
        "perceive",
        "Finding the person in each photo",
        lambda: perceive(photos.photos, progress=run.progress, matte=DEFAULT_MATTE if matte else None),
        save=_save_perceive,
        load=_load_perceive,
    )
    run.report.skipped.update(seen.skipped)
    matted = matted_photos(photos.photos, seen.perceptions)  # what the fits compare against
    sfm = run(
        "cameras",
        "Relating the photos' cameras",
        lambda: _cameras(photos.photos, seen.perceptions, run.progress),
        save=_save_cameras,
        load=_load_cameras,
    )
    body = run(
        "fit_body",
        "Fitting the body, hands and face",
        lambda: fit_body(
            seen.perceptions,
            steps=settings.body_steps,
            sfm=sfm,
            progress=run.progress,
            photos=matted,
            seed=seed,
            body=body_model,
            settings=BodyFitSettings(photo_heads=photo_poses, photo_arms=photo_poses),
        ),
        save=_save_body,
        load=lambda meta, arrays: _load_body(meta, matted, seen.perceptions, body_model, arrays),
    )
    run.report.body = dict(body.report)
    return run(
        "fit_gaussians",
        "Fitting the Gaussians to the photos",
        lambda: fit_gaussians(
            fit_outer_layer(body) if outer_layer else body,
            settings,
            device=device,
            progress=run.progress,
            seed=seed,
            tone=tone_curve(tone),
        ),
        save=lambda avatar: ({"gaussians": avatar.gaussian_count}, {}, {"avatar.lca": avatar}),
        load=lambda meta, _: read_avatar(run.stages.folder("fit_gaussians") / "avatar.lca"),
    )


class _StoppedAfter(Exception):
    """The stage `stop_after` named has finished: the build stops there."""


@dataclass(frozen=True)
class _StageRunner:
    """Runs one stage, or takes its result from the cache, and reports which and how long."""

    report: BuildReport
    stages: StageCache
    progress: Progress
    stop_after: str | None = None

    def __call__(self, name: str, message: str, compute, save, load):
        # The stop comes at the next stage, so the caller has recorded the last one's results.
        if self.stop_after in self.report.stages:
            raise _StoppedAfter(self.stop_after)
        started = time.monotonic()
        self.progress.stage(name, message)
        cached = self.stages.load(name)
        if cached is not None:
            result = load(*cached)
            self.report.stages[name] = {"cached": True, "seconds": round(time.monotonic() - started, 2)}
            self.progress.done(f"{name}: taken from the previous run")
        else:
            result = compute()
            self.stages.save(name, *save(result))
            # Go on from the stage as the cache now holds it, which is what a resumed build reads
            # (the capture pose, for one, is kept to 6 decimals): so a build stopped and resumed
            # anywhere makes the same avatar as one that ran through. Without a cache (--no-cache)
            # the next stage takes the result as computed, and may differ in the last digits.
            saved = self.stages.load(name)
            if saved is not None:
                result = load(*saved)
            self.report.stages[name] = {"cached": False, "seconds": round(time.monotonic() - started, 2)}
            self.progress.done(f"{name}: done")
        return result


# -- the stages' own work ---------------------------------------------------------------------


def _cameras(photos: Sequence[Photo], perceptions: Sequence[Perception], progress):
    """Structure-from-motion on the person, or None when the photos do not tie together."""
    try:
        from .cameras import structure_from_motion
    except ImportError as error:
        logger.warning("Structure-from-motion is unavailable (%s); using body-relative cameras.", error)
        return None
    by_source = {photo.source: photo for photo in photos}
    used = [by_source[seen.source] for seen in perceptions]
    if len(used) < 3:
        return None
    masks = {seen.source: seen.mask for seen in perceptions}
    load_signal_taking_libraries()
    with tempfile.TemporaryDirectory(prefix="lca-sfm-") as workdir:
        return structure_from_motion(used, masks, Path(workdir), progress=progress)


def load_signal_taking_libraries() -> None:
    """Load COLMAP (SfM), whose glog puts crash handlers in place for SIGTERM and others as it
    loads, keeping Python's handlers. A SIGTERM that comes while it loads still meets glog's (a
    stack printed, the process killed): the engine calls this as it starts a build, before it takes
    the signals, where a kill stops it before it has written anything (the torture script's kills
    found the window when it lay in the cameras stage)."""
    with _own_signal_handlers():
        try:
            import pycolmap  # noqa: F401
        except ImportError:
            pass


@contextlib.contextmanager
def _own_signal_handlers():
    """Keep Python's SIGTERM/SIGINT handlers: COLMAP's glog installs crash handlers on load, which
    would turn a cancel (SIGTERM from the add-on) into a stack trace instead of a clean stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in saved.items():
            if handler is not None:
                signal.signal(number, handler)


# -- what each stage keeps on disk ------------------------------------------------------------


def _save_ingest(result: IngestResult):
    meta = {
        "photos": [{"source": p.source, "original_size": list(p.original_size)} for p in result.photos],
        "skipped": result.skipped,
    }
    arrays = {f"pixels_{i:04d}": p.pixels for i, p in enumerate(result.photos)}
    arrays |= {f"alpha_{i:04d}": p.alpha for i, p in enumerate(result.photos) if p.alpha is not None}
    return meta, arrays


def _load_ingest(meta, arrays) -> IngestResult:
    photos = [
        Photo(
            source=item["source"],
            pixels=arrays[f"pixels_{i:04d}"],
            alpha=arrays.get(f"alpha_{i:04d}"),
            original_size=tuple(item["original_size"]),
        )
        for i, item in enumerate(meta["photos"])
    ]
    return IngestResult(photos=photos, skipped=dict(meta["skipped"]))


def _save_perceive(result: PerceiveResult):
    meta = {"perceptions": [p.source for p in result.perceptions], "skipped": result.skipped}
    arrays = {}
    for i, seen in enumerate(result.perceptions):
        arrays[f"pose_{i:04d}"] = seen.pose
        arrays[f"mask_{i:04d}"] = seen.mask
        for name in ("left_hand", "right_hand", "face", "foreground"):
            if getattr(seen, name) is not None:
                arrays[f"{name}_{i:04d}"] = getattr(seen, name)
    return meta, arrays


def _load_perceive(meta, arrays) -> PerceiveResult:
    perceptions = [
        Perception(
            source=source,
            pose=arrays[f"pose_{i:04d}"],
            left_hand=arrays.get(f"left_hand_{i:04d}"),
            right_hand=arrays.get(f"right_hand_{i:04d}"),
            face=arrays.get(f"face_{i:04d}"),
            mask=arrays[f"mask_{i:04d}"],
            foreground=arrays.get(f"foreground_{i:04d}"),
        )
        for i, source in enumerate(meta["perceptions"])
    ]
    return PerceiveResult(perceptions=perceptions, skipped=dict(meta["skipped"]))


def _save_cameras(sfm):
    if sfm is None:
        return {"sfm": None}, {}
    meta = {
        "sfm": {
            "photo_count": sfm.photo_count,
            "reprojection_error_px": sfm.reprojection_error_px,
            "cameras": [_camera_json(camera) | {"source": source} for source, camera in sfm.cameras.items()],
        }
    }
    return meta, {"points": sfm.points, "point_colors": sfm.point_colors}


def _load_cameras(meta, arrays):
    if meta["sfm"] is None:
        return None
    from .cameras import SfmCameras

    data = meta["sfm"]
    return SfmCameras(
        cameras={item["source"]: _camera_from_json(item) for item in data["cameras"]},
        points=arrays["points"],
        point_colors=arrays["point_colors"],
        photo_count=int(data["photo_count"]),
        reprojection_error_px=float(data["reprojection_error_px"]),
    )


def _camera_json(camera: Camera) -> dict[str, Any]:
    return {
        "name": camera.name,
        "viewmat": np.asarray(camera.viewmat).tolist(),
        "intrinsics": np.asarray(camera.intrinsics).tolist(),
        "width": int(camera.width),
        "height": int(camera.height),
    }


def _camera_from_json(item: dict[str, Any]) -> Camera:
    viewmat = np.asarray(item["viewmat"], np.float64).reshape(4, 4)
    position = -viewmat[:3, :3].T @ viewmat[:3, 3]
    intrinsics = np.asarray(item["intrinsics"], np.float64).reshape(3, 3)
    return Camera(item["name"], position, viewmat, intrinsics, int(item["width"]), int(item["height"]))


def _save_body(body: BodyFit):
    meta = {
        "body_parameters": body.rig.body_parameters,
        "capture": capture_to_json(body.pose, body.expressions, body.rig.expression_names),
        "cameras": [
            _camera_json(view.camera) | {"source": view.source, "own_pose": view.pose is not None}
            for view in body.views
        ],
        "report": body.report,
    }
    # Each photo's own pose (`View.pose`, e.g. its head's turn), the capture pose's where it has none.
    rotations = np.stack([(view.pose or body.pose).rotations for view in body.views])
    return meta, {"view_rotations": rotations}


def _load_body(
    meta,
    photos: Sequence[Photo],
    perceptions: Sequence[Perception],
    body_model: BodyChoice | None = None,
    arrays: dict[str, np.ndarray] | None = None,
) -> BodyFit:
    rig = (body_model or BodyChoice()).rig(meta["body_parameters"])
    pose, expressions = capture_from_json(meta["capture"], rig)
    pixels = {photo.source: photo.pixels for photo in photos}
    masks = {seen.source: seen.mask for seen in perceptions}
    views = []
    for index, item in enumerate(meta["cameras"]):
        camera = _camera_from_json(item)
        own = None
        if item.get("own_pose") and arrays is not None:
            rotations = arrays["view_rotations"][index].astype(np.float32)
            own = Pose(rotations=rotations, translation=pose.translation)
        views.append(View(item["source"], pixels[item["source"]], masks[item["source"]], camera, own))
    return BodyFit(rig=rig, pose=pose, expressions=expressions, views=views, report=dict(meta["report"]))
