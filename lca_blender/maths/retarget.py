"""Motion retargeting in numpy: one skeleton's animation onto another's bones, relative to each rest.

Two skeletons rarely share a rest pose (a T-posed mocap actor, an A-posed avatar), bone frames or
proportions, so copying local rotations moves the wrong way. What is carried over instead is how
each bone turns in the world away from its own rest:

- A whole-body alignment `G`: the turn about the vertical (+Z) that takes the source's facing at
  rest onto the target's (forward = up x (right thigh - left thigh)).
- Per mapped bone j (source bone k), a rest alignment `C_j`: the rotation that best takes the
  target's rest segments from j to its nearest mapped descendants onto the source's segments
  between the same joints (several children: the least-squares rotation, Kabsch; one child or
  children all in one direction: the shortest arc). A bone with no mapped child (a head, a
  fingertip) keeps its rest turn from its nearest mapped ancestor: it takes that one's alignment.
- Per frame, the source bone's turn from rest in the world, D_k(t) = G W_k(t) S_k^-1 G^-1
  (rotation parts), gives the target bone's world rotation R_j(t) = D_k(t) C_j P_j. A last
  correction, the rotation that best takes the segments R_j(t) predicts onto where the source's
  segments are at that frame, makes the mapped joints' directions exact even when the source has
  unmapped bones of its own that move (it is the identity when it has none).
- Unmapped target joints keep their rest turn relative to their parent (their local rotation is
  the identity), so a chain of twist bones follows its mapped ancestor rigidly.
- Root motion: the source hips' displacement from rest, turned by G and scaled by the height
  ratio (the target's hip height over the source's, each from the hips down to the mean of the
  ankles at rest). A source whose rest skeleton does not stand on its floor (CMU's BVH files put
  the hips at the origin; SMPL-X's rest has the pelvis there) is taken as standing there, its
  lowest point as high above the floor as the target's (scaled), so its root height is not lost.

Frames follow the project's conventions (`avatar.py`): Z up, rest frames with Y along the bone,
local rotations as Blender's pose bones hold them (W_j = W_parent P_parent^-1 P_j L_j).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PoseError
from .rotations import matrix_to_quaternion

UP = np.array([0.0, 0.0, 1.0])
MIN_SEGMENT = 1e-4
"""Metres (or the source's units): shorter segments between mapped joints give no direction."""
NOT_STANDING = 0.25
"""A rest skeleton whose lowest point is further from its floor than this share of its hip height
is not standing on it (see the module docstring)."""


@dataclass(frozen=True)
class Skeleton:
    """Bones at rest: names, parents and rest frames in the skeleton's space (Z up)."""

    names: tuple[str, ...]
    parents: np.ndarray  # [J] int, -1 for a root
    rest: np.ndarray  # [J, 4, 4] float64 rest frames (Y along the bone), rotation parts orthonormal
    floor: float = 0.0  # height (z) of the ground its motion stands on
    # Height of its soles at rest, or the nearest stand-in (its lowest bone point); None: lowest head.
    lowest: float | None = None

    def __post_init__(self) -> None:
        count = len(self.names)
        if count == 0:
            raise PoseError("A skeleton needs at least one bone.")
        if np.shape(self.parents) != (count,) or np.shape(self.rest) != (count, 4, 4):
            raise PoseError(f"A skeleton of {count} bones needs {count} parents and {count} rest frames.")
        if not np.isfinite(self.rest).all():
            raise PoseError("A skeleton's rest frames contain NaN or infinite values.")
        parents = np.asarray(self.parents)
        if ((parents < -1) | (parents >= count)).any() or (parents == np.arange(count)).any():
            raise PoseError("A skeleton's bone parents must be other bones of it, or -1.")
        _parents_first(parents)  # raises on a loop

    @property
    def heads(self) -> np.ndarray:
        return self.rest[:, :3, 3]

    @property
    def lowest_point(self) -> float:
        return float(self.heads[:, 2].min()) if self.lowest is None else float(self.lowest)


@dataclass(frozen=True)
class Correspondence:
    """Which target joint follows which source joint, and the joints the whole-body alignment uses."""

    target: np.ndarray  # [M] int target joint indices, each at most once
    source: np.ndarray  # [M] int source joint indices (a source joint may drive several targets)
    hips: int  # the pair (index into target/source) of the hips: root motion and height
    thighs: tuple[int, int] | None = None  # pairs of the left and right thighs: the facing
    feet: tuple[int, int] | None = None  # pairs of the left and right ankles: the hip height

    def __post_init__(self) -> None:
        target, source = np.asarray(self.target), np.asarray(self.source)
        if target.ndim != 1 or target.shape != source.shape or not len(target):
            raise PoseError("A correspondence needs as many source joints as target joints, at least one.")
        if len(set(target.tolist())) != len(target):
            raise PoseError("Each target joint may follow only one source joint.")
        pairs = [self.hips, *(self.thighs or ()), *(self.feet or ())]
        if any(not 0 <= pair < len(target) for pair in pairs):
            raise PoseError("The hips, thighs and feet must be among the corresponding pairs.")


@dataclass(frozen=True)
class RetargetedMotion:
    """The target skeleton's animation: local rotations and the root's offset, frame by frame."""

    rotations: np.ndarray  # [T, J, 4] float64 local rotations (w, x, y, z); identity = rest
    translations: np.ndarray  # [T, 3] float64 root offset in the target's space (world = rest + this)
    driven: np.ndarray  # [J] bool: joints the motion sets (mapped, and unmapped ones between them)
    height_ratio: float  # target hip height / source hip height: how root motion was scaled


def retarget(
    source: Skeleton,
    source_poses: np.ndarray,
    target: Skeleton,
    correspondence: Correspondence,
    root_motion: bool = True,
) -> RetargetedMotion:
    """The target's animation that follows `source_poses` [T, Js, 4, 4] (the source bones' posed
    frames in the source's space, the same space as its rest frames; a uniform scale in them is
    allowed), see the module docstring. Raises PoseError for skeletons that cannot be aligned."""
    poses = np.asarray(source_poses, np.float64)
    if poses.ndim != 4 or poses.shape[1:] != (len(source.names), 4, 4) or not len(poses):
        raise PoseError(
            f"The source motion must hold [frames, {len(source.names)}, 4, 4] bone frames, "
            f"found {poses.shape}."
        )
    if not np.isfinite(poses).all():
        raise PoseError("The source motion contains NaN or infinite values.")
    pairs_target = np.asarray(correspondence.target, np.int64)
    pairs_source = np.asarray(correspondence.source, np.int64)
    if pairs_target.max() >= len(target.names) or pairs_source.max() >= len(source.names):
        raise PoseError("The correspondence names joints the skeletons do not have.")

    facing = _facing_turn(source, target, correspondence)
    ratio = _height_ratio(source, target, correspondence)
    source_rest = _rotations(source.rest)
    target_rest = _rotations(target.rest)
    posed = _rotations(poses)  # [T, Js, 3, 3]
    posed_heads = poses[:, :, :3, 3] @ facing.T  # [T, Js, 3] in the target's orientation
    rest_heads = source.heads @ facing.T

    source_of = dict(zip(pairs_target.tolist(), pairs_source.tolist(), strict=True))
    children = _mapped_children(target.parents, set(source_of))
    order = _parents_first(target.parents)
    alignments: dict[int, np.ndarray] = {}
    world: dict[int, np.ndarray] = {}
    for joint in (int(joint) for joint in order if int(joint) in source_of):
        k = source_of[joint]
        # Rest alignment: target rest segments onto the source's, both in the target's orientation.
        kids = [child for child in children[joint] if source_of[child] != k]
        target_segments = target.heads[kids] - target.heads[joint]
        source_segments = rest_heads[[source_of[child] for child in kids]] - rest_heads[k]
        usable = (np.linalg.norm(target_segments, axis=1) > MIN_SEGMENT) & (
            np.linalg.norm(source_segments, axis=1) > MIN_SEGMENT
        )
        target_segments, source_segments = target_segments[usable], source_segments[usable]
        kids = [kid for kid, use in zip(kids, usable, strict=True) if use]
        ancestor = _mapped_ancestor(target.parents, joint, alignments)
        if len(kids):
            alignment = _best_rotation(target_segments, source_segments)
        elif ancestor is not None:  # a leaf keeps its rest turn from its mapped ancestor's bone
            alignment = alignments[ancestor]
        else:  # a lone bone: the bones' own axes
            alignment = _best_rotation(target_rest[joint][None, :, 1], (facing @ source_rest[k])[None, :, 1])
        alignments[joint] = alignment
        turn = facing @ posed[:, k] @ source_rest[k].T @ facing.T  # [T, 3, 3] D_k(t)
        rotation = turn @ (alignment @ target_rest[joint])  # [T, 3, 3]
        if len(kids):
            predicted = np.einsum("tij,cj->tci", turn @ alignment, target_segments)
            actual = posed_heads[:, [source_of[kid] for kid in kids]] - posed_heads[:, k : k + 1]
            rotation = _best_rotation(predicted, actual) @ rotation
        world[joint] = rotation

    frame_count = len(poses)
    driven = _driven(target.parents, set(source_of))
    world_all = np.empty((frame_count, len(target.names), 3, 3))
    local = np.empty_like(world_all)
    for joint in order:
        parent = int(target.parents[joint])
        relative = target_rest[joint] if parent < 0 else target_rest[parent].T @ target_rest[joint]
        # Where the joint would be with the identity local rotation: its rest turn from its parent.
        carried = relative if parent < 0 else world_all[:, parent] @ relative
        world_all[:, joint] = world.get(joint, carried)
        local[:, joint] = np.swapaxes(carried, -1, -2) @ world_all[:, joint]

    translations = np.zeros((frame_count, 3))
    if root_motion:
        hips = correspondence.hips
        reference = rest_heads[pairs_source[hips]].copy()
        reference[2] -= _standing_offset(source, target, ratio, hip_height(source, correspondence, "source"))
        translations = ratio * (posed_heads[:, pairs_source[hips]] - reference)
    rotations = matrix_to_quaternion(local)
    _same_hemisphere(rotations)
    return RetargetedMotion(
        rotations=rotations, translations=translations, driven=driven, height_ratio=float(ratio)
    )


def hip_height(skeleton: Skeleton, correspondence: Correspondence, side: str) -> float:
    """The hips' height above the mean of the ankles at rest (`side` "source" or "target"); without
    ankles, the height of the hips above the skeleton's lowest point."""
    joints = np.asarray(correspondence.source if side == "source" else correspondence.target)
    heads = skeleton.heads
    hips = heads[joints[correspondence.hips], 2]
    if correspondence.feet is not None:
        feet = heads[joints[list(correspondence.feet)], 2].mean()
    else:
        feet = skeleton.lowest_point
    height = float(hips - feet)
    if not height > MIN_SEGMENT:
        raise PoseError(
            f"The {side} skeleton's hips are not above its feet at rest (Z is up), so its height "
            "cannot be measured; is it lying down or upside down?"
        )
    return height


def _height_ratio(source: Skeleton, target: Skeleton, correspondence: Correspondence) -> float:
    return hip_height(target, correspondence, "target") / hip_height(source, correspondence, "source")


def _standing_offset(source: Skeleton, target: Skeleton, ratio: float, hip_height_source: float) -> float:
    """How far the source's rest skeleton hangs above (+) or below (-) where it would stand on its
    floor, when it is not standing on it (0 when it is). Standing, its lowest point is taken to
    clear the floor as the target's does, in proportion (when both are the lowest bone points, a
    toe's end above the sole)."""
    offset = source.lowest_point - source.floor
    if abs(offset) <= NOT_STANDING * hip_height_source:
        return 0.0
    return offset - (target.lowest_point - target.floor) / ratio


def _facing_turn(source: Skeleton, target: Skeleton, correspondence: Correspondence) -> np.ndarray:
    """[3, 3] the turn about +Z taking the source's facing at rest onto the target's."""
    if correspondence.thighs is None:
        return np.eye(3)
    left, right = correspondence.thighs
    angles = []
    for skeleton, joints in ((source, correspondence.source), (target, correspondence.target)):
        across = skeleton.heads[joints[right]] - skeleton.heads[joints[left]]
        forward = np.cross(UP, across)
        if np.hypot(forward[0], forward[1]) < MIN_SEGMENT:
            return np.eye(3)
        angles.append(np.arctan2(forward[1], forward[0]))
    angle = angles[1] - angles[0]
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])


def _rotations(frames: np.ndarray) -> np.ndarray:
    """[..., 3, 3] the rotation parts of frames [..., 4, 4] with any uniform scale taken out."""
    linear = np.asarray(frames, np.float64)[..., :3, :3]
    return linear / np.linalg.norm(linear, axis=-2, keepdims=True)


def _best_rotation(vectors_from: np.ndarray, vectors_to: np.ndarray) -> np.ndarray:
    """[..., 3, 3] the rotation taking the vectors [..., C, 3] best onto `vectors_to` (directions
    only, each weighted alike): Kabsch when they span a plane, the shortest arc between their mean
    directions when they all point one way."""
    # A segment that shrinks to nothing in some frame gives no direction, and no NaN either.
    unit_from = vectors_from / np.maximum(np.linalg.norm(vectors_from, axis=-1, keepdims=True), 1e-12)
    unit_to = vectors_to / np.maximum(np.linalg.norm(vectors_to, axis=-1, keepdims=True), 1e-12)
    covariance = np.einsum("...ci,...cj->...ij", unit_to, unit_from)
    u, _, vt = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(u @ vt))
    sign = np.where(sign == 0, 1.0, sign)
    correction = np.broadcast_to(np.eye(3), u.shape).copy()
    correction[..., 2, 2] = sign
    kabsch = u @ correction @ vt
    # Directions that all lie along one line fix no turn about it: Kabsch is then arbitrary.
    spread_from = np.linalg.svd(unit_from, compute_uv=False)
    spread_to = np.linalg.svd(unit_to, compute_uv=False)
    if spread_from.shape[-1] < 2:
        line = np.ones(spread_from.shape[:-1], bool)
    else:
        line = (spread_from[..., 1] < 0.05 * spread_from[..., 0]) | (
            spread_to[..., 1] < 0.05 * spread_to[..., 0]
        )
    if not line.any():
        return kabsch
    arc = _shortest_arc(unit_from.mean(axis=-2), unit_to.mean(axis=-2))
    return np.where(line[..., None, None], arc, kabsch)


def _shortest_arc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[..., 3, 3] the smallest rotation taking direction a [..., 3] onto direction b [..., 3]."""
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    axis = np.cross(a, b)
    sin = np.linalg.norm(axis, axis=-1)
    cos = np.einsum("...i,...i->...", a, b)
    # Opposite directions: a half turn about any axis perpendicular to a.
    helper = np.where(np.abs(a[..., :1]) < 0.9, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    fallback = np.cross(a, helper)
    axis = np.where((sin < 1e-9)[..., None] & (cos < 0)[..., None], fallback, axis)
    axis_norm = np.linalg.norm(axis, axis=-1, keepdims=True)
    axis = np.where(axis_norm > 1e-12, axis / np.maximum(axis_norm, 1e-12), 0.0)
    angle = np.arctan2(sin, cos)
    x, y, z = np.moveaxis(axis, -1, 0)
    zero = np.zeros_like(x)
    cross_matrix = np.stack(
        [np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2
    )
    sin_angle, cos_angle = np.sin(angle)[..., None, None], np.cos(angle)[..., None, None]
    return np.eye(3) + sin_angle * cross_matrix + (1 - cos_angle) * cross_matrix @ cross_matrix


def _parents_first(parents: np.ndarray) -> np.ndarray:
    """The joints ordered by depth, so every parent comes before its children; PoseError on a loop."""
    parents = np.asarray(parents, np.int64)
    depth = np.zeros(len(parents), np.int64)
    for joint in range(len(parents)):
        ancestor, steps = int(parents[joint]), 0
        while ancestor >= 0:
            steps += 1
            if steps > len(parents):
                raise PoseError("A skeleton's bone parents form a loop.")
            ancestor = int(parents[ancestor])
        depth[joint] = steps
    return np.argsort(depth, kind="stable")


def _mapped_children(parents: np.ndarray, mapped: set[int]) -> dict[int, list[int]]:
    """For each mapped joint, the mapped joints whose nearest mapped ancestor it is."""
    children: dict[int, list[int]] = {joint: [] for joint in mapped}
    for joint in mapped:
        ancestor = int(parents[joint])
        while ancestor >= 0 and ancestor not in mapped:
            ancestor = int(parents[ancestor])
        if ancestor >= 0:
            children[ancestor].append(joint)
    return children


def _mapped_ancestor(parents: np.ndarray, joint: int, mapped: dict[int, np.ndarray]) -> int | None:
    ancestor = int(parents[joint])
    while ancestor >= 0 and ancestor not in mapped:
        ancestor = int(parents[ancestor])
    return ancestor if ancestor >= 0 else None


def _driven(parents: np.ndarray, mapped: set[int]) -> np.ndarray:
    """[J] bool: the mapped joints and every ancestor of one (whose rest the mapping assumes)."""
    driven = np.zeros(len(parents), bool)
    for joint in mapped:
        while joint >= 0 and not driven[joint]:
            driven[joint] = True
            joint = int(parents[joint])
    return driven


def _same_hemisphere(quaternions: np.ndarray) -> None:
    """Flip quaternions [T, J, 4] in place so that each is on the side of the previous frame's."""
    for frame in range(1, len(quaternions)):
        flip = np.einsum("ji,ji->j", quaternions[frame], quaternions[frame - 1]) < 0
        quaternions[frame, flip] *= -1.0
