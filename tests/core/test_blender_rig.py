"""The avatar rebuilt from Blender's arrays (armature, vertex groups, shape keys), moved to the world."""

import numpy as np
import pytest
from rig_builders import make_tube_rig, random_avatar, random_rotations

from lca_blender.addon.blender_data import bone_arrays, joint_weights, shape_key_coordinates
from lca_blender.addon.blender_rig import rig_from_blender, to_world
from lca_blender.avatar import Pose
from lca_blender.errors import AvatarError
from lca_blender.maths.deform import pose_avatar
from lca_blender.maths.rotations import axis_angle_to_quaternion, quaternion_multiply, quaternion_to_matrix
from lca_blender.maths.sh import sh_basis


def _blender_arrays(rig, order):
    """What the add-on reads from Blender, with the bones in `order` (Blender's own bone order)."""
    bones = bone_arrays(rig)
    position = np.empty(len(order), int)
    position[order] = np.arange(len(order))
    parents = [int(position[bones.parents[joint]]) if bones.parents[joint] >= 0 else -1 for joint in order]
    weights = joint_weights(rig)  # [J, V]
    joints, vertices = np.nonzero(weights)
    return dict(
        joint_names=[rig.joint_names[joint] for joint in order],
        joint_parents=parents,
        rest_matrices=rig.rest_transforms[order],
        bone_tails=rig.bone_tails[order],
        vertices=rig.vertices,
        triangles=rig.triangles,
        skin=(vertices, position[joints], weights[joints, vertices]),
        expression_names=rig.expression_names,
        expression_coordinates=shape_key_coordinates(rig),
    )


def test_the_rig_comes_back_from_blenders_arrays_whatever_the_bone_order():
    rig = make_tube_rig()
    rebuilt = rig_from_blender(**_blender_arrays(rig, order=[3, 0, 2, 1]))
    # Parents come first; siblings may change places, so compare joint by joint name.
    order = [rebuilt.joint_names.index(name) for name in rig.joint_names]
    assert all(parent < joint for joint, parent in enumerate(rebuilt.joint_parents) if parent >= 0)
    names = np.array(rebuilt.joint_names)
    assert [names[p] if p >= 0 else None for p in rebuilt.joint_parents[order]] == [
        rig.joint_names[p] if p >= 0 else None for p in rig.joint_parents
    ]
    np.testing.assert_allclose(rebuilt.rest_transforms[order], rig.rest_transforms, atol=1e-6)
    np.testing.assert_allclose(joint_weights(rebuilt)[order], joint_weights(rig), atol=1e-6)
    np.testing.assert_allclose(rebuilt.expression_deltas, rig.expression_deltas, atol=1e-6)
    rotations = random_rotations(4, np.random.default_rng(0))
    pose = Pose(rotations=rotations, translation=np.zeros(3, np.float32))
    rebuilt_pose = Pose(rotations=rotations[np.argsort(order)], translation=np.zeros(3, np.float32))
    avatar = random_avatar(rig, 200)
    rebuilt_avatar = random_avatar(rebuilt, 200)
    np.testing.assert_allclose(
        pose_avatar(rebuilt_avatar, rebuilt_pose, {"jawOpen": 0.5}).means,
        pose_avatar(avatar, pose, {"jawOpen": 0.5}).means,
        atol=1e-5,
    )


def test_vertices_outside_every_group_follow_the_root_and_weights_are_normalised():
    rig = make_tube_rig()
    arrays = _blender_arrays(rig, order=[0, 1, 2, 3])
    vertices, joints, weights = arrays["skin"]
    keep = vertices != 0
    arrays["skin"] = (vertices[keep], joints[keep], 3.0 * weights[keep])
    rebuilt = rig_from_blender(**arrays)
    assert rebuilt.skin_indices[0, 0] == 0 and rebuilt.skin_weights[0, 0] == 1.0
    np.testing.assert_allclose(rebuilt.skin_weights.sum(1), 1.0, atol=1e-6)


def test_armatures_with_several_roots_are_refused():
    rig = make_tube_rig()
    arrays = _blender_arrays(rig, order=[0, 1, 2, 3])
    arrays["joint_parents"] = [-1, 0, 1, -1]
    with pytest.raises(AvatarError, match="2 root bones"):
        rig_from_blender(**arrays)


def test_moving_the_body_to_the_world_moves_the_posed_splats_with_it():
    rig = make_tube_rig()
    avatar = random_avatar(rig, 300, sh_degree=3)
    pose = Pose(
        rotations=random_rotations(4, np.random.default_rng(1)),
        translation=np.array([0.1, 0.0, 0.2], np.float32),
    )
    turn_quaternion = axis_angle_to_quaternion(np.array([0.2, -0.4, 0.9]))
    turn = quaternion_to_matrix(turn_quaternion)
    matrix = np.eye(4)
    matrix[:3, :3] = 1.5 * turn
    matrix[:3, 3] = [1.0, -2.0, 0.5]
    moved_avatar, moved_pose = to_world(avatar, pose, matrix)
    here, there = (
        pose_avatar(avatar, pose, {"jawOpen": 0.4}),
        pose_avatar(moved_avatar, moved_pose, {"jawOpen": 0.4}),
    )
    np.testing.assert_allclose(there.means, here.means @ (1.5 * turn).T + matrix[:3, 3], atol=1e-5)
    np.testing.assert_allclose(there.scales, 1.5 * here.scales, rtol=1e-4)
    expected = quaternion_multiply(turn_quaternion, here.rotations.astype(np.float64))
    signs = np.sign(np.sum(expected * there.rotations, axis=1, keepdims=True))
    np.testing.assert_allclose(there.rotations * signs, expected, atol=1e-5)
    directions = np.random.default_rng(2).standard_normal((300, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    np.testing.assert_allclose(
        np.einsum("nb,nbc->nc", sh_basis(directions @ turn.T, 3), there.sh),
        np.einsum("nb,nbc->nc", sh_basis(directions, 3), here.sh),
        atol=1e-4,
    )
    unchanged, same_pose = to_world(avatar, pose, np.eye(4))
    assert unchanged is avatar and same_pose is pose
    squashed = np.diag([1.0, 1.0, 0.5, 1.0])
    with pytest.raises(AvatarError, match="Apply"):
        to_world(avatar, pose, squashed)
