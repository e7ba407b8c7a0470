"""Object > Animation > Retarget Motion: a BVH written here from known joint rotations, on a T-posed
skeleton named differently from the avatar's, imported with Blender's own BVH importer, drives
the avatar's bones so that its joints are where the source's are (scaled by height).

The source skeleton stands at the avatar's own joints (so their positions can be compared),
scaled up (a taller actor, in centimetres), with its arms raised to a T-pose and straightened.
The expected joint positions come from forward kinematics of the BVH's channels
(tests/core/motion_builders.py), not from the add-on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from conftest import REPO_ROOT, core_module

sys.path.insert(0, str(REPO_ROOT / "tests" / "core"))  # the shared motion builders
from motion_builders import (  # noqa: E402
    CMU_HIP_JOINTS,
    CMU_NAMES,
    HUMANIK_NAMES,
    BvhSkeleton,
    bvh_joint_positions,
    bvh_motion,
    bvh_text,
    skeleton_at_rig,
)

FRAMES = 30
SCALE = 115.0  # BVH units per avatar metre: a source 15 % taller, in centimetres


class ArmatureRig:
    """The avatar's armature read as the builders read a Rig: joints, parents, heads and tails
    (in the world)."""

    def __init__(self, armature: bpy.types.Object):
        bones = armature.data.bones
        matrix = np.array(armature.matrix_world)
        self.joint_names = [bone.name for bone in bones]  # Blender lists parents first
        self.joint_parents = np.array([bones.find(bone.parent.name) if bone.parent else -1 for bone in bones])
        self.bone_heads = np.array([bone.head_local for bone in bones]) @ matrix[:3, :3].T + matrix[:3, 3]
        self.bone_tails = np.array([bone.tail_local for bone in bones]) @ matrix[:3, :3].T + matrix[:3, 3]

    def joint_index(self, name: str) -> int:
        return self.joint_names.index(name)


def _import_avatar(path: Path) -> bpy.types.Object:
    assert bpy.ops.lca.import_avatar(filepath=str(path)) == {"FINISHED"}
    return bpy.data.objects[f"{path.stem}_rig"]


def _source(rig: bpy.types.Object, naming: dict[str, str], cmu_traits: bool) -> BvhSkeleton:
    skeleton = skeleton_at_rig(ArmatureRig(rig), naming)
    if cmu_traits:
        skeleton.add_cmu_hip_joints()
        skeleton.toes_on_the_floor()
    skeleton.t_pose()
    return skeleton


@pytest.mark.parametrize(
    ("naming", "cmu_traits"), [(HUMANIK_NAMES, False), (CMU_NAMES, True)], ids=["humanik-with-fingers", "cmu"]
)
def test_a_t_posed_bvh_drives_the_avatars_joints_to_the_sources(
    enabled_extension: ModuleType,
    core: ModuleType,
    sample_lca: Path,
    tmp_path: Path,
    naming: dict[str, str],
    cmu_traits: bool,
) -> None:
    rig = _import_avatar(sample_lca)
    skeleton = _source(rig, naming, cmu_traits)
    angles, hips = bvh_motion(skeleton, FRAMES, seed=3 if cmu_traits else 7)
    path = tmp_path / "take.bvh"
    path.write_text(bvh_text(skeleton, angles, hips, SCALE, root_at_origin=cmu_traits))
    source_positions = bvh_joint_positions(skeleton, angles, hips)
    assert bpy.ops.import_anim.bvh(filepath=str(path), frame_start=1, rotate_mode="NATIVE") == {"FINISHED"}
    source = bpy.context.active_object
    assert source.type == "ARMATURE" and source != rig
    bpy.context.view_layer.objects.active = rig
    assert bpy.ops.lca.retarget_motion(source=source.name, bone_map="AUTO") == {"FINISHED"}

    # Where the source's joints are, seen from the avatar: relative to the source's hips at rest
    # (standing: CMU's rest hips sit at the origin, so there it is only their height), scaled by
    # height, from the avatar's own rest hips.
    rest_root = np.array(rig.matrix_world) @ np.append(np.array(rig.data.bones["root"].head_local), 1.0)
    standing_hips = skeleton.position[skeleton.root].copy()
    if cmu_traits:
        standing_hips[:2] = 0.0
    scene = bpy.context.scene
    errors: dict[str, list[float]] = {"body": [], "fingers": []}
    for frame in range(FRAMES):
        scene.frame_set(frame + 1)
        matrix = np.array(rig.matrix_world)
        for name in skeleton.names:
            if name in CMU_HIP_JOINTS:
                continue
            bone = rig.pose.bones[naming[name]]
            posed = matrix[:3, :3] @ np.array(bone.head) + matrix[:3, 3]
            expected = rest_root[:3] + source_positions[name][frame] - standing_hips
            part = "fingers" if naming[name].startswith("finger") else "body"
            errors[part].append(float(np.linalg.norm(posed - expected)))
    body, fingers = np.array(errors["body"]), np.array(errors["fingers"])
    print(
        f"{'CMU' if cmu_traits else 'HumanIK'} retarget error over {FRAMES} frames (cm): body median "
        f"{100 * np.median(body):.3f} max {100 * body.max():.3f}; fingers median "
        f"{100 * np.median(fingers):.3f} max {100 * fingers.max():.3f}"
    )
    assert np.median(body) <= 0.02
    assert np.median(fingers) <= 0.02
    assert np.percentile(body, 90) <= 0.03


def test_bone_maps_save_edit_and_load_for_another_naming(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    rig = _import_avatar(sample_lca)
    saved = tmp_path / "mixamo.json"
    assert bpy.ops.lca.save_bone_map(filepath=str(saved), bone_map="mixamo") == {"FINISHED"}
    spec = json.loads(saved.read_text())
    # A studio's own naming: "pelvis_jnt" for "mixamorig:Hips", "L_UpperArm" for "mixamorig:LeftArm".
    renamed = {"Hips": "pelvis_jnt", "LeftArm": "L_UpperArm", "RightArm": "R_UpperArm"}
    spec["bones"] = {
        joint: renamed.get(name.partition(":")[2], name.partition(":")[2])
        for joint, name in spec["bones"].items()
    }
    edited = tmp_path / "studio.json"
    edited.write_text(json.dumps(spec))
    naming = {
        renamed.get(name, name): ours for name, ours in HUMANIK_NAMES.items() if not ours.startswith("finger")
    }
    skeleton = skeleton_at_rig(ArmatureRig(rig), naming)  # standing still, in the avatar's own rest
    still = {name: np.zeros((2, 3)) for name in skeleton.names}
    path = tmp_path / "studio.bvh"
    path.write_text(bvh_text(skeleton, still, np.tile(skeleton.position[skeleton.root], (2, 1)), 1.0))
    assert bpy.ops.import_anim.bvh(filepath=str(path), frame_start=1) == {"FINISHED"}
    source = bpy.context.active_object
    bpy.context.view_layer.objects.active = rig
    with pytest.raises(RuntimeError, match="no hips"):
        bpy.ops.lca.retarget_motion(source=source.name, bone_map="mixamo")
    result = bpy.ops.lca.retarget_motion(source=source.name, bone_map="FILE", bone_map_file=str(edited))
    assert result == {"FINISHED"}
    bone_map = core_module(core, "formats.bone_map").read_bone_map(edited)
    assert bone_map.bones["upperarm01.L"] == ("L_UpperArm",)
    # Standing still in its rest pose, the source leaves the avatar's arm where it rests.
    bpy.context.scene.frame_set(1)
    arm = rig.pose.bones["upperarm01.L"]
    np.testing.assert_allclose(np.array(arm.head), np.array(arm.bone.head_local), atol=1e-3)


def test_amass_motion_is_keyed_from_the_current_frame_at_the_scenes_rate(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    rig = _import_avatar(sample_lca)
    body = bpy.data.objects[f"{sample_lca.stem}_body"]
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.frame_set(10)
    frames = 12
    poses = np.zeros((frames, 165))
    poses[:, 0] = np.pi / 2  # upright in AMASS's Z-up world
    poses[:, 16 * 3 + 2] = np.linspace(0.0, -1.2, frames)  # the left shoulder lowers the arm
    poses[:, 22 * 3] = 0.4  # the jaw opens
    path = tmp_path / "take.npz"
    np.savez(path, poses=poses, trans=np.zeros((frames, 3)), mocap_frame_rate=np.array(60.0))
    assert bpy.ops.lca.import_amass(filepath=str(path)) == {"FINISHED"}
    # 11/60 s of motion at 24 fps: frames 10 to 14.
    scene.frame_set(10)
    first = np.array(rig.pose.bones["wrist.L"].head)
    scene.frame_set(14)
    last = np.array(rig.pose.bones["wrist.L"].head)
    assert last[2] < first[2] - 0.1  # the arm came down
    assert body.data.shape_keys.key_blocks["jawOpen"].value > 0.5
    scene.frame_set(15)  # after the keys, the last one holds
    np.testing.assert_allclose(np.array(rig.pose.bones["wrist.L"].head), last, atol=1e-5)
