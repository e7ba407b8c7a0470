"""Synthetic evaluation subjects: an Anny body in a textured outfit, rendered by Cycles, from a seed.

Everything random comes from one `numpy.random.default_rng(seed)`, drawn in a fixed order, so the
same seed and settings give the same subject (Cycles' own sampling is seeded too). The engine side
(this module: body, poses, texture, cameras, lights) writes a scene folder that
`eval_subject_blender.py` renders in Blender's Python; the renders then become the subject folder
described in bench/README.md.

The outfit is a diffuse material only (albedo from the baked texture, no specular, no
subsurface): the build's albedo/lighting split is then exact up to shadows and interreflection.
Capture lighting is a uniform world plus one sun key, exposed so that a white Lambertian surface
facing the key renders at about 1.0 linear (world strength + sun strength / pi = 1), the
well-exposed photo the build assumes when it estimates absolute albedo.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lca_blender.avatar import Pose, Rig
from lca_blender.formats.poses import euler_xyz_to_quaternion
from lca_blender.maths.cameras import Camera, look_at
from lca_blender.maths.colour import linear_to_srgb
from lca_blender.maths.deform import expression_vector, forward_kinematics, pose_vertices
from lca_blender.maths.lights import AmbientSH, AreaLight, Lighting, PointLight, SunLight, lighting_to_json
from lca_blender.reconstruct.views import capture_to_json

REPO_ROOT = Path(__file__).resolve().parents[1]
BLENDER_PYTHON = REPO_ROOT / ".venv-blender" / "bin" / "python"
BLENDER_SCRIPT = Path(__file__).with_name("eval_subject_blender.py")
BACKGROUND_SRGB = (0.82, 0.82, 0.82)  # the plain light-grey wall behind the person in the photos
SPLITS = ("input", "heldout", "novel", "relit")

# Joints whose world positions score the body fit: the trunk and limbs, not toes, fingers or eyes.
MAIN_JOINTS = (
    "root", "spine05", "spine04", "spine03", "spine02", "spine01", "neck01", "head",
    "clavicle.L", "upperarm01.L", "lowerarm01.L", "wrist.L",
    "clavicle.R", "upperarm01.R", "lowerarm01.R", "wrist.R",
    "upperleg01.L", "lowerleg01.L", "foot.L", "upperleg01.R", "lowerleg01.R", "foot.R",
)  # fmt: skip
FINGERS = ("finger1", "finger2", "finger3", "finger4", "finger5")


@dataclass(frozen=True)
class SubjectSettings:
    """What a synthetic subject is made of; the seed decides everything else."""

    seed: int = 0
    photos: int = 12
    width: int = 384
    height: int = 512
    heldout: int = 4
    samples: int = 48  # Cycles samples per pixel (denoised)
    texture_size: int = 1024
    phenotype: dict[str, float] | None = None  # None: drawn from the seed


def random_phenotype(rng: np.random.Generator) -> dict[str, float]:
    """Moderate Anny body parameters: no extreme shapes, which no real capture needs."""
    names = ("gender", "age", "muscle", "weight", "height", "proportions")
    low = {"gender": 0.0, "age": 0.35, "muscle": 0.3, "weight": 0.3, "height": 0.3, "proportions": 0.35}
    high = {"gender": 1.0, "age": 0.65, "muscle": 0.7, "weight": 0.7, "height": 0.7, "proportions": 0.65}
    return {name: round(float(rng.uniform(low[name], high[name])), 2) for name in names}


def _euler_pose(rig: Rig, joints: dict[str, tuple[float, float, float]]) -> Pose:
    pose = Pose.rest(rig.joint_count)
    for name, degrees in joints.items():
        pose.rotations[rig.joint_index(name)] = euler_xyz_to_quaternion(np.asarray(degrees))
    return pose


def _jitter(rng: np.random.Generator, spread: float) -> tuple[float, float, float]:
    return tuple(float(value) for value in rng.uniform(-spread, spread, 3))


def _curl(side: str, degrees: dict[str, float], rng: np.random.Generator) -> dict[str, tuple]:
    # Every phalanx of this rig bends towards the palm about its own +X axis (see poses.py).
    return {
        f"{finger}-{phalanx}.{side}": (
            degrees[finger] * (0.6 if finger == "finger1" else 1) + rng.uniform(-4, 4),
            0.0,
            0.0,
        )
        for finger in FINGERS
        for phalanx in (1, 2, 3)
    }


def capture_pose(rig: Rig, rng: np.random.Generator) -> Pose:
    """A relaxed A-pose: Anny's rest (arms about 45 degrees down, elbows a little bent) with small
    random turns of the trunk, head and arms and softly curled fingers."""
    joints: dict[str, tuple] = {}
    for side, sign in (("L", 1.0), ("R", -1.0)):
        # About the upper arm's Z axis a positive angle lifts the left arm (poses.py's t-pose):
        # lower them by up to 6 degrees instead, and swing them a little forward or back.
        joints[f"upperarm01.{side}"] = (rng.uniform(-6, 6), rng.uniform(-5, 5), -sign * rng.uniform(0, 6))
        joints[f"lowerarm01.{side}"] = (rng.uniform(-8, 0), 0.0, 0.0)
        joints[f"wrist.{side}"] = _jitter(rng, 6)
        relaxed = {finger: float(rng.uniform(12, 25)) for finger in FINGERS}
        joints |= _curl(side, relaxed, rng)
    for name in ("spine03", "spine01", "neck01", "head"):
        joints[name] = _jitter(rng, 3)
    return _euler_pose(rig, joints)


def novel_pose(rig: Rig, rng: np.random.Generator) -> tuple[Pose, dict[str, float]]:
    """A held-out pose no photo shows: the right hand points forward, the left makes a fist with
    the arm lifted sideways, the head turns, the jaw opens."""
    joints: dict[str, tuple] = {
        # Measured on the rig: +X swings an upper arm forward (85 degrees: level, straight ahead);
        # +Z lifts the left arm sideways; +X at the elbow bends the forearm up.
        "upperarm01.R": (80 + rng.uniform(-6, 6), 0.0, rng.uniform(0, 10)),
        "lowerarm01.R": (rng.uniform(0, 10), 0.0, 0.0),
        "upperarm01.L": (rng.uniform(-5, 5), 0.0, 35 + rng.uniform(-6, 6)),
        "lowerarm01.L": (35 + rng.uniform(-6, 6), 0.0, 0.0),
        "neck01": (0.0, 0.0, 12 + rng.uniform(-4, 4)),
        "head": (rng.uniform(-6, 0), 0.0, 0.0),
    }
    joints |= _curl("L", dict.fromkeys(FINGERS, 75.0), rng)
    joints |= _curl(
        "R", {"finger1": 70.0, "finger2": 0.0, "finger3": 80.0, "finger4": 80.0, "finger5": 80.0}, rng
    )
    return _euler_pose(rig, joints), {"jawOpen": round(float(rng.uniform(0.55, 0.65)), 3)}


# The outfit ---------------------------------------------------------------------------------------

_SKIN_TONES = np.array([[0.62, 0.43, 0.34], [0.50, 0.31, 0.21], [0.33, 0.19, 0.12], [0.16, 0.09, 0.06]])
_HAIR_COLOURS = np.array([[0.02, 0.015, 0.012], [0.09, 0.045, 0.02], [0.38, 0.26, 0.12], [0.30, 0.08, 0.03]])


def _random_colour(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """A saturated linear colour whose brightest channel lies in [low, high]."""
    hue = rng.uniform(0, 1)
    channels = np.clip(np.abs(((hue * 6 + np.array([0.0, 4.0, 2.0])) % 6) - 3) - 1, 0, 1)
    saturation = rng.uniform(0.45, 0.9)
    return (1 - saturation + saturation * channels) * rng.uniform(low, high)


def outfit_description(rng: np.random.Generator) -> dict[str, Any]:
    """The outfit's colours and patterns, drawn from the seed (recorded in gt.json)."""
    shirt = _random_colour(rng, 0.25, 0.6)
    return {
        "skin": (_SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.1)).tolist(),
        "hair": (_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] * rng.uniform(0.9, 1.1)).tolist(),
        "shirt": shirt.tolist(),
        # The pattern's second colour: part of the way to a contrasting one, as printed fabric is.
        "shirt_second": (shirt + rng.uniform(0.35, 0.6) * (_random_colour(rng, 0.1, 0.7) - shirt)).tolist(),
        "shirt_pattern": ["stripes", "checks", "dots"][int(rng.integers(3))],
        "shirt_period_m": float(rng.uniform(0.04, 0.08)),
        "long_sleeves": bool(rng.random() < 0.5),
        "print": _random_colour(rng, 0.5, 0.85).tolist(),
        "trousers": _random_colour(rng, 0.04, 0.2).tolist(),
        "belt": (np.array([0.05, 0.035, 0.02]) * rng.uniform(0.7, 1.5)).tolist(),
        "shoes": _random_colour(rng, 0.02, 0.5).tolist(),
        "soles": [0.75, 0.75, 0.72],
    }


def _dominant_joints(rig: Rig) -> np.ndarray:
    """[V] the joint with the largest skin weight of each vertex."""
    strongest = np.argmax(rig.skin_weights, axis=1)
    return rig.skin_indices[np.arange(rig.vertex_count), strongest]


def outfit_albedo_at(
    rig: Rig, outfit: dict[str, Any], triangle_ids: np.ndarray, barycentrics: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """[N, 3] linear albedo of the outfit at surface points of the rest mesh (solid texturing:
    patterns are functions of the rest position, so UV seams never show).

    triangle_ids: [N]; barycentrics: [N, 3]; noise: [N] fabric grain in about [-1, 1].
    """
    corners = rig.triangles[triangle_ids]
    points = np.einsum("nk,nkc->nc", barycentrics, rig.vertices[corners])
    nearest = corners[np.arange(len(corners)), np.argmax(barycentrics, axis=1)]
    names = np.asarray(rig.joint_names, dtype=object)[_dominant_joints(rig)[nearest]]
    x, y, z = points.T

    def part(*fragments: str) -> np.ndarray:
        return np.array([any(fragment in name for fragment in fragments) for name in names], dtype=bool)

    def colour(key: str) -> np.ndarray:
        return np.asarray(outfit[key], np.float64)

    albedo = np.tile(colour("skin"), (len(points), 1))
    heads = rig.bone_heads.astype(np.float64)
    waist = heads[rig.joint_index("root"), 2] + 0.07
    chest = heads[rig.joint_index("spine02"), 2]
    sleeves = ("upperarm", "lowerarm") if outfit["long_sleeves"] else ("upperarm01",)
    shirt = part("spine", "clavicle", "shoulder", "pelvis", "root", *sleeves) & (z >= waist)
    legs = part("upperleg", "lowerleg") | (part("spine", "pelvis", "root") & (z < waist))

    period = outfit["shirt_period_m"]
    pattern = outfit["shirt_pattern"]
    if pattern == "stripes":
        second = np.sin(2 * np.pi * z / period) > 0.3
    elif pattern == "checks":
        second = (np.floor(x / period) + np.floor(y / period) + np.floor(z / period)) % 2 == 0
    else:
        lattice = (points / period) - np.round(points / period)
        second = np.linalg.norm(lattice, axis=1) < 0.28
    albedo[shirt] = colour("shirt")
    albedo[shirt & second] = colour("shirt_second")
    # A round print with a ring on the chest, front only (the body faces -Y).
    chest_centre = np.array([0.0, heads[rig.joint_index("spine02"), 1] - 0.15, chest + 0.02])
    radial = np.hypot(x - chest_centre[0], z - chest_centre[2])
    front = y < chest_centre[1] + 0.08
    print_mark = shirt & front & ((radial < 0.045) | ((radial > 0.06) & (radial < 0.07)))
    albedo[print_mark] = colour("print")

    albedo[legs] = colour("trousers")
    # Seams down the outside of each leg and a twill of fine diagonal lines.
    twill = np.sin(2 * np.pi * (z + 0.5 * np.abs(x)) / 0.025) > 0.6
    albedo[legs & twill] *= 1.15
    belt = (part("spine", "pelvis", "root") | part("upperleg")) & (np.abs(z - waist) < 0.025)
    albedo[belt] = colour("belt")
    feet = part("foot", "toe")
    albedo[feet] = colour("shoes")
    albedo[feet & (z < 0.025)] = colour("soles")

    # Hair on the scalp: above a hairline over the eyes, lower at the back of the head.
    eyes = [heads[rig.joint_index(name)] for name in ("eye.L", "eye.R") if name in rig.joint_names]
    eye_centre = np.mean(eyes, axis=0) if eyes else heads[rig.joint_index("head")] + [0, -0.08, 0.08]
    head = part("head", "neck02", "neck03")
    behind = (y - eye_centre[1]) / 0.12  # 0 at the eyes, 1 about at the back of the skull
    hairline = eye_centre[2] + 0.045 - 0.13 * np.clip(behind, 0, 1)
    albedo[head & (z > hairline)] = colour("hair")
    eyeballs = part("eye.")
    if eyeballs.any():
        centres = heads[[rig.joint_index(name) for name in names[eyeballs]]]
        offsets = points[eyeballs] - centres
        radius = np.linalg.norm(offsets, axis=1)
        iris = -offsets[:, 1] > 0.82 * radius
        pupil = -offsets[:, 1] > 0.96 * radius
        albedo[eyeballs] = np.where(iris[:, None], [0.12, 0.07, 0.03], [0.75, 0.74, 0.72])
        albedo[np.flatnonzero(eyeballs)[pupil]] = [0.01, 0.01, 0.01]
    grain = 1.0 + 0.06 * noise[:, None] * (shirt | legs)[:, None] + 0.02 * noise[:, None]
    return np.clip(albedo * grain, 0.0, 1.0)


def bake_outfit_texture(
    rig: Rig, outfit: dict[str, Any], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The outfit baked into the rig's UV layout: sRGB texture [S, S, 3] uint8 (row 0 at the top,
    as image files store it; V = 1 at the top) and the covered-texel mask [S, S]."""
    import cv2

    corners_uv = rig.uvs[rig.triangle_uvs].astype(np.float64)  # [F, 3, 2]
    # Pixel centres at integer coordinates; 4 bits of sub-pixel precision for OpenCV.
    pixel = np.stack([corners_uv[..., 0] * size - 0.5, (1 - corners_uv[..., 1]) * size - 0.5], axis=-1)
    ids = np.zeros((size, size), np.int32)
    fixed = np.round(pixel * 16).astype(np.int32)
    for triangle, polygon in enumerate(fixed):
        cv2.fillConvexPoly(ids, polygon, triangle + 1, lineType=cv2.LINE_8, shift=4)
    rows, columns = np.nonzero(ids)
    triangle_ids = ids[rows, columns] - 1
    # Barycentrics of each covered texel's centre in its triangle's UV corners.
    a, b, c = (pixel[triangle_ids, k] for k in range(3))
    point = np.stack([columns, rows], axis=1).astype(np.float64)
    v0, v1, v2 = b - a, c - a, point - a
    denominator = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    denominator = np.where(np.abs(denominator) < 1e-12, 1e-12, denominator)
    weight1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / denominator
    weight2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / denominator
    barycentrics = np.clip(np.stack([1 - weight1 - weight2, weight1, weight2], axis=1), 0, 1)
    barycentrics /= barycentrics.sum(1, keepdims=True)
    noise = rng.uniform(-1, 1, len(rows))
    albedo = outfit_albedo_at(rig, outfit, triangle_ids, barycentrics, noise)
    texture = np.zeros((size, size, 3), np.float64)
    texture[rows, columns] = linear_to_srgb(albedo)
    covered = ids > 0
    # Bleed colours a few texels past the islands' borders so bilinear lookups at seams stay clean.
    filled, known = texture.copy(), covered.copy()
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(4):
        grown = cv2.dilate(known.astype(np.uint8), kernel).astype(bool) & ~known
        total = cv2.blur(filled * known[..., None], (3, 3))
        weight = cv2.blur(known.astype(np.float64), (3, 3))
        filled[grown] = total[grown] / weight[grown][:, None]
        known |= grown
    return (np.clip(filled, 0, 1) * 255 + 0.5).astype(np.uint8), covered


def sample_texture(
    rig: Rig, texture: np.ndarray, triangle_ids: np.ndarray, barycentrics: np.ndarray
) -> np.ndarray:
    """[N, 3] linear albedo read bilinearly from an sRGB `texture` [S, S, 3] uint8 at surface points."""
    uv = np.einsum("nk,nkc->nc", barycentrics, rig.uvs[rig.triangle_uvs[triangle_ids]].astype(np.float64))
    size = texture.shape[0]
    column = np.clip(uv[:, 0] * size - 0.5, 0, size - 1.001)
    row = np.clip((1 - uv[:, 1]) * size - 0.5, 0, size - 1.001)
    c0, r0 = np.floor(column).astype(int), np.floor(row).astype(int)
    fc, fr = (column - c0)[:, None], (row - r0)[:, None]
    srgb = texture.astype(np.float64) / 255
    value = (
        srgb[r0, c0] * (1 - fc) * (1 - fr)
        + srgb[r0, c0 + 1] * fc * (1 - fr)
        + srgb[r0 + 1, c0] * (1 - fc) * fr
        + srgb[r0 + 1, c0 + 1] * fc * fr
    )
    return srgb_to_linear(value)


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """The inverse of the sRGB transfer function."""
    srgb = np.clip(srgb, 0.0, 1.0)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


# Cameras and lights ---------------------------------------------------------------------------------


def subject_cameras(
    settings: SubjectSettings, rng: np.random.Generator, body_height: float
) -> list[tuple[str, Camera]]:
    """(split, camera) pairs: inputs round the full circle, held-out views between them at other
    elevations, two views of the novel pose, one relit view. One focal length for all (unknown to
    the build), chosen so the body fits at the nearest distance."""
    width, height = settings.width, settings.height
    # The body fills about 85 % of the height at the nearest distance (2.5 m).
    focal = 0.85 * height * 2.5 / body_height * rng.uniform(0.97, 1.0)
    intrinsics = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    target_height = 0.52 * body_height

    def camera(name: str, azimuth_deg: float, elevation_deg: float, distance: float) -> Camera:
        azimuth, elevation = math.radians(azimuth_deg), math.radians(elevation_deg)
        target = np.array([rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), target_height])
        direction = np.array(
            [
                math.sin(azimuth) * math.cos(elevation),
                -math.cos(azimuth) * math.cos(elevation),
                math.sin(elevation),
            ]
        )
        position = target + distance * direction
        return Camera(name, position, look_at(position, target), intrinsics, width, height)

    cameras = []
    step = 360.0 / settings.photos
    for index in range(settings.photos):
        azimuth = index * step + rng.uniform(-0.2, 0.2) * step
        cameras.append(
            ("input", camera(f"input_{index:02d}", azimuth, rng.uniform(-2, 12), rng.uniform(2.5, 3.5)))
        )
    for index in range(settings.heldout):
        azimuth = (index + 0.5) * 360.0 / settings.heldout + rng.uniform(-10, 10)
        elevation = (22.0 if index % 2 == 0 else -6.0) + rng.uniform(-3, 3)
        cameras.append(("heldout", camera(f"heldout_{index:02d}", azimuth, elevation, rng.uniform(2.6, 3.2))))
    for index, azimuth in enumerate((20.0, 215.0)):
        cameras.append(("novel", camera(f"novel_{index:02d}", azimuth + rng.uniform(-10, 10), 8.0, 3.0)))
    cameras.append(("relit", camera("relit_00", 25.0 + rng.uniform(-10, 10), 10.0, 3.0)))
    return cameras


def _direction(azimuth_deg: float, elevation_deg: float) -> tuple[float, float, float]:
    """The way light travels from a source at this azimuth (0 = in front, at -Y) and elevation."""
    azimuth, elevation = math.radians(azimuth_deg), math.radians(elevation_deg)
    source = np.array(
        [
            math.sin(azimuth) * math.cos(elevation),
            -math.cos(azimuth) * math.cos(elevation),
            math.sin(elevation),
        ]
    )
    return tuple(float(value) for value in -source)


def capture_lighting(rng: np.random.Generator) -> Lighting:
    """A uniform world and one sun key, exposed so a white surface facing the key reads ~1.0."""
    world_strength = float(rng.uniform(0.3, 0.45))
    world_colour = (1.0, 1.0, 1.0) + rng.uniform(-0.05, 0.05, 3)
    key = SunLight(
        direction=_direction(rng.uniform(-40, 40), rng.uniform(35, 55)),
        color=tuple(float(value) for value in (1.0, 1.0, 1.0) + rng.uniform(-0.04, 0.04, 3)),
        strength_w_m2=math.pi * (1.0 - world_strength),
    )
    return Lighting(ambient=AmbientSH.uniform(world_colour, world_strength), lights=(key,))


def relit_lighting(rng: np.random.Generator) -> Lighting:
    """Held-out lighting: a warm low sun from the side, a cool area light and a point light, a
    bluish world."""
    sun = SunLight(
        direction=_direction(rng.uniform(60, 100), rng.uniform(15, 30)),
        color=(1.0, 0.72, 0.45),
        strength_w_m2=float(rng.uniform(1.4, 1.8)),
    )
    area = AreaLight(
        position=(-1.6, -1.4, 1.9),
        direction=(1.6, 1.4, -0.9),
        color=(0.55, 0.7, 1.0),
        power_w=float(rng.uniform(25, 40)),
        size_x=0.8,
        size_y=0.8,
        shape="DISK",
    )
    point = PointLight(
        position=(0.3, 1.5, 2.2), color=(0.85, 1.0, 0.8), power_w=float(rng.uniform(60, 100)), radius=0.05
    )
    return Lighting(ambient=AmbientSH.uniform((0.35, 0.45, 0.6), 0.35), lights=(sun, area, point))


# The subject folder ---------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    from lca_blender.formats.atomic import atomic_output

    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _camera_json(split: str, camera: Camera, file: str) -> dict[str, Any]:
    return {
        "name": camera.name,
        "file": file,
        "split": split,
        "width": camera.width,
        "height": camera.height,
        "K": np.asarray(camera.intrinsics, np.float64).tolist(),
        "viewmat": np.asarray(camera.viewmat, np.float64).tolist(),
    }


def joint_positions(rig: Rig, pose: Pose) -> np.ndarray:
    """[J, 3] joint (bone head) world positions of `rig` in `pose`."""
    return forward_kinematics(rig, pose).world[:, :3, 3].astype(np.float64)


def blender_environment(work: Path) -> dict[str, str]:
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


def make_subject(folder: Path, settings: SubjectSettings, log=print) -> dict[str, Any]:
    """Generate the subject `settings` describes into `folder` (photos/, gt/, cameras.json, gt.json)."""
    from PIL import Image

    from lca_blender.bodies.anny_body import anny_rig

    rng = np.random.default_rng(settings.seed)
    phenotype = random_phenotype(rng) if settings.phenotype is None else settings.phenotype
    log(f"subject seed {settings.seed}: body {phenotype}")
    rig = anny_rig(phenotype)
    capture = capture_pose(rig, rng)
    novel, novel_expressions = novel_pose(rig, rng)
    outfit = outfit_description(rng)
    texture, _ = bake_outfit_texture(rig, outfit, settings.texture_size, rng)
    body_height = float(np.ptp(rig.vertices[:, 2]))
    cameras = subject_cameras(settings, rng, body_height)
    lighting = {"capture": capture_lighting(rng), "relit": relit_lighting(rng)}

    folder = Path(folder)
    work = folder / "render-work"
    for sub in (folder / "photos", folder / "gt", work):
        sub.mkdir(parents=True, exist_ok=True)
    Image.fromarray(texture).save(work / "texture.png")
    capture_vertices = pose_vertices(rig, capture)
    novel_vertices = pose_vertices(rig, novel, novel_expressions)
    np.save(work / "capture_vertices.npy", capture_vertices.astype(np.float32), allow_pickle=False)
    np.save(work / "novel_vertices.npy", novel_vertices.astype(np.float32), allow_pickle=False)
    np.save(work / "triangles.npy", rig.triangles, allow_pickle=False)
    np.save(work / "corner_uvs.npy", rig.uvs[rig.triangle_uvs].astype(np.float32), allow_pickle=False)
    renders = []
    for split, camera in cameras:
        renders.append(
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
        )
    scene = {
        "seed": settings.seed,
        "samples": settings.samples,
        "texture": "texture.png",
        "meshes": {"capture": "capture_vertices.npy", "novel": "novel_vertices.npy"},
        "triangles": "triangles.npy",
        "corner_uvs": "corner_uvs.npy",
        "lighting": {name: lighting_to_json(value) for name, value in lighting.items()},
        "renders": renders,
    }
    _write_json(work / "scene.json", scene)
    size = f"{settings.width}x{settings.height}"
    log(f"rendering {len(renders)} images with Cycles ({size}, {settings.samples} samples per pixel)")
    started = time.perf_counter()
    result = subprocess.run(
        [str(BLENDER_PYTHON), str(BLENDER_SCRIPT), str(work / "scene.json")],
        env=blender_environment(work),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"Blender failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    render_seconds = time.perf_counter() - started
    timings = json.loads((work / "timings.json").read_text())

    camera_entries = []
    background = np.asarray(BACKGROUND_SRGB)
    for split, camera in cameras:
        linear = np.load(work / f"{camera.name}.npy", allow_pickle=False).astype(np.float64)
        alpha = np.clip(linear[..., 3], 0, 1)
        straight = np.where(alpha[..., None] > 1e-6, linear[..., :3] / np.maximum(alpha[..., None], 1e-6), 0)
        srgb = linear_to_srgb(straight)
        rgba = np.concatenate([srgb, alpha[..., None]], axis=-1)
        Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), "RGBA").save(
            folder / "gt" / f"{camera.name}.png"
        )
        file = ""
        if split == "input":
            photo = srgb * alpha[..., None] + background * (1 - alpha[..., None])
            file = f"photos/{camera.name}.png"
            Image.fromarray((photo * 255 + 0.5).astype(np.uint8), "RGB").save(folder / file, optimize=True)
        entry = _camera_json(split, camera, file)
        entry["gt"] = f"gt/{camera.name}.png"
        camera_entries.append(entry)
    _write_json(
        folder / "cameras.json",
        {"version": 1, "background_srgb": list(BACKGROUND_SRGB), "images": camera_entries},
    )

    gt = {
        "version": 1,
        "seed": settings.seed,
        "settings": {key: value for key, value in asdict(settings).items() if key != "phenotype"},
        "body": {
            "model": rig.body_model,
            "phenotype": phenotype,
            "joint_names": list(rig.joint_names),
            "main_joints": list(MAIN_JOINTS),
        },
        "capture": capture_to_json(capture, expression_vector(rig, None), list(rig.expression_names))
        | {"joint_positions": joint_positions(rig, capture).round(6).tolist()},
        "novel": capture_to_json(novel, expression_vector(rig, novel_expressions), list(rig.expression_names))
        | {"joint_positions": joint_positions(rig, novel).round(6).tolist()},
        "lights": {
            "input": lighting_to_json(lighting["capture"]),
            "heldout": lighting_to_json(lighting["capture"]),
            "novel": lighting_to_json(lighting["capture"]),
            "relit": lighting_to_json(lighting["relit"]),
        },
        "outfit": outfit,
        "material": "diffuse (Lambertian) albedo only, from texture.png (sRGB) on the body's UVs",
        "texture": "gt/texture.png",
        "render": {"engine": "Cycles (CPU)", "samples": settings.samples, "denoised": True}
        | {"seconds_total": round(render_seconds, 2), "seconds_per_image": timings},
    }
    Image.fromarray(texture).save(folder / "gt" / "texture.png", optimize=True)
    _write_json(folder / "gt.json", gt)
    shutil.rmtree(work)
    return gt


if __name__ == "__main__":
    sys.exit("Run bench/eval_reconstruction.py (it generates subjects with --make-subject).")
