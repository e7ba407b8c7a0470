"""The evaluation's subject folder: making a synthetic subject with Cycles, and loading any subject.

A subject folder holds the photos the build gets and the ground truth it never sees:
`photos/*.png`, `gt/<name>.png` (RGBA), `gt/texture.png`, `cameras.json` and `gt.json`. The format,
field by field, is in bench/README.md ("Subject folder format"). A synthetic subject is drawn from
a seed (`synthetic.py`); this module writes the scene Blender renders, runs Blender, and turns the
renders into the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..avatar import Pose, Rig
from ..formats.atomic import atomic_output
from ..maths.cameras import Camera
from ..maths.colour import linear_to_srgb
from ..maths.deform import expression_vector, forward_kinematics, pose_vertices
from ..maths.lights import Lighting, lighting_from_json, lighting_to_json
from ..reconstruct.views import capture_to_json
from .synthetic import SubjectSettings, SyntheticSubject, draw_subject

BACKGROUND_SRGB = (0.82, 0.82, 0.82)  # the plain light-grey wall behind the person in the photos
SPLITS = ("input", "heldout", "novel", "relit")

# Joints whose world positions score the body fit: the trunk and limbs, not toes, fingers or eyes.
MAIN_JOINTS = (
    "root", "spine05", "spine04", "spine03", "spine02", "spine01", "neck01", "head",
    "clavicle.L", "upperarm01.L", "lowerarm01.L", "wrist.L",
    "clavicle.R", "upperarm01.R", "lowerarm01.R", "wrist.R",
    "upperleg01.L", "lowerleg01.L", "foot.L", "upperleg01.R", "lowerleg01.R", "foot.R",
)  # fmt: skip


# Loading ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubjectImage:
    """One image of a subject: its camera, split and files."""

    name: str
    split: str
    camera: Camera
    photo: str  # path relative to the subject folder ("" for images the build never sees)
    gt: str  # ground-truth RGBA image, relative path


@dataclass(frozen=True)
class Subject:
    """A loaded subject folder: its images and its ground truth (gt.json)."""

    folder: Path
    images: list[SubjectImage]
    gt: dict[str, Any]
    background: tuple[float, float, float]  # sRGB

    def split(self, name: str) -> list[SubjectImage]:
        """The images of one split (`SPLITS`), in file order."""
        return [image for image in self.images if image.split == name]

    def lighting(self, split: str) -> Lighting:
        """The lighting the split's images were rendered under."""
        return lighting_from_json(self.gt["lights"][split])

    def joint_positions(self, which: str) -> dict[str, np.ndarray]:
        """Ground-truth world positions of the main joints in the "capture" or "novel" pose."""
        names = self.gt["body"]["joint_names"]
        positions = np.asarray(self.gt[which]["joint_positions"], np.float64)
        return {name: positions[names.index(name)] for name in self.gt["body"]["main_joints"]}


def camera_from_json(entry: dict[str, Any]) -> Camera:
    """The camera of one entry of cameras.json's `images`."""
    viewmat = np.asarray(entry["viewmat"], np.float64)
    position = -viewmat[:3, :3].T @ viewmat[:3, 3]
    return Camera(
        entry["name"], position, viewmat, np.asarray(entry["K"], np.float64), entry["width"], entry["height"]
    )


def load_subject(folder: Path) -> Subject:
    """The subject in `folder` (cameras.json and gt.json; images are read when scored)."""
    folder = Path(folder)
    cameras = json.loads((folder / "cameras.json").read_text(encoding="utf-8"))
    gt = json.loads((folder / "gt.json").read_text(encoding="utf-8"))
    images = [
        SubjectImage(
            entry["name"], entry["split"], camera_from_json(entry), entry.get("file", ""), entry["gt"]
        )
        for entry in cameras["images"]
    ]
    background = tuple(cameras.get("background_srgb", BACKGROUND_SRGB))
    return Subject(folder=folder, images=images, gt=gt, background=background)


def read_gt_image(subject: Subject, image: SubjectImage) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth as (sRGB over the subject's background [H, W, 3], alpha [H, W]) in [0, 1]."""
    from PIL import Image

    rgba = np.asarray(Image.open(subject.folder / image.gt).convert("RGBA"), np.float64) / 255
    alpha = rgba[..., 3]
    composite = rgba[..., :3] * alpha[..., None] + np.asarray(subject.background) * (1 - alpha[..., None])
    return composite, alpha


def joint_positions(rig: Rig, pose: Pose) -> np.ndarray:
    """[J, 3] joint (bone head) world positions of `rig` in `pose`."""
    return forward_kinematics(rig, pose).world[:, :3, 3].astype(np.float64)


def write_json(path: Path, data: Any) -> None:
    """`data` as indented JSON at `path`, atomically."""
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


# Making -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CyclesRenderer:
    """Blender's Python running the script that renders a scene folder with Cycles.

    The script (bench/eval_subject_blender.py) reads WORK/scene.json and writes, per render,
    WORK/<name>.npy ([H, W, 4] float32 linear RGB premultiplied by alpha, rows from the top) and
    WORK/timings.json (seconds per image).
    """

    python: Path  # a Python with the bpy module (.venv-blender/bin/python)
    script: Path  # the render script

    def render(self, scene: Path) -> dict[str, float]:
        """Render every image `scene` (WORK/scene.json) lists; the seconds each took."""
        work = scene.parent
        result = subprocess.run(
            [str(self.python), str(self.script), str(scene)],
            env=_blender_environment(work),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"Blender failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return json.loads((work / "timings.json").read_text())


def _blender_environment(work: Path) -> dict[str, str]:
    """Environment for Blender's Python that keeps its files inside `work`."""
    home = work / "blender-home"
    for folder in (home, home / "config", home / "cache", home / "tmp"):
        folder.mkdir(parents=True, exist_ok=True)
    return os.environ | {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "TMPDIR": str(home / "tmp"),
    }


def make_subject(
    folder: Path, settings: SubjectSettings, renderer: CyclesRenderer, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Generate the subject `settings` describes into `folder` (photos/, gt/, cameras.json,
    gt.json), rendered by `renderer`; returns gt.json's content."""
    from PIL import Image

    subject = draw_subject(settings, log)
    folder = Path(folder)
    work = folder / "render-work"
    for sub in (folder / "photos", folder / "gt", work):
        sub.mkdir(parents=True, exist_ok=True)
    scene = _write_render_scene(work, subject)
    size = f"{settings.width}x{settings.height}"
    log(f"rendering {len(subject.cameras)} images with Cycles ({size}, {settings.samples} samples per pixel)")
    started = time.perf_counter()
    timings = renderer.render(scene)
    render_seconds = time.perf_counter() - started
    _write_images(folder, work, subject.cameras)
    gt = _ground_truth(subject, render_seconds, timings)
    Image.fromarray(subject.texture).save(folder / "gt" / "texture.png", optimize=True)
    write_json(folder / "gt.json", gt)
    shutil.rmtree(work)
    return gt


def _write_render_scene(work: Path, subject: SyntheticSubject) -> Path:
    """Write what Blender renders into `work`: posed meshes, UVs, the texture and scene.json."""
    from PIL import Image

    rig = subject.rig
    Image.fromarray(subject.texture).save(work / "texture.png")
    capture_vertices = pose_vertices(rig, subject.capture)
    novel_vertices = pose_vertices(rig, subject.novel, subject.novel_expressions)
    np.save(work / "capture_vertices.npy", capture_vertices.astype(np.float32), allow_pickle=False)
    np.save(work / "novel_vertices.npy", novel_vertices.astype(np.float32), allow_pickle=False)
    np.save(work / "triangles.npy", rig.triangles, allow_pickle=False)
    np.save(work / "corner_uvs.npy", rig.uvs[rig.triangle_uvs].astype(np.float32), allow_pickle=False)
    renders = [
        {
            "name": camera.name,
            "mesh": "novel" if split == "novel" else "capture",
            "lighting": "relit" if split == "relit" else "capture",
            "width": camera.width,
            "height": camera.height,
            "K": np.asarray(camera.intrinsics).tolist(),
            "viewmat": np.asarray(camera.viewmat).tolist(),
            "output": f"{camera.name}.npy",
        }
        for split, camera in subject.cameras
    ]
    scene = {
        "seed": subject.settings.seed,
        "samples": subject.settings.samples,
        "texture": "texture.png",
        "meshes": {"capture": "capture_vertices.npy", "novel": "novel_vertices.npy"},
        "triangles": "triangles.npy",
        "corner_uvs": "corner_uvs.npy",
        "lighting": {
            "capture": lighting_to_json(subject.capture_lighting),
            "relit": lighting_to_json(subject.relit_lighting),
        },
        "renders": renders,
    }
    write_json(work / "scene.json", scene)
    return work / "scene.json"


def _straight_srgb(premultiplied: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cycles' premultiplied linear RGBA [H, W, 4] as (sRGB colour [H, W, 3], straight alpha [H, W]),
    both in [0, 1]."""
    alpha = np.clip(premultiplied[..., 3], 0, 1)
    covered = alpha[..., None] > 1e-6
    straight = np.where(covered, premultiplied[..., :3] / np.maximum(alpha[..., None], 1e-6), 0)
    return linear_to_srgb(np.clip(straight, 0.0, 1.0)), alpha


def _write_images(folder: Path, work: Path, cameras: list[tuple[str, Camera]]) -> None:
    """The renders in `work` as gt/<name>.png (RGBA), photos/<name>.png (the inputs over the
    background) and cameras.json."""
    from PIL import Image

    entries = []
    background = np.asarray(BACKGROUND_SRGB)
    for split, camera in cameras:
        premultiplied = np.load(work / f"{camera.name}.npy", allow_pickle=False).astype(np.float64)
        srgb, alpha = _straight_srgb(premultiplied)
        rgba = np.concatenate([srgb, alpha[..., None]], axis=-1)
        gt = f"gt/{camera.name}.png"
        Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), "RGBA").save(folder / gt)
        file = ""
        if split == "input":
            photo = srgb * alpha[..., None] + background * (1 - alpha[..., None])
            file = f"photos/{camera.name}.png"
            Image.fromarray((photo * 255 + 0.5).astype(np.uint8), "RGB").save(folder / file, optimize=True)
        entries.append(
            {
                "name": camera.name,
                "file": file,
                "split": split,
                "width": camera.width,
                "height": camera.height,
                "K": np.asarray(camera.intrinsics, np.float64).tolist(),
                "viewmat": np.asarray(camera.viewmat, np.float64).tolist(),
                "gt": gt,
            }
        )
    write_json(
        folder / "cameras.json", {"version": 1, "background_srgb": list(BACKGROUND_SRGB), "images": entries}
    )


def _pose_json(rig: Rig, pose: Pose, expressions: dict[str, float] | None) -> dict[str, Any]:
    """gt.json's `capture` or `novel`: pose, expressions and the joints' world positions."""
    weights = expression_vector(rig, expressions)
    return capture_to_json(pose, weights, list(rig.expression_names)) | {
        "joint_positions": joint_positions(rig, pose).round(6).tolist()
    }


def _ground_truth(
    subject: SyntheticSubject, render_seconds: float, seconds_per_image: dict[str, float]
) -> dict[str, Any]:
    """gt.json's content."""
    settings, rig = subject.settings, subject.rig
    capture_lights = lighting_to_json(subject.capture_lighting)
    return {
        "version": 1,
        "seed": settings.seed,
        "settings": {key: value for key, value in asdict(settings).items() if key != "phenotype"},
        "body": {
            "model": rig.body_model,
            "phenotype": subject.phenotype,
            "joint_names": list(rig.joint_names),
            "main_joints": list(MAIN_JOINTS),
        },
        "capture": _pose_json(rig, subject.capture, None),
        "novel": _pose_json(rig, subject.novel, subject.novel_expressions),
        "lights": {
            "input": capture_lights,
            "heldout": capture_lights,
            "novel": capture_lights,
            "relit": lighting_to_json(subject.relit_lighting),
        },
        "outfit": subject.outfit,
        "material": "diffuse (Lambertian) albedo only, from texture.png (sRGB) on the body's UVs",
        "texture": "gt/texture.png",
        "render": {"engine": "Cycles (CPU)", "samples": settings.samples, "denoised": True}
        | {"seconds_total": round(render_seconds, 2), "seconds_per_image": seconds_per_image},
    }
