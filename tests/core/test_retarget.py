"""Retargeting maths, bone maps, and the BVH and AMASS readers, on a small synthetic humanoid.

The source skeletons are built at the target's own joints (renamed, T-posed, rescaled, turned to
face elsewhere), so the retargeted joints must land where the source's joints are; the expected
positions come from forward kinematics in `motion_builders.py`, not from the code under test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from motion_builders import (
    BVH_TO_OURS,
    HUMANIK_NAMES,
    axis_rotation,
    bvh_joint_positions,
    bvh_motion,
    bvh_text,
    skeleton_at_rig,
)

from lca_blender.errors import AvatarFileError, PoseError
from lca_blender.formats.amass import SMPLX_JOINT_NAMES, read_amass
from lca_blender.formats.animation import AnimationClip
from lca_blender.formats.bone_map import (
    BoneMap,
    best_bone_map,
    bone_map_from_json,
    builtin_bone_map,
    correspondence,
    read_bone_map,
    resolve,
    write_bone_map,
)
from lca_blender.formats.bvh import bvh_poses, bvh_skeleton, parse_bvh, read_bvh
from lca_blender.formats.motion import resample_clip, select_frames
from lca_blender.maths.retarget import Correspondence, Skeleton, retarget
from lca_blender.maths.rotations import bone_matrix, quaternion_to_matrix

FRAMES = 24


@dataclass
class Humanoid:
    """A small A-posed humanoid with Anny's joint names (what `skeleton_at_rig` reads of a Rig)."""

    joint_names: list[str]
    joint_parents: np.ndarray
    bone_heads: np.ndarray
    bone_tails: np.ndarray
    rolls: np.ndarray

    def joint_index(self, name: str) -> int:
        return self.joint_names.index(name)

    @property
    def skeleton(self) -> Skeleton:
        rest = bone_matrix(self.bone_heads, self.bone_tails, self.rolls)
        return Skeleton(tuple(self.joint_names), self.joint_parents.copy(), rest)


def humanoid(seed: int = 0) -> Humanoid:
    """Hips at 0.9 m, legs, a five-bone spine, A-posed arms bent at the elbows, five three-bone
    fingers a hand; bone rolls at random (retargeting must not depend on bone frames)."""
    names, parents, heads = [], [], []

    def add(name: str, parent: str | None, head) -> None:
        names.append(name)
        parents.append(-1 if parent is None else names.index(parent))
        heads.append(np.asarray(head, np.float64))

    add("root", None, (0, 0, 0.9))
    for index, (name, height) in enumerate(
        (("spine04", 0.97), ("spine03", 1.04), ("spine02", 1.12), ("spine01", 1.25))
    ):
        add(name, "root" if index == 0 else names[-1], (0, 0.01 * index, height))
    add("neck01", "spine01", (0, 0.0, 1.40))
    add("head", "neck01", (0, -0.02, 1.50))
    for side, sign in (("L", 1.0), ("R", -1.0)):
        add(f"upperleg01.{side}", "root", (sign * 0.1, 0, 0.88))
        add(f"lowerleg01.{side}", f"upperleg01.{side}", (sign * 0.12, -0.02, 0.48))
        add(f"foot.{side}", f"lowerleg01.{side}", (sign * 0.14, 0.0, 0.08))
        add(f"toe3-1.{side}", f"foot.{side}", (sign * 0.15, -0.14, 0.02))
        add(f"clavicle.{side}", "spine01", (sign * 0.03, -0.02, 1.32))
        add(f"upperarm01.{side}", f"clavicle.{side}", (sign * 0.17, 0.0, 1.30))
        add(f"lowerarm01.{side}", f"upperarm01.{side}", (sign * 0.33, 0.0, 1.08))
        add(f"wrist.{side}", f"lowerarm01.{side}", (sign * 0.42, -0.17, 0.98))
        for finger, (spread, length) in enumerate(
            ((-0.03, 0.03), (-0.015, 0.04), (0.0, 0.045), (0.015, 0.04), (0.03, 0.03))
        ):
            base = np.array([sign * (0.45 + 0.01 * (finger == 0)), -0.21 + spread, 0.95 - 0.01 * finger])
            along = np.array([sign * 0.3, -0.8, -0.5]) if finger else np.array([-sign * 0.5, -0.8, -0.3])
            along /= np.linalg.norm(along)
            for phalanx in (1, 2, 3):
                parent = f"wrist.{side}" if phalanx == 1 else f"finger{finger + 1}-{phalanx - 1}.{side}"
                add(f"finger{finger + 1}-{phalanx}.{side}", parent, base + (phalanx - 1) * length * along)
    heads_array = np.array(heads)
    parents_array = np.array(parents)
    tails = heads_array.copy()
    for joint in range(len(names)):
        children = np.flatnonzero(parents_array == joint)
        if len(children) == 1:
            tails[joint] = heads_array[children[0]]
        else:  # forks and leaves: continue the parent's direction (up for the root)
            parent = parents_array[joint]
            step = np.array([0, 0, 0.1]) if parent < 0 else heads_array[joint] - heads_array[parent]
            tails[joint] = heads_array[joint] + 0.5 * step
    rolls = np.random.default_rng(seed).uniform(-np.pi, np.pi, len(names))
    return Humanoid(names, parents_array, heads_array, tails, rolls)


def forward_kinematics(skeleton: Skeleton, rotations: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """[J, 3] posed joint positions (W_j = W_parent P_parent^-1 P_j L_j, the root offset in the world)."""
    rest = skeleton.rest
    world = np.empty_like(rest)
    for joint, parent in enumerate(skeleton.parents):
        local = np.eye(4)
        local[:3, :3] = quaternion_to_matrix(rotations[joint])
        if parent < 0:
            offset = np.eye(4)
            offset[:3, 3] = translation
            world[joint] = offset @ rest[joint] @ local
        else:
            world[joint] = world[parent] @ np.linalg.inv(rest[parent]) @ rest[joint] @ local
    return world[:, :3, 3]


def _source(target: Humanoid, scale: float, facing_deg: float, seed: int, root_at_origin: bool = False):
    """A T-posed, renamed, scaled source at the target's joints, turned to face `facing_deg` away,
    with its motion; returns (BVH text, the source skeleton, joint positions over the frames)."""
    skeleton = skeleton_at_rig(
        target, {name: ours for name, ours in HUMANIK_NAMES.items() if ours in target.joint_names}
    )
    skeleton.t_pose()
    turn = axis_rotation(2, np.radians(facing_deg))
    for name in skeleton.names:
        skeleton.position[name] = turn @ skeleton.position[name]
        if name in skeleton.end_site:
            skeleton.end_site[name] = turn @ skeleton.end_site[name]
    angles, hips = bvh_motion(skeleton, FRAMES, seed)
    text = bvh_text(skeleton, angles, hips, scale, root_at_origin=root_at_origin)
    return text, skeleton, bvh_joint_positions(skeleton, angles, hips), turn


@pytest.mark.parametrize(
    ("scale", "facing_deg", "root_at_origin"),
    [(100.0, 0.0, False), (115.0, 90.0, False), (1.0, -150.0, True)],
    ids=["centimetres", "taller-facing-sideways", "metres-hips-at-origin"],
)
def test_a_bvh_source_puts_the_targets_joints_where_its_own_are(scale, facing_deg, root_at_origin):
    target = humanoid()
    text, source, positions, turn = _source(target, scale, facing_deg, seed=5, root_at_origin=root_at_origin)
    bvh = parse_bvh(text)
    skeleton = bvh_skeleton(bvh)
    bone_map = best_bone_map(skeleton.names)
    assert bone_map.name == "Mixamo"
    pairs = correspondence(bone_map, skeleton.names, target.joint_names)
    motion = retarget(skeleton, bvh_poses(bvh, skeleton), target.skeleton, pairs)
    assert motion.height_ratio == pytest.approx(1.0 / scale, rel=1e-6)  # the same body, in file units
    rest_hips = source.position[source.root].copy()
    if root_at_origin:
        # The source's rest hangs from its hips at the origin; standing, its lowest point would be
        # as high above the floor as the target's (that is the assumption retargeting makes).
        rest_hips = np.array([0.0, 0.0, target.skeleton.lowest_point - skeleton.lowest_point])
    errors = []
    for frame in range(FRAMES):
        posed = forward_kinematics(target.skeleton, motion.rotations[frame], motion.translations[frame])
        for name in source.names:
            expected = target.bone_heads[0] + turn.T @ (positions[name][frame] - rest_hips)
            errors.append(np.linalg.norm(posed[target.joint_index(source.stands_at[name])] - expected))
    assert np.median(errors) < 1e-4 and np.max(errors) < 5e-3
    driven = {target.joint_names[index] for index in np.flatnonzero(motion.driven)}
    assert {"finger2-3.L", "wrist.R", "root", "spine04"} <= driven  # spine04: between mapped joints


def test_unmapped_source_bones_that_move_are_corrected_for():
    target = humanoid()
    naming = {name: ours for name, ours in HUMANIK_NAMES.items() if ours in target.joint_names}
    naming.pop("Spine1")  # the source's Spine1 moves, but no target joint follows it
    skeleton = skeleton_at_rig(target, naming)
    angles, hips = bvh_motion(skeleton, FRAMES, seed=2)
    full = skeleton_at_rig(
        target, {name: ours for name, ours in HUMANIK_NAMES.items() if ours in target.joint_names}
    )
    full_angles, _ = bvh_motion(full, FRAMES, seed=9)
    angles_with_spine1 = {**angles, "Spine1": full_angles["Spine1"]}
    text = bvh_text(full, angles_with_spine1, hips, 100.0)
    bvh = parse_bvh(text)
    source = bvh_skeleton(bvh)
    pairs = correspondence(builtin_bone_map("mixamo"), source.names, target.joint_names)
    motion = retarget(source, bvh_poses(bvh, source), target.skeleton, pairs)
    positions = bvh_joint_positions(full, angles_with_spine1, hips)
    neck = target.joint_index("neck01")
    for frame in range(FRAMES):
        posed = forward_kinematics(target.skeleton, motion.rotations[frame], motion.translations[frame])
        expected = target.bone_heads[0] + positions["Neck"][frame] - full.position["Hips"]
        # Spine2 follows through the moving Spine1: the neck still lands on the source's.
        assert np.linalg.norm(posed[neck] - expected) < 0.01


def test_the_bvh_reader_matches_forward_kinematics_written_independently():
    target = humanoid()
    text, source, positions, _ = _source(target, 100.0, 0.0, seed=1)
    bvh = parse_bvh(text)
    assert bvh.names == source.names and bvh.frame_count == FRAMES
    assert bvh.frame_rate == pytest.approx(30.0, rel=1e-5)
    poses = bvh_poses(bvh)
    for index, name in enumerate(bvh.names):
        np.testing.assert_allclose(poses[:, index, :3, 3] / 100.0, positions[name], atol=1e-6)
    rotations = poses[:, :, :3, :3]
    np.testing.assert_allclose(
        rotations @ np.swapaxes(rotations, -1, -2), np.broadcast_to(np.eye(3), rotations.shape), atol=1e-9
    )


GOOD_BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 0 90 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Spine
  {
    OFFSET 0 10 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 10 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.0333333
0.000 90.000 0.000 0.000 0.000 0.000 0.000 0.000 0.000
0.000 91.000 0.000 0.000 0.000 10.000 0.000 0.000 0.000
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # What made the bvhio library loop forever: the motion ends before its frame count.
        (GOOD_BVH.replace("Frames: 2", "Frames: 3"), "ends after 2 of its 3 frames"),
        (GOOD_BVH.replace("Frames: 2", "Frames: 900000000"), "claims 900000000 frames"),
        (GOOD_BVH.replace("10.000 0.000 0.000 0.000", "10.000 0.000 0.000"), "line 20.*8 values.*9 channels"),
        (GOOD_BVH.replace("91.000 0.000", "91.000 zero"), "not a number"),
        (GOOD_BVH + "0 0 0 0 0 0 0 0 0\n", "more motion"),
        (GOOD_BVH.replace("HIERARCHY", "hello"), "start with HIERARCHY"),
        (GOOD_BVH.split("MOTION")[0], "no MOTION"),
        (GOOD_BVH.replace("CHANNELS 3 Zrotation", "CHANNELS 4 Zrotation"), "CHANNELS"),
        (
            GOOD_BVH.replace(
                "CHANNELS 3 Zrotation Xrotation Yrotation", "CHANNELS 3 Zrotation Xrotation Wobble"
            ),
            "CHANNELS",
        ),
        (GOOD_BVH.replace("    OFFSET 0 10 0\n    CHANNELS", "    CHANNELS"), "'Spine' has no OFFSET"),
        (GOOD_BVH.replace("OFFSET 0 90 0", "OFFSET 0 nan 0"), "OFFSET needs 3 finite"),
        (GOOD_BVH.replace("Frame Time: 0.0333333", "Frame Time: 0"), "frame time"),
        (GOOD_BVH.replace("90.000", "inf"), "NaN or infinite"),
        (
            "HIERARCHY\n"
            + "ROOT a\n{\nOFFSET 0 0 0\nCHANNELS 0\n"
            + "JOINT b\n{\nOFFSET 0 1 0\nCHANNELS 0\n" * 300,
            "nested too deeply",
        ),
    ],
    ids=lambda value: value[:24] if isinstance(value, str) and "\n" not in value else None,
)
def test_bvh_files_that_are_not_are_refused_naming_why(text: str, message: str):
    with pytest.raises(AvatarFileError, match=message):
        parse_bvh(text, "take.bvh")


def test_bvh_files_are_read_bounded(tmp_path):
    path = tmp_path / "take.bvh"
    path.write_bytes(b"HIERARCHY\n\0\0\0")
    with pytest.raises(AvatarFileError, match="binary"):
        read_bvh(path)
    with pytest.raises(AvatarFileError, match="Cannot read"):
        read_bvh(tmp_path)  # a folder
    path.write_text(GOOD_BVH)
    assert read_bvh(path).motion[1, 1] == 91.0


def _amass_arrays(frames: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "poses": rng.normal(0, 0.2, (frames, 165)),
        "trans": rng.normal(0, 0.1, (frames, 3)),
        "mocap_frame_rate": np.array(120.0),
        "betas": np.zeros(16),
    }


def test_amass_files_in_their_three_layouts_read_alike(tmp_path):
    arrays = _amass_arrays()
    full = tmp_path / "smplx.npz"
    np.savez(full, **arrays, gender=np.array("neutral"))
    motion = read_amass(full)
    assert motion.frame_rate == 120.0 and motion.frame_count == 6 and motion.has_hands
    np.testing.assert_array_equal(motion.axis_angles.reshape(6, -1), arrays["poses"])

    poses = arrays["poses"]
    split = tmp_path / "split.npz"
    np.savez(
        split,
        root_orient=poses[:, :3],
        pose_body=poses[:, 3:66],
        pose_jaw=poses[:, 66:69],
        pose_eye=poses[:, 69:75],
        pose_hand=poses[:, 75:],
        trans=arrays["trans"],
        mocap_frame_rate=np.array(120.0),
    )
    np.testing.assert_array_equal(read_amass(split).axis_angles, motion.axis_angles)

    smplh = tmp_path / "smplh.npz"
    np.savez(
        smplh,
        poses=np.concatenate([poses[:, :66], poses[:, 75:]], 1),
        trans=arrays["trans"],
        mocap_framerate=120,
    )
    from_smplh = read_amass(smplh)
    np.testing.assert_array_equal(from_smplh.axis_angles[:, 25:], motion.axis_angles[:, 25:])
    np.testing.assert_array_equal(from_smplh.axis_angles[:, 22:25], 0.0)  # no jaw or eyes in SMPL+H
    assert from_smplh.axis_angles.shape == (6, len(SMPLX_JOINT_NAMES), 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"poses": np.zeros((6, 100))}, "165 .* or 156"),
        ({"mocap_frame_rate": None}, "no frame rate"),
        ({"trans": np.zeros((5, 3))}, "'trans' has 5 frames"),
        ({"poses": np.full((6, 165), np.nan)}, "NaN"),
        ({"poses": np.array([["a"] * 165] * 6)}, "must hold numbers"),
        ({"mocap_frame_rate": np.array(-1.0)}, "above 0"),
        ({"poses": np.full((6, 165), 1000.0)}, "degrees"),
    ],
)
def test_amass_files_that_are_not_are_refused(tmp_path, change, message):
    arrays = {key: value for key, value in {**_amass_arrays(), **change}.items() if value is not None}
    path = tmp_path / "take.npz"
    np.savez(path, **arrays)
    with pytest.raises(AvatarFileError, match=message):
        read_amass(path)


def test_amass_python_objects_are_never_unpickled(tmp_path):
    path = tmp_path / "take.npz"
    np.savez(path, **{**_amass_arrays(), "poses": np.array([object()] * 6, dtype=object)})
    with pytest.raises(AvatarFileError, match="Python objects"):
        read_amass(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(AvatarFileError, match="not an .npz"):
        read_amass(path)


def _damaged(data: bytes, rng: np.random.Generator) -> bytes:
    """`data` cut short, with bytes overwritten, inserted or removed."""
    data = bytearray(data)
    kind, at = rng.integers(0, 4), int(rng.integers(0, len(data)))
    if kind == 0:
        return bytes(data[:at])
    if kind == 1:
        for position in rng.integers(0, len(data), rng.integers(1, 8)):
            data[position] = rng.integers(0, 256)
        return bytes(data)
    if kind == 2:
        return bytes(
            data[:at] + rng.integers(0, 256, rng.integers(1, 20)).astype(np.uint8).tobytes() + data[at:]
        )
    return bytes(data[:at] + data[int(rng.integers(at, len(data) + 1)) :])


def test_damaged_bvh_and_amass_files_are_refused_with_avatar_errors_only(tmp_path):
    rng = np.random.default_rng(0)
    compressed, stored = tmp_path / "compressed.npz", tmp_path / "stored.npz"
    np.savez_compressed(compressed, **_amass_arrays())
    np.savez(stored, **_amass_arrays())
    seeds = [(GOOD_BVH.encode(), read_bvh, ".bvh"), (compressed.read_bytes(), read_amass, ".npz")]
    seeds.append((stored.read_bytes(), read_amass, ".npz"))
    for _ in range(300):
        for data, reader, suffix in seeds:
            case = tmp_path / f"case{suffix}"
            case.write_bytes(_damaged(data, rng))
            try:
                reader(case)
            except AvatarFileError:
                pass


def test_bone_maps_round_trip_and_match_loosely(tmp_path):
    mixamo = builtin_bone_map("mixamo")
    path = tmp_path / "copy.json"
    write_bone_map(path, mixamo)
    assert read_bone_map(path) == mixamo
    # Mixamo's namespace, another one, or none: all match, ignoring case.
    found = resolve(mixamo, ["mixamorig1:Hips", "LEFTARM", "mixamorig:RightArm"])
    assert found == {
        "root": "mixamorig1:Hips",
        "upperarm01.L": "LEFTARM",
        "upperarm01.R": "mixamorig:RightArm",
    }
    alternatives = BoneMap("alt", {"root": ("pelvis_jnt", "Hips")})
    assert resolve(alternatives, ["Hips"]) == {"root": "Hips"}
    cmu = [
        "Hips",
        "LHipJoint",
        "LeftUpLeg",
        "LeftLeg",
        "LeftFoot",
        "LowerBack",
        "Spine",
        "Spine1",
        "Neck1",
        "LThumb",
    ]
    assert best_bone_map(cmu).name == "CMU BVH"
    with pytest.raises(PoseError, match="No bone map fits"):
        best_bone_map(["bone1", "bone2"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([], "format"),
        ({"format": "lca-bone-map", "version": 2, "bones": {"root": "Hips"}}, "version is 2"),
        ({"format": "lca-bone-map", "version": 1, "bones": {"spine": "Spine"}}, "'root'"),
        ({"format": "lca-bone-map", "version": 1, "bones": {"root": 3}}, "joint 'root'"),
        ({"format": "lca-bone-map", "version": 1, "bones": {"root": "Hips"}, "extra": 1}, "unknown keys"),
    ],
)
def test_bone_map_files_that_are_not_are_refused(tmp_path, spec, message):
    with pytest.raises(AvatarFileError, match=message):
        bone_map_from_json(spec, "studio.json")
    path = tmp_path / "studio.json"
    path.write_text(json.dumps(spec)[:-1])
    with pytest.raises(AvatarFileError, match="not valid JSON"):
        read_bone_map(path)


def test_a_map_for_annys_joints_drives_an_smplx_rig_and_finds_too_little_elsewhere():
    pairs = correspondence(builtin_bone_map("smplx"), list(SMPLX_JOINT_NAMES), list(SMPLX_JOINT_NAMES))
    target = np.asarray(pairs.target)
    assert SMPLX_JOINT_NAMES[target[pairs.hips]] == "pelvis"
    assert len(set(target.tolist())) == len(target)  # five Anny toes, one SMPL-X foot: taken once
    np.testing.assert_array_equal(target, np.asarray(pairs.source))  # every joint onto itself
    assert len(target) == 54  # all but the jaw, which Anny has no bone for
    with pytest.raises(PoseError, match="finds no hips in the source"):
        correspondence(builtin_bone_map("mixamo"), ["Hip", "Spine"], list(SMPLX_JOINT_NAMES))
    fingerless = correspondence(
        builtin_bone_map("smplx"), SMPLX_JOINT_NAMES, SMPLX_JOINT_NAMES, fingers=False
    )
    assert len(fingerless.target) == 54 - 30


def test_skeletons_and_correspondences_that_cannot_work_are_refused():
    with pytest.raises(PoseError, match="loop"):
        Skeleton(("a", "b"), np.array([1, 0]), np.tile(np.eye(4), (2, 1, 1)))
    with pytest.raises(PoseError, match="only one source joint"):
        Correspondence(np.array([0, 0]), np.array([0, 1]), hips=0)
    target = humanoid().skeleton
    lying = Skeleton(target.names, target.parents, target.rest.copy())
    lying.rest[:, 2, 3] *= -1  # feet above the hips
    pairs = correspondence(builtin_bone_map("mixamo"), list(HUMANIK_NAMES), target.names)
    with pytest.raises(PoseError, match="hips are not above"):
        retarget(target, np.broadcast_to(target.rest, (2, *target.rest.shape)), lying, pairs)


def _clip(frames: int, frame_rate: float) -> AnimationClip:
    angles = np.linspace(0, np.pi / 2, frames)
    rotations = np.zeros((frames, 2, 4), np.float32)
    rotations[:, 0] = 1.0
    rotations[:, 1, 0], rotations[:, 1, 3] = np.cos(angles / 2), np.sin(angles / 2)
    translations = np.stack([np.linspace(0, 1, frames)] * 3, axis=1).astype(np.float32)
    return AnimationClip(frame_rate, rotations, translations, np.zeros((frames, 1), np.float32))


def test_clips_are_cut_and_retimed():
    clip = _clip(11, 10.0)  # one second, a quarter turn about Z
    part = select_frames(clip, "2:5")
    assert part.frame_count == 4
    np.testing.assert_array_equal(part.rotations, clip.rotations[2:6])
    assert select_frames(clip, "8:").frame_count == 3 and select_frames(clip, ":0").frame_count == 1
    for bad in ("5:2", "0:11", "a:b", "3"):
        with pytest.raises(PoseError):
            select_frames(clip, bad)
    faster = resample_clip(clip, 40.0)
    assert faster.frame_count == 41
    # Slerp keeps turning evenly: frame k of 40 is k/40 of the quarter turn.
    angles = 2 * np.arctan2(faster.rotations[:, 1, 3], faster.rotations[:, 1, 0])
    np.testing.assert_allclose(angles, np.linspace(0, np.pi / 2, 41), atol=1e-5)
    np.testing.assert_allclose(faster.translations[:, 0], np.linspace(0, 1, 41), atol=1e-6)
    assert resample_clip(clip, 10.0) is clip


def test_bvh_axes_are_blenders():
    # BVH's +Z (a character's front) is the project's -Y, its +Y is our +Z.
    np.testing.assert_array_equal(BVH_TO_OURS @ [0, 0, 1], [0, -1, 0])
    np.testing.assert_array_equal(BVH_TO_OURS @ [0, 1, 0], [0, 0, 1])
