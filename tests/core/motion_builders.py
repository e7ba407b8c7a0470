"""Motion-capture sources made by the tests: BVH files and SMPL-X / AMASS motion from known rotations.

A module of its own (as rig_builders.py): core and engine tests import it by name. Every source is
built at a rig's own joints (T-posed, renamed, rescaled), so that where the rig's retargeted
joints should be is known; the expected positions come from forward kinematics written here,
independent of the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lca_blender.formats.amass import SMPLX_JOINT_NAMES

BVH_TO_OURS = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # Y up -> Z up
SMPLX_TO_OURS = BVH_TO_OURS  # SMPL-X's rest frame is Y up, facing +Z too

SIDES = {"L": "Left", "R": "Right"}
LIMBS = {
    "upperleg01": "UpLeg", "lowerleg01": "Leg", "foot": "Foot", "toe3-1": "ToeBase",
    "clavicle": "Shoulder", "upperarm01": "Arm", "lowerarm01": "ForeArm", "wrist": "Hand",
}  # fmt: skip
FINGERS = {"finger1": "Thumb", "finger2": "Index", "finger3": "Middle", "finger4": "Ring", "finger5": "Pinky"}
HUMANIK_NAMES = {
    "Hips": "root", "Spine": "spine03", "Spine1": "spine02", "Spine2": "spine01", "Neck": "neck01",
    "Head": "head",
    **{f"{side_name}{limb}": f"{ours}.{side}" for side, side_name in SIDES.items()
       for ours, limb in LIMBS.items()},
    **{
        f"{side_name}Hand{finger}{phalanx}": f"{ours}-{phalanx}.{side}"
        for side, side_name in SIDES.items()
        for ours, finger in FINGERS.items()
        for phalanx in (1, 2, 3)
    },
}  # fmt: skip
"""BVH joint (HumanIK / Mixamo names without a prefix) -> the Anny joint it stands at."""
CMU_NAMES = {
    "Hips": "root", "LowerBack": "spine04", "Spine": "spine03", "Spine1": "spine01", "Neck": "neck01",
    "Neck1": "neck03", "Head": "head",
    **{f"{side_name}{limb}": f"{ours}.{side}" for side, side_name in SIDES.items()
       for ours, limb in LIMBS.items()},
    **{f"{side}Thumb": f"finger1-1.{side}" for side in SIDES},
    **{f"{side_name}FingerBase": f"finger3-1.{side}" for side, side_name in SIDES.items()},
}  # fmt: skip
"""The CMU database's BVH names (one finger joint and a thumb a hand) -> the Anny joint it stands at."""
CMU_HIP_JOINTS = {"LHipJoint": "LeftUpLeg", "RHipJoint": "RightUpLeg"}
"""CMU's joints between the hips and each thigh, which no Anny joint stands at."""


def turn_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking direction a onto direction b."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    axis, cos = np.cross(a, b), float(a @ b)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + cross + cross @ cross / (1 + cos)


def axis_rotation(axis: int, angle: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotations by `angle` (radians) about the X (0), Y (1) or Z (2) axis."""
    angle = np.asarray(angle, np.float64)
    cos, sin = np.cos(angle), np.sin(angle)
    first, second = [(1, 2), (2, 0), (0, 1)][axis]
    turn = np.broadcast_to(np.eye(3), angle.shape + (3, 3)).copy()
    turn[..., first, first] = cos
    turn[..., second, second] = cos
    turn[..., first, second] = -sin
    turn[..., second, first] = sin
    return turn


def rodrigues(axis_angles: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotation matrices of axis-angles [..., 3]."""
    angle = np.linalg.norm(axis_angles, axis=-1, keepdims=True)
    axis = axis_angles / np.maximum(angle, 1e-12)
    x, y, z = np.moveaxis(axis, -1, 0)
    zero = np.zeros_like(x)
    cross = np.stack(
        [np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2
    )
    angle = angle[..., None]
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


@dataclass
class BvhSkeleton:
    """A BVH skeleton at a rig's joints (metres, the project's frame), parents first."""

    names: list[str]
    parent: dict[str, str | None]
    position: dict[str, np.ndarray]
    end_site: dict[str, np.ndarray] = field(default_factory=dict)
    stands_at: dict[str, str] = field(default_factory=dict)  # BVH joint -> the rig joint it sits on

    @property
    def root(self) -> str:
        return self.names[0]

    def children(self, name: str) -> list[str]:
        return [child for child in self.names if self.parent[child] == name]

    def subtree(self, name: str) -> list[str]:
        order = [name]
        for child in self.children(name):
            order += self.subtree(child)
        return order

    def offset(self, name: str) -> np.ndarray:
        parent = self.parent[name]
        return self.position[name] - (self.position[parent] if parent else 0.0)

    def add_cmu_hip_joints(self) -> None:
        """Put CMU's hip joints halfway between the hips and each thigh (they do not turn)."""
        for hip, thigh in CMU_HIP_JOINTS.items():
            self.parent[hip] = self.root
            self.position[hip] = 0.5 * (self.position[self.root] + self.position[thigh])
            self.parent[thigh] = hip
            self.names.append(hip)
        self.names = self.subtree(self.root)

    def toes_on_the_floor(self) -> None:
        """End the toes at their tips on the floor (z = 0), as mocap skeletons do."""
        for name in self.end_site:
            if "ToeBase" in name:
                self.end_site[name][2] = -self.position[name][2]

    def t_pose(self) -> None:
        """Raise the arms straight out to the sides (the HumanIK-named arms)."""
        for side in ("Left", "Right"):
            outward = np.array([1.0 if side == "Left" else -1.0, 0.0, 0.0])
            for joint, child in ((f"{side}Arm", f"{side}ForeArm"), (f"{side}ForeArm", f"{side}Hand")):
                turn = turn_between(self.position[child] - self.position[joint], outward)
                for name in self.subtree(joint):
                    self.position[name] = self.position[joint] + turn @ (
                        self.position[name] - self.position[joint]
                    )
                    if name in self.end_site:
                        self.end_site[name] = turn @ self.end_site[name]


def skeleton_at_rig(rig, naming: dict[str, str]) -> BvhSkeleton:
    """A BVH skeleton with `naming`'s joints (BVH name -> rig joint) at the rig's joints; leaves end
    at their rig bone's tail."""
    by_rig = {ours: name for name, ours in naming.items()}
    names, parent, position = [], {}, {}
    for index, joint in enumerate(rig.joint_names):  # parents come first in a Rig
        if joint not in by_rig:
            continue
        ancestor = int(rig.joint_parents[index])
        while ancestor >= 0 and rig.joint_names[ancestor] not in by_rig:
            ancestor = int(rig.joint_parents[ancestor])
        name = by_rig[joint]
        names.append(name)
        parent[name] = None if ancestor < 0 else by_rig[rig.joint_names[ancestor]]
        position[name] = rig.bone_heads[index].astype(np.float64)
    skeleton = BvhSkeleton(names, parent, position, stands_at=dict(naming))
    for name in names:
        if not skeleton.children(name):
            index = rig.joint_index(naming[name])
            skeleton.end_site[name] = (rig.bone_tails[index] - rig.bone_heads[index]).astype(np.float64)
    skeleton.names = skeleton.subtree(skeleton.root)  # depth first, as BVH writes them
    return skeleton


def bvh_motion(
    skeleton: BvhSkeleton,
    frames: int,
    seed: int,
    amplitude_deg: float = 30.0,
    walk_m: tuple[float, float] = (0.3, -0.8),
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Smooth random joint angles {name: [T, 3] Z, X, Y degrees} and a hips path [T, 3] (metres,
    the project's frame): walking by `walk_m` (x, y) and bobbing."""
    rng = np.random.default_rng(seed)
    times = np.linspace(0.0, 1.0, frames)
    angles = {}
    for name in skeleton.names:
        phase, speed = rng.uniform(0, 2 * np.pi, 3), rng.uniform(1.0, 3.0, 3)
        hand = any(part in name for part in ("Hand", "Thumb", "Finger"))
        amplitude = amplitude_deg * (1.6 if hand else 1.0)
        angles[name] = (
            amplitude * rng.uniform(0.3, 1.0, 3) * np.sin(2 * np.pi * speed * times[:, None] + phase)
        )
        if name in CMU_HIP_JOINTS:  # as in CMU's files: the hip joints do not turn
            angles[name][:] = 0.0
    hips = skeleton.position[skeleton.root] + np.stack(
        [walk_m[0] * times, walk_m[1] * times, 0.04 * np.sin(4 * np.pi * times)], axis=1
    )
    return angles, hips


def bvh_text(
    skeleton: BvhSkeleton,
    angles: dict[str, np.ndarray],
    hips_path: np.ndarray,
    scale: float,
    frame_time: float = 1 / 30,
    root_at_origin: bool = False,
) -> str:
    """The BVH file of the skeleton and motion, `scale` file units a metre, Y up, Z X Y channels."""
    to_bvh = BVH_TO_OURS.T
    lines = ["HIERARCHY"]

    def write(name: str, depth: int) -> None:
        indent = "  " * depth
        rest = np.zeros(3) if (name == skeleton.root and root_at_origin) else skeleton.offset(name)
        offset = to_bvh @ rest * scale
        keyword = "ROOT" if skeleton.parent[name] is None else "JOINT"
        channels = "6 Xposition Yposition Zposition" if keyword == "ROOT" else "3"
        lines.extend(
            [
                f"{indent}{keyword} {name}",
                f"{indent}{{",
                f"{indent}  OFFSET {offset[0]:.6f} {offset[1]:.6f} {offset[2]:.6f}",
                f"{indent}  CHANNELS {channels} Zrotation Xrotation Yrotation",
            ]
        )
        for child in skeleton.children(name):
            write(child, depth + 1)
        if name in skeleton.end_site:
            end = to_bvh @ skeleton.end_site[name] * scale
            lines.extend(
                [
                    f"{indent}  End Site",
                    f"{indent}  {{",
                    f"{indent}    OFFSET {end[0]:.6f} {end[1]:.6f} {end[2]:.6f}",
                ]
            )
            lines.append(f"{indent}  }}")
        lines.append(f"{indent}}}")

    write(skeleton.root, 0)
    frames = len(hips_path)
    lines += ["MOTION", f"Frames: {frames}", f"Frame Time: {frame_time:.7f}"]
    for frame in range(frames):
        values = list(to_bvh @ hips_path[frame] * scale)
        for name in skeleton.names:
            values += list(angles[name][frame])
        lines.append(" ".join(f"{value:.6f}" for value in values))
    return "\n".join(lines) + "\n"


def bvh_joint_positions(
    skeleton: BvhSkeleton, angles: dict[str, np.ndarray], hips_path: np.ndarray
) -> dict[str, np.ndarray]:
    """Each joint's position [T, 3] (metres, the project's frame) under the motion: BVH forward
    kinematics (a joint turns by Rz Rx Ry of its channels, in its parent's frame)."""
    rotation, position = {}, {}
    for name in skeleton.names:
        z, x, y = np.radians(angles[name]).T
        local = axis_rotation(2, z) @ axis_rotation(0, x) @ axis_rotation(1, y)
        parent = skeleton.parent[name]
        if parent is None:
            rotation[name], position[name] = local, hips_path.copy()
        else:
            # Rotations are about the file's axes; turned into ours they are A R A^T.
            turned = BVH_TO_OURS @ rotation[parent] @ BVH_TO_OURS.T
            position[name] = position[parent] + turned @ skeleton.offset(name)
            rotation[name] = rotation[parent] @ local
    return position


SMPLX_NAMES = SMPLX_JOINT_NAMES
SMPLX_PARENTS = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)  # fmt: skip
_SMPLX_AT_ANNY = {
    "pelvis": "root", "spine1": "spine03", "spine2": "spine02", "spine3": "spine01", "neck": "neck01",
    "head": "head", "hip": "upperleg01", "knee": "lowerleg01", "ankle": "foot", "foot": "toe3-1",
    "collar": "clavicle", "shoulder": "upperarm01", "elbow": "lowerarm01", "wrist": "wrist",
    "eye_smplhf": "eye",
    **{f"{theirs}{k}": f"{ours}-{k}" for ours, theirs in
       (("finger1", "thumb"), ("finger2", "index"), ("finger3", "middle"), ("finger4", "ring"),
        ("finger5", "pinky"))
       for k in (1, 2, 3)},
}  # fmt: skip


def smplx_at_anny(name: str) -> str | None:
    """The Anny joint an SMPL-X joint stands at in `smplx_rest_at_rig` (None: the jaw)."""
    if name in _SMPLX_AT_ANNY:
        return _SMPLX_AT_ANNY[name]
    side, _, part = name.partition("_")
    if part not in _SMPLX_AT_ANNY:
        return None
    return f"{_SMPLX_AT_ANNY[part]}.{'L' if side == 'left' else 'R'}"


def smplx_rest_at_rig(rig) -> np.ndarray:
    """[55, 3] an SMPL-X rest skeleton (SMPL-X's frame: Y up, facing +Z) at an Anny rig's joints,
    T-posed (arms straight out); the jaw in front of the head."""
    heads = {name: rig.bone_heads[rig.joint_index(name)].astype(np.float64) for name in rig.joint_names}
    position = {}
    for name in SMPLX_NAMES:
        anny = smplx_at_anny(name)
        position[name] = heads["head"] + np.array([0.0, -0.07, -0.04]) if anny is None else heads[anny].copy()

    def subtree(index: int) -> list[int]:
        order = [index]
        for child in (j for j, parent in enumerate(SMPLX_PARENTS) if parent == index):
            order += subtree(child)
        return order

    for side, sign in (("left", 1.0), ("right", -1.0)):
        for joint, child in ((f"{side}_shoulder", f"{side}_elbow"), (f"{side}_elbow", f"{side}_wrist")):
            turn = turn_between(position[child] - position[joint], np.array([sign, 0.0, 0.0]))
            for index in subtree(SMPLX_NAMES.index(joint)):
                name = SMPLX_NAMES[index]
                position[name] = position[joint] + turn @ (position[name] - position[joint])
    return np.array([position[name] for name in SMPLX_NAMES]) @ SMPLX_TO_OURS


def smplx_joint_positions(rest_joints: np.ndarray, axis_angles: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """[T, 55, 3] SMPL-X's joints in the world (AMASS's, Z up) as the `smplx` package's forward
    kinematics puts them: G_j = G_parent R_j, joint_j = joint_parent + G_parent (J_j - J_parent),
    the pelvis at J_0 + trans."""
    local = rodrigues(axis_angles)
    world = np.empty_like(local)
    joints = np.empty(axis_angles.shape)
    for joint, parent in enumerate(SMPLX_PARENTS):
        if parent < 0:
            world[:, joint] = local[:, joint]
            joints[:, joint] = rest_joints[joint] + trans
        else:
            world[:, joint] = world[:, parent] @ local[:, joint]
            joints[:, joint] = joints[:, parent] + world[:, parent] @ (
                rest_joints[joint] - rest_joints[parent]
            )
    return joints


def amass_motion(frames: int, seed: int, rest_joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Known SMPL-X rotations [T, 55, 3] (a body upright in AMASS's Z-up world, turning and
    walking; every joint, fingers and jaw included) and `trans` [T, 3]."""
    rng = np.random.default_rng(seed)
    times = np.linspace(0.0, 1.0, frames)[:, None]
    phase, speed = rng.uniform(0, 2 * np.pi, (55, 3)), rng.uniform(0.5, 2.0, (55, 3))
    axis_angles = (
        0.35 * rng.uniform(0.3, 1.0, (55, 3)) * np.sin(2 * np.pi * speed[None] * times[..., None] + phase)
    )
    upright = rodrigues(np.array([np.pi / 2, 0.0, 0.0]))  # SMPL-X's Y up onto the world's Z up
    yaw = rodrigues(np.stack([np.zeros(frames), np.zeros(frames), 0.8 * times[:, 0]], axis=1))
    root = yaw @ upright @ rodrigues(axis_angles[:, 0] * 0.3)
    axis_angles[:, 0] = _axis_angle(root)
    axis_angles[:, 22, 0] = np.abs(axis_angles[:, 22, 0])  # the jaw opens, it does not bite through
    height = rest_joints[0, 1] - rest_joints[:, 1].min() + 0.09  # the pelvis above the ankles and soles
    trans = np.concatenate(
        [0.6 * times, -0.4 * times, height - rest_joints[0, 2] + 0.03 * np.sin(6 * times)], axis=1
    )
    return axis_angles, trans


def _axis_angle(matrices: np.ndarray) -> np.ndarray:
    """[..., 3] axis-angles of rotation matrices [..., 3, 3] (angles below pi)."""
    cos = np.clip((np.trace(matrices, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    axis = np.stack(
        [
            matrices[..., 2, 1] - matrices[..., 1, 2],
            matrices[..., 0, 2] - matrices[..., 2, 0],
            matrices[..., 1, 0] - matrices[..., 0, 1],
        ],
        -1,
    )
    return axis / np.maximum(2 * np.sin(angle)[..., None], 1e-12) * angle[..., None]
