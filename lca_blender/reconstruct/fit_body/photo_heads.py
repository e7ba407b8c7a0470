"""Each photo's own turn of the head and neck, from the dense face landmarks it shows.

A real person turns and tilts their head a few degrees between the shots of a turn-around. The
body fit finds one pose for all photos (their compromise), so each photo's face lands a little off
the fitted face, and the texture fitted from all of them is their blur. Here every photo that
shows a face gets two rigid turns, world rotation vectors: of the head (with all it carries: eyes,
jaw) about the head's joint, then of the neck (carrying the head) about the neck's joint, which
is what moves the head sideways or forwards. Together they bring the fitted face onto that
photo's 468 MediaPipe face landmarks; the Gaussian fit then poses the body in each photo as it
stood (`View.pose`).

1. **Points**: the landmarks of the photo that sees the face most squarely are cast onto the
   fitted head's skin at the capture pose (rays through the camera, first hit): each landmark's
   3D point and the skin's normal there.
2. **Turns and points together**: every face photo's turns and a small slide of each point along
   the skin are fitted to all face photos' landmarks at once (a bundle adjustment): a robust
   reprojection error over the points that face the camera, the slides held small, each joint's
   turns' mean held at zero exactly (the body fit's head is the photos' compromise) and the points
   free to turn as a whole (the one freedom they share with the turns).
3. The reference photo's head was turned too, so its landmarks are cast again onto its head as
   found, moved back to the capture pose, and the turns fitted again from there.
4. A photo keeps its turns only where at least MIN_POINTS of its landmarks face its camera and
   each turn is under MAX_TURN_DEG; otherwise (a back view, a profile, a landmark model lost on a
   blurred face) it keeps the capture pose.

Measured on a turned-head test (`tests/engine/test_photo_heads.py`): turns of 2-8 degrees found
to a fifth of their size, well under a pixel of the face in photos where it is 55 pixels tall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import roma
import torch

from ...avatar import OUTER_LAYER, Pose, Rig
from ...maths.deform import forward_kinematics, pose_from_world, pose_vertices
from ...maths.rotations import axis_angle_to_quaternion, quaternion_to_matrix
from ..perceive import Perception
from ..views import View

HEAD_JOINT = "head"
NECK_JOINTS = ("neck01", "neck")  # Anny's lowest neck bone, SMPL-X's neck
MIN_POINTS = 60  # of a photo's face landmarks facing its camera, for its turn to be fitted
MIN_FACING = 0.3  # cosine between a point's skin normal and the direction to the camera
MAX_TURN_DEG = 25.0  # beyond this a turn is taken for a failed fit, not a turned head
SIGMA_PX = 3.0  # the reprojection error's robust scale, in pixels
SHIFT_SCALE = 0.005  # metres: a point's shift costs like a landmark's error at this distance...
SHIFT_WEIGHT = 0.005  # ... times this
TURN_WEIGHT = 1e-5  # per squared degree: a turn only where the landmarks ask for it
STEPS = 300
LEARNING_RATE = 0.01
FINAL_RATE = 0.01  # of the learning rate, reached at the last step


def head_turns(
    perceptions: Sequence[Perception], views: Sequence[View], rig: Rig, pose: Pose, expressions: np.ndarray
) -> np.ndarray:
    """[C, 2, 3] each photo's turns of the head and of the neck (world rotation vectors about the
    head's and the neck's joints, radians; `turned_pose`) from the capture pose; zero for photos
    without a usable face. `views[i]` is `perceptions[i]`'s."""
    turns = np.zeros((len(views), 2, 3), np.float32)
    joints = head_joints(rig)
    faces = [index for index, seen in enumerate(perceptions) if seen.face is not None]
    if joints is None or len(faces) < 2:
        return turns
    vertices = pose_vertices(rig, pose, expressions)
    triangles = rig.triangles[_head_skin(rig, joints[0])[rig.triangles].all(axis=1)]
    if len(triangles) == 0:
        return turns
    pivots = forward_kinematics(rig, pose).world[joints, :3, 3].astype(np.float64)
    reference = _squarest(faces, views, vertices, triangles, pivots[0])
    landmarks = perceptions[reference].face[:, :2]
    points, normals = _cast(landmarks, views[reference], vertices, triangles)
    found = ~np.isnan(points[:, 0])
    if found.sum() < MIN_POINTS:
        return turns
    # Only photos that see enough of the face square on take part (a profile's far side and a back
    # view's face are the landmark model's guesses).
    faces = [
        index for index in faces if _facing(points[found], normals[found], views[index]).sum() >= MIN_POINTS
    ]
    if len(faces) < 2 or reference not in faces:
        return turns
    targets = np.stack([perceptions[index].face[found, :2] for index in faces]).astype(np.float32)
    face_views = [views[index] for index in faces]
    fitted, counts = _bundle(points[found], normals[found], pivots, targets, face_views)
    # The reference photo's head is turned from the others' mean too, so its landmarks were cast
    # onto a head that was not where it stood: cast them again onto its head turned as found, and
    # move the points back to the capture pose, then fit again from there.
    own = fitted[faces.index(reference)]
    turned = pose_vertices(rig, turned_pose(rig, pose, own), expressions)
    recast, renormals = _cast(landmarks[found], views[reference], turned, triangles)
    recast, renormals = _move_back(recast, renormals, own, pivots)
    again = ~np.isnan(recast[:, 0])
    if again.sum() >= MIN_POINTS:
        fitted, counts = _bundle(recast[again], renormals[again], pivots, targets[:, again], face_views)
    for index, turn, count in zip(faces, fitted, counts, strict=True):
        if count >= MIN_POINTS and math.degrees(float(np.linalg.norm(turn, axis=1).max())) <= MAX_TURN_DEG:
            turns[index] = turn
    return turns


def turned_pose(rig: Rig, pose: Pose, turns: np.ndarray) -> Pose:
    """`pose` with the head turned by the world rotation vector `turns[0]` about its joint, then
    the neck (carrying the head) by `turns[1]` about the neck's joint (`turn_joints`)."""
    return turn_joints(rig, pose, head_joints(rig), turns)


def turn_joints(rig: Rig, pose: Pose, joints: Sequence[int], turns: np.ndarray) -> Pose:
    """`pose` with each of `joints` in turn, and every joint under it, turned rigidly by the world
    rotation vector `turns[i]` [3] about where the joint is then."""
    transforms = forward_kinematics(rig, pose).world.astype(np.float64)
    for joint, turn in zip(joints, turns, strict=True):
        moved = np.eye(4)
        moved[:3, :3] = _rotation(turn)
        moved[:3, 3] = transforms[joint, :3, 3] - moved[:3, :3] @ transforms[joint, :3, 3]
        carried = _descendants(rig, joint)
        transforms[carried] = moved @ transforms[carried]
    turned = pose_from_world(rig, transforms)
    return Pose(rotations=turned.rotations, translation=pose.translation.copy())


def head_joints(rig: Rig) -> list[int] | None:
    """The head's and the neck's joints (Anny's or SMPL-X's names), or None when the rig has none."""
    names = rig.joint_names
    neck = next((name for name in NECK_JOINTS if name in names), None)
    if HEAD_JOINT not in names or neck is None:
        return None
    return [names.index(HEAD_JOINT), names.index(neck)]


def _move_back(
    points: np.ndarray, normals: np.ndarray, turns: np.ndarray, pivots: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Points [K, 3] and normals [K, 3] of a head turned by `turns` [2, 3] (`turned_pose`) taken
    back to where they are at the capture pose."""
    for turn, pivot in zip(turns[::-1], pivots[::-1], strict=True):
        back = _rotation(-turn)
        points, normals = (points - pivot) @ back.T + pivot, normals @ back.T
    return points, normals


def _rotation(turn: np.ndarray) -> np.ndarray:
    """[3, 3] the rotation by the rotation vector `turn` [3]."""
    return quaternion_to_matrix(axis_angle_to_quaternion(np.asarray(turn, np.float64)[None]))[0]


def _descendants(rig: Rig, joint: int) -> list[int]:
    """`joint` and every joint under it."""
    inside = {joint}
    for index, parent in enumerate(rig.joint_parents):  # parents come before their children
        if parent in inside:
            inside.add(index)
    return sorted(inside)


def _head_skin(rig: Rig, head: int) -> np.ndarray:
    """[V] bool: the body's own skin (not the outer layer) that the head and what it carries move."""
    carried = _descendants(rig, head)
    weight = (rig.skin_weights * np.isin(rig.skin_indices, carried)).sum(axis=1)
    head = weight > 0.5
    if rig.vertex_layers is not None:
        head &= rig.vertex_layers != OUTER_LAYER
    return head


def _squarest(
    faces: list[int], views: Sequence[View], vertices: np.ndarray, triangles: np.ndarray, centre: np.ndarray
) -> int:
    """The face photo whose camera looks most squarely at the face: the face's direction is from
    the head joint to the area-weighted middle of the head skin's front half."""
    corners = vertices[triangles]
    middles = corners.mean(axis=1)
    normals, areas = _normals(corners), _areas(corners)
    outward = ((middles - centre) * normals).sum(axis=1) > 0
    seen_from = {index: views[index].camera.position - centre for index in faces}
    # The front is where most of the photos with a face look from.
    mean_direction = np.mean([side / np.linalg.norm(side) for side in seen_from.values()], axis=0)
    front = outward & (normals @ mean_direction > 0)
    if not front.any():
        front = outward
    forward = (areas[front, None] * middles[front]).sum(axis=0) / max(areas[front].sum(), 1e-12) - centre
    forward /= max(np.linalg.norm(forward), 1e-12)
    return max(faces, key=lambda index: float(forward @ seen_from[index]) / np.linalg.norm(seen_from[index]))


def _normals(corners: np.ndarray) -> np.ndarray:
    """[F, 3] unit normals of triangles given by their corners [F, 3, 3]."""
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    return cross / np.maximum(np.linalg.norm(cross, axis=1, keepdims=True), 1e-20)


def _areas(corners: np.ndarray) -> np.ndarray:
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    return 0.5 * np.linalg.norm(cross, axis=1)


def _cast(
    pixels: np.ndarray, view: View, vertices: np.ndarray, triangles: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World points [K, 3] where the rays through `pixels` [K, 2] first hit the triangles, and the
    triangles' normals there [K, 3]; NaN rows for rays that miss (Moller-Trumbore, in blocks)."""
    camera = view.camera
    rotation = np.asarray(camera.viewmat, np.float64)[:3, :3]
    intrinsics = np.asarray(camera.intrinsics, np.float64)
    local = np.stack(
        [
            (pixels[:, 0] - intrinsics[0, 2]) / intrinsics[0, 0],
            (pixels[:, 1] - intrinsics[1, 2]) / intrinsics[1, 1],
            np.ones(len(pixels)),
        ],
        axis=1,
    )
    directions = local @ rotation  # rotation^T applied to each row
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    origin = np.asarray(camera.position, np.float64)
    corners = vertices[triangles].astype(np.float64)
    edge1, edge2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    to_origin = origin - corners[:, 0]  # [F, 3]
    points = np.full((len(pixels), 3), np.nan)
    normals = np.full((len(pixels), 3), np.nan)
    face_normals = _normals(corners)
    for start in range(0, len(pixels), 64):
        ray = directions[start : start + 64, None, :]  # [R, 1, 3]
        across = np.cross(ray, edge2[None])  # [R, F, 3]
        determinant = (across * edge1[None]).sum(-1)
        usable = np.abs(determinant) > 1e-12
        inverse = np.where(usable, 1.0 / np.where(usable, determinant, 1.0), 0.0)
        u = (across * to_origin[None]).sum(-1) * inverse
        upward = np.cross(to_origin, edge1)  # [F, 3]
        v = (ray * upward[None]).sum(-1) * inverse
        distance = (upward[None] * edge2[None]).sum(-1) * inverse
        hit = usable & (u >= 0) & (v >= 0) & (u + v <= 1) & (distance > 0)
        distance = np.where(hit, distance, np.inf)
        nearest = distance.argmin(axis=1)
        first = distance[np.arange(len(nearest)), nearest]
        rows = np.flatnonzero(np.isfinite(first))
        points[start + rows] = origin + first[rows, None] * directions[start + rows]
        normals[start + rows] = face_normals[nearest[rows]]
    # A normal points back at the camera that sees its triangle's front.
    flip = (normals * (origin - points)).sum(axis=1) < 0
    normals[flip] *= -1
    return points, normals


class ViewPixels:
    """Pixels [F, K, 2] of world points [F, K, 3] in F views' cameras (float64, differentiable)."""

    def __init__(self, views: Sequence[View]) -> None:
        self.viewmats = torch.as_tensor(
            np.stack([view.camera.viewmat for view in views]), dtype=torch.float64
        )
        self.intrinsics = torch.as_tensor(
            np.stack([view.camera.intrinsics for view in views]), dtype=torch.float64
        )

    def __call__(self, world: torch.Tensor) -> torch.Tensor:
        camera = torch.einsum("fij,fkj->fki", self.viewmats[:, :3, :3], world) + self.viewmats[:, None, :3, 3]
        focal, centre = self.intrinsics[:, None, [0, 1], [0, 1]], self.intrinsics[:, None, :2, 2]
        return camera[..., :2] / camera[..., 2:].clamp_min(1e-3) * focal + centre


def _facing(points: np.ndarray, normals: np.ndarray, view: View) -> np.ndarray:
    """[K] bool: the points [K, 3] whose normals [K, 3] face the view's camera (MIN_FACING)."""
    towards = np.asarray(view.camera.position) - points
    towards /= np.maximum(np.linalg.norm(towards, axis=1, keepdims=True), 1e-12)
    return (normals * towards).sum(axis=1) > MIN_FACING


def _bundle(
    points: np.ndarray,  # [K, 3] world, at the capture pose
    normals: np.ndarray,  # [K, 3]
    pivots: np.ndarray,  # [2, 3] the head's and the neck's joints
    targets: np.ndarray,  # [F, K, 2] pixels, per face photo
    views: Sequence[View],  # [F]
) -> tuple[np.ndarray, np.ndarray]:
    """Each face photo's turns of head and neck [F, 2, 3] (each mean zero over the photos) and how
    many of its landmarks faced its camera [F]."""
    base = torch.as_tensor(points, dtype=torch.float64)
    skin_normals = torch.as_tensor(normals, dtype=torch.float64)
    head, neck = torch.as_tensor(pivots, dtype=torch.float64)
    target = torch.as_tensor(targets, dtype=torch.float64)
    project = ViewPixels(views)
    positions = torch.as_tensor(np.stack([view.camera.position for view in views]), dtype=torch.float64)
    turns = torch.zeros(len(views), 2, 3, dtype=torch.float64, requires_grad=True)
    shifts = torch.zeros_like(base, requires_grad=True)
    # The points were cast from one photo, whose head stood off the photos' mean like any other's:
    # the points turn and move as a whole for free, so the slides only mend the casting's errors.
    spin = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    lift = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.Adam(
        [{"params": [turns, spin]}, {"params": [shifts, lift], "lr": LEARNING_RATE * SHIFT_SCALE}],
        lr=LEARNING_RATE,
    )

    def place(turn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rotations = roma.rotvec_to_rotmat(turn - turn.mean(dim=0))  # [F, 2, 3, 3]
        spun = roma.rotvec_to_rotmat(spin)
        # The points slide along the skin, never off it: the Gaussians lie on this skin, and the
        # turns must bring *it* onto the landmarks (free in depth, a face set forward would trade
        # off against turns in the side views).
        along = shifts - (shifts * skin_normals).sum(-1, keepdim=True) * skin_normals
        world = torch.einsum("fij,kj->fki", rotations[:, 0] @ spun, base + along - head) + head + lift
        world = torch.einsum("fij,fkj->fki", rotations[:, 1], world - neck) + neck
        facing = torch.einsum("fij,kj->fki", rotations[:, 1] @ rotations[:, 0] @ spun, skin_normals)
        return world, facing

    def facing_weights(world: torch.Tensor, facing: torch.Tensor) -> torch.Tensor:
        towards = torch.nn.functional.normalize(positions[:, None] - world, dim=-1)
        return ((facing * towards).sum(-1) > MIN_FACING).double()

    # Adam's steps stay near the learning rate to the end: decayed, the turns settle to a small
    # fraction of a degree.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: FINAL_RATE ** (step / STEPS))
    for _ in range(STEPS):
        optimiser.zero_grad()
        world, facing = place(turns)
        weights = facing_weights(world.detach(), facing.detach())
        squared = ((project(world) - target) ** 2).sum(-1) / SIGMA_PX**2
        reprojection = (weights * squared / (1 + squared)).sum() / weights.sum().clamp_min(1)
        centred = turns - turns.mean(dim=0)
        prior = TURN_WEIGHT * math.degrees(1) ** 2 * (centred**2).sum((1, 2)).mean()
        prior = prior + SHIFT_WEIGHT * ((shifts / SHIFT_SCALE) ** 2).sum(-1).mean()
        (reprojection + prior).backward()
        optimiser.step()
        schedule.step()
    with torch.no_grad():
        world, facing = place(turns)
        counts = facing_weights(world, facing).sum(dim=1)
        centred = turns - turns.mean(dim=0)
    return centred.numpy().astype(np.float32), counts.numpy()
