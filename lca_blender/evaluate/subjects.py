"""The evaluation's subject folder: making a synthetic subject with Cycles, and loading any subject.

A subject folder holds the photos the build gets and the ground truth it never sees:
`photos/*.png`, `gt/<name>.png` (RGBA), `gt/texture.png`, `cameras.json` and `gt.json`, and for
clothed subjects in a studio `gt/masks/` (what is seen of each garment) and `gt/display_lut.npy` (the view
transform). The format, field by field, is in bench/README.md ("Subject folder format"). A
synthetic subject is drawn from a seed (`synthetic.py`, garments in `garments.py`); this module
writes the scene Blender renders (the body and garments posed for every pose, the backdrop),
runs Blender, and turns the renders into the folder through the subject's view transform.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..avatar import Pose, Rig
from ..formats.atomic import atomic_output
from ..maths.cameras import Camera
from ..maths.deform import expression_vector, forward_kinematics, pose_vertices
from ..maths.lights import Lighting, lighting_from_json, lighting_to_json
from ..reconstruct.views import capture_to_json
from .display import DisplayTransform, display_table, lut_inputs
from .garments import pose_garment
from .synthetic import EXTRA_POSES, SubjectSettings, SyntheticSubject, draw_subject

BACKGROUND_SRGB = (0.82, 0.82, 0.82)  # the plain light-grey wall behind the person in the photos
SPLITS = ("input", "heldout", "novel", *EXTRA_POSES, "relit")
POSED_SPLITS = ("novel", *EXTRA_POSES)  # splits in a pose of their own: gt.json's entry of that name
DISPLAY_LUT = "gt/display_lut.npy"  # the view transform Blender sampled, when it is not "Standard"

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
    masks: dict[str, str] = field(default_factory=dict)  # garment -> its coverage image, relative


@dataclass(frozen=True)
class Subject:
    """A loaded subject folder: its images and its ground truth (gt.json)."""

    folder: Path
    images: list[SubjectImage]
    gt: dict[str, Any]
    background: tuple[float, float, float]  # sRGB
    display: DisplayTransform = field(default_factory=DisplayTransform)  # the truth's view transform

    def split(self, name: str) -> list[SubjectImage]:
        """The images of one split (`SPLITS`), in file order."""
        return [image for image in self.images if image.split == name]

    def lighting(self, split: str) -> Lighting:
        """The lighting the split's images were rendered under."""
        return lighting_from_json(self.gt["lights"][split])

    def joint_positions(self, which: str) -> dict[str, np.ndarray]:
        """Ground-truth world positions of the main joints in the "capture" pose or a posed split's."""
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
            entry["name"],
            entry["split"],
            camera_from_json(entry),
            entry.get("file", ""),
            entry["gt"],
            entry.get("masks", {}),
        )
        for entry in cameras["images"]
    ]
    background = tuple(cameras.get("background_srgb", BACKGROUND_SRGB))
    display = DisplayTransform()
    if "display_lut" in cameras:
        table = np.load(folder / cameras["display_lut"], allow_pickle=False).astype(np.float32)
        display = DisplayTransform(cameras.get("view_transform", "custom"), table)
    return Subject(folder=folder, images=images, gt=gt, background=background, display=display)


def pose_of(split: str) -> str:
    """gt.json's pose entry a split's images show: its own for the posed splits, else "capture"."""
    return split if split in POSED_SPLITS else "capture"


def read_gt_image(subject: Subject, image: SubjectImage) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth as (sRGB over the subject's background [H, W, 3], alpha [H, W]) in [0, 1]."""
    from PIL import Image

    rgba = np.asarray(Image.open(subject.folder / image.gt).convert("RGBA"), np.float64) / 255
    alpha = rgba[..., 3]
    composite = rgba[..., :3] * alpha[..., None] + np.asarray(subject.background) * (1 - alpha[..., None])
    return composite, alpha


def read_mask(subject: Subject, image: SubjectImage, garment: str) -> np.ndarray:
    """[H, W] coverage in [0, 1] of what is seen of one garment (its mask pass) in a held-out image."""
    from PIL import Image

    return np.asarray(Image.open(subject.folder / image.masks[garment]).convert("L"), np.float64) / 255


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
    renders = len(json.loads(scene.read_text())["renders"])
    size = f"{settings.width}x{settings.height}"
    log(f"rendering {renders} images with Cycles ({size}, {settings.samples} samples per pixel)")
    started = time.perf_counter()
    timings = renderer.render(scene)
    render_seconds = time.perf_counter() - started
    display = DisplayTransform()
    if settings.view_transform != "Standard":
        table = display_table(np.load(work / "display_values.npy", allow_pickle=False))
        display = DisplayTransform(settings.view_transform, table)
        np.save(folder / DISPLAY_LUT, table, allow_pickle=False)
    _write_images(folder, work, subject, display)
    gt = _ground_truth(subject, render_seconds, timings)
    Image.fromarray(subject.texture).save(folder / "gt" / "texture.png", optimize=True)
    write_json(folder / "gt.json", gt)
    shutil.rmtree(work)
    return gt


def _subject_poses(subject: SyntheticSubject) -> dict[str, tuple[Pose, dict[str, float] | None]]:
    """Every pose the subject is rendered in, by gt.json name: (pose, expressions)."""
    poses = {"capture": (subject.capture, None), "novel": (subject.novel, subject.novel_expressions)}
    poses |= {_moved(name): (pose, None) for name, pose in subject.photo_poses.items()}
    return poses | {name: (pose, None) for name, pose in subject.extra_poses.items()}


def _moved(camera_name: str) -> str:
    """The pose name of the input photo `camera_name` where the person moved (`photo_poses`)."""
    return f"moved_{camera_name}"


def _write_meshes(work: Path, subject: SyntheticSubject) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The body and the garments posed in every pose as .npy files in `work`: the body's
    {pose: file} and scene.json's "garments"."""
    from PIL import Image

    rig = subject.rig
    body: dict[str, str] = {}
    garments = [
        {
            "name": garment.name,
            "triangles": f"{garment.name}_triangles.npy",
            "corner_uvs": f"{garment.name}_corner_uvs.npy",
            "texture": f"{garment.name}_texture.png",
            "meshes": {},
        }
        for garment in subject.garments
    ]
    for garment, entry in zip(subject.garments, garments, strict=True):
        np.save(work / entry["triangles"], garment.triangles, allow_pickle=False)
        np.save(work / entry["corner_uvs"], garment.corner_uvs.reshape(-1, 2), allow_pickle=False)
        Image.fromarray(garment.texture).save(work / entry["texture"])
    for pose_name, (pose, expressions) in _subject_poses(subject).items():
        body[pose_name] = f"{pose_name}_vertices.npy"
        vertices = pose_vertices(rig, pose, expressions)
        np.save(work / body[pose_name], vertices.astype(np.float32), allow_pickle=False)
        skinning = forward_kinematics(rig, pose).skinning
        for garment, entry in zip(subject.garments, garments, strict=True):
            entry["meshes"][pose_name] = f"{garment.name}_{pose_name}_vertices.npy"
            np.save(work / entry["meshes"][pose_name], pose_garment(garment, skinning), allow_pickle=False)
    return body, garments


def _render_list(subject: SyntheticSubject) -> list[dict[str, Any]]:
    """scene.json's "renders": every image's ground truth; for each input photo in a studio, the
    photo with the backdrop; for each held-out image, a mask pass of what is seen of each garment."""
    renders = []
    for split, camera in subject.cameras:
        truth = {
            "name": camera.name,
            "mesh": _moved(camera.name) if camera.name in subject.photo_poses else pose_of(split),
            "lighting": "relit" if split == "relit" else "capture",
            "width": camera.width,
            "height": camera.height,
            "K": np.asarray(camera.intrinsics).tolist(),
            "viewmat": np.asarray(camera.viewmat).tolist(),
            "output": f"{camera.name}.npy",
        }
        renders.append(truth)
        if split == "input" and subject.backdrop_colour is not None:
            # Turned so its wall stands behind the person as this camera sees them.
            azimuth = math.atan2(camera.position[0], -camera.position[1])
            photo = {"name": f"{camera.name}_photo", "backdrop": True, "backdrop_azimuth": azimuth}
            renders.append(truth | photo | {"output": f"{camera.name}_photo.npy"})
        for garment in subject.garments if split != "input" else ():
            name = f"{camera.name}_mask_{garment.name}"
            mask = {"name": name, "only": garment.name, "samples": subject.settings.mask_samples}
            renders.append(truth | mask | {"output": f"{name}.npy"})
    return renders


def cyclorama() -> tuple[np.ndarray, np.ndarray]:
    """A photographer's cyclorama facing a camera at -Y: a floor just under the soles curving up
    into a wall 2 m behind the person (+Y); vertices [V, 3] float32, triangles [F, 3] int32."""
    cove = np.linspace(0, np.pi / 2, 17)
    radius, wall = 1.0, 2.0
    profile_y = np.concatenate([[-9.0], wall - radius + radius * np.sin(cove), [wall]])
    profile_z = np.concatenate([[0.0], radius - radius * np.cos(cove), [6.0]]) - 0.003
    columns = len(profile_y)
    vertices = np.concatenate(
        [np.stack([np.full(columns, x), profile_y, profile_z], axis=1) for x in (-7.0, 7.0)]
    )
    first = np.arange(columns - 1)
    triangles = np.concatenate(
        [
            np.stack([first, first + 1, first + columns], 1),
            np.stack([first + 1, first + 1 + columns, first + columns], 1),
        ]
    )
    return vertices.astype(np.float32), triangles.astype(np.int32)


def _write_render_scene(work: Path, subject: SyntheticSubject) -> Path:
    """Write what Blender renders into `work`: posed meshes, UVs, textures and scene.json."""
    from PIL import Image

    rig, settings = subject.rig, subject.settings
    Image.fromarray(subject.texture).save(work / "texture.png")
    meshes, garments = _write_meshes(work, subject)
    np.save(work / "triangles.npy", rig.triangles, allow_pickle=False)
    np.save(work / "corner_uvs.npy", rig.uvs[rig.triangle_uvs].astype(np.float32), allow_pickle=False)
    scene: dict[str, Any] = {
        "seed": settings.seed,
        "samples": settings.samples,
        "texture": "texture.png",
        "meshes": meshes,
        "triangles": "triangles.npy",
        "corner_uvs": "corner_uvs.npy",
        "lighting": {
            "capture": lighting_to_json(subject.capture_lighting),
            "relit": lighting_to_json(subject.relit_lighting),
        },
        "renders": _render_list(subject),
    }
    if garments:
        scene["garments"] = garments
    if subject.backdrop_colour is not None:
        vertices, triangles = cyclorama()
        np.save(work / "backdrop_vertices.npy", vertices, allow_pickle=False)
        np.save(work / "backdrop_triangles.npy", triangles, allow_pickle=False)
        files = {"vertices": "backdrop_vertices.npy", "triangles": "backdrop_triangles.npy"}
        scene["backdrop"] = files | {"colour": list(subject.backdrop_colour)}
    if settings.view_transform != "Standard":
        np.save(work / "display_inputs.npy", lut_inputs(), allow_pickle=False)
        scene["view_transform"] = settings.view_transform
        scene["display"] = {"inputs": "display_inputs.npy", "output": "display_values.npy"}
    write_json(work / "scene.json", scene)
    return work / "scene.json"


def _straight_display(premultiplied: np.ndarray, display: DisplayTransform) -> tuple[np.ndarray, np.ndarray]:
    """Cycles' premultiplied linear RGBA [H, W, 4] as (display colour [H, W, 3], straight alpha
    [H, W]), both in [0, 1]: the colour as Blender shows it with the view transform."""
    alpha = np.clip(premultiplied[..., 3], 0, 1)
    covered = alpha[..., None] > 1e-6
    straight = np.where(covered, premultiplied[..., :3] / np.maximum(alpha[..., None], 1e-6), 0)
    return display.encode(straight), alpha


def _save_rgba(path: Path, colour: np.ndarray, alpha: np.ndarray) -> None:
    from PIL import Image

    rgba = np.concatenate([colour, alpha[..., None]], axis=-1)
    Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), "RGBA").save(path)


def _write_images(folder: Path, work: Path, subject: SyntheticSubject, display: DisplayTransform) -> None:
    """The renders in `work` as gt/<name>.png (RGBA), photos/<name>.png (the inputs over the
    backdrop or the plain background), gt/masks/<name>_<garment>.png and cameras.json."""
    from PIL import Image

    def load(name: str) -> np.ndarray:
        return np.load(work / f"{name}.npy", allow_pickle=False).astype(np.float64)

    entries = []
    background = np.asarray(BACKGROUND_SRGB)
    for split, camera in subject.cameras:
        colour, alpha = _straight_display(load(camera.name), display)
        gt = f"gt/{camera.name}.png"
        _save_rgba(folder / gt, colour, alpha)
        file = ""
        if split == "input":
            if subject.backdrop_colour is not None:
                colour, alpha = _straight_display(load(f"{camera.name}_photo"), display)
            photo = colour * alpha[..., None] + background * (1 - alpha[..., None])
            file = f"photos/{camera.name}.png"
            Image.fromarray((photo * 255 + 0.5).astype(np.uint8), "RGB").save(folder / file, optimize=True)
        entry = {
            "name": camera.name,
            "file": file,
            "split": split,
            "width": camera.width,
            "height": camera.height,
            "K": np.asarray(camera.intrinsics, np.float64).tolist(),
            "viewmat": np.asarray(camera.viewmat, np.float64).tolist(),
            "gt": gt,
        }
        masks = {}
        for garment in subject.garments if split != "input" else ():
            masks[garment.name] = f"gt/masks/{camera.name}_{garment.name}.png"
            (folder / "gt" / "masks").mkdir(exist_ok=True)
            coverage = np.clip(load(f"{camera.name}_mask_{garment.name}")[..., 3], 0, 1)
            Image.fromarray((coverage * 255 + 0.5).astype(np.uint8), "L").save(folder / masks[garment.name])
        entries.append(entry | ({"masks": masks} if masks else {}))
    cameras: dict[str, Any] = {"version": 1, "background_srgb": list(BACKGROUND_SRGB)}
    if display.table is not None:
        cameras |= {"view_transform": display.name, "display_lut": DISPLAY_LUT}
    write_json(folder / "cameras.json", cameras | {"images": entries})


def _pose_json(rig: Rig, pose: Pose, expressions: dict[str, float] | None) -> dict[str, Any]:
    """gt.json's `capture` or `novel`: pose, expressions and the joints' world positions."""
    weights = expression_vector(rig, expressions)
    return capture_to_json(pose, weights, list(rig.expression_names)) | {
        "joint_positions": joint_positions(rig, pose).round(6).tolist()
    }


def _settings_json(settings: SubjectSettings) -> dict[str, Any]:
    """gt.json's "settings": the fields but the phenotype, the clothed-subject fields only when
    they differ from their defaults (so subjects made before them keep their gt.json)."""
    studio = {"garments", "backdrop", "view_transform", "extra_poses", "mask_samples", "moves"}
    defaults = {item.name: item.default for item in fields(SubjectSettings)}
    return {
        key: value
        for key, value in asdict(settings).items()
        if key != "phenotype" and (key not in studio or value != defaults[key])
    }


def _ground_truth(
    subject: SyntheticSubject, render_seconds: float, seconds_per_image: dict[str, float]
) -> dict[str, Any]:
    """gt.json's content."""
    settings, rig = subject.settings, subject.rig
    capture_lights = lighting_to_json(subject.capture_lighting)
    gt: dict[str, Any] = {
        "version": 1,
        "seed": settings.seed,
        "settings": _settings_json(settings),
        "body": {
            "model": rig.body_model,
            "phenotype": subject.phenotype,
            "joint_names": list(rig.joint_names),
            "main_joints": list(MAIN_JOINTS),
        },
        "capture": _pose_json(rig, subject.capture, None),
        "novel": _pose_json(rig, subject.novel, subject.novel_expressions),
    }
    gt |= {name: _pose_json(rig, pose, None) for name, pose in subject.extra_poses.items()}
    if subject.photo_poses:
        # Where the person moved between photos: each input photo's own pose (the held-out views
        # show "capture").
        gt["photo_poses"] = {name: _pose_json(rig, pose, None) for name, pose in subject.photo_poses.items()}
    gt["lights"] = {split: capture_lights for split in ("input", "heldout", "novel", *subject.extra_poses)}
    gt["lights"]["relit"] = lighting_to_json(subject.relit_lighting)
    gt |= {
        "outfit": subject.outfit,
        "material": "diffuse (Lambertian) albedo only, from texture.png (sRGB) on the body's UVs",
        "texture": "gt/texture.png",
        "render": {"engine": "Cycles (CPU)", "samples": settings.samples, "denoised": True}
        | {"seconds_total": round(render_seconds, 2), "seconds_per_image": seconds_per_image},
    }
    if subject.garments:
        gt["garments"] = [garment.description for garment in subject.garments]
    if subject.backdrop_colour is not None:
        gt["backdrop"] = {"kind": settings.backdrop, "albedo": list(subject.backdrop_colour)}
    if settings.view_transform != "Standard":
        gt["render"]["view_transform"] = settings.view_transform
    return gt
