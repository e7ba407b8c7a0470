"""The arrays handed to Blender rebuild the avatar: bones, mesh, skin, shape keys and splat attributes."""

import numpy as np
import pytest
from rig_builders import make_tube_rig, random_avatar
from test_ply import assert_splats_close, random_splats

from lca_blender.addon.blender_data import (
    avatar_from_attributes,
    bone_arrays,
    joint_weights,
    mesh_arrays,
    shape_key_coordinates,
    splat_attributes,
    static_splat_attributes,
    static_splats_from_attributes,
    surface_rig,
    topology_change,
    triangles_from_loops,
)
from lca_blender.errors import AvatarError
from lca_blender.maths.deform import bind, pose_gaussians
from lca_blender.maths.rotations import bone_matrix, bone_roll_towards, quaternion_to_matrix
from lca_blender.maths.shading import outward_signs


@pytest.fixture(scope="module")
def rig():
    return make_tube_rig()


@pytest.fixture(scope="module")
def avatar(rig):
    return random_avatar(rig, 500, seed=3, sh_degree=2)


def test_bone_rolls_rebuild_the_rest_frames(rig):
    bones = bone_arrays(rig)
    assert bones.names == rig.joint_names
    np.testing.assert_array_equal(bones.parents, rig.joint_parents)
    rebuilt = bone_matrix(bones.heads, bones.tails, bones.rolls)
    np.testing.assert_allclose(rebuilt, rig.rest_transforms, atol=1e-6)


def test_bone_rolls_of_bones_in_every_direction():
    rng = np.random.default_rng(0)
    heads = rng.standard_normal((200, 3))
    directions = rng.standard_normal((200, 3))
    directions[:4] = [[0, -1, 0], [0, 1, 0], [1e-5, -1, 0], [0, 0, -1]]  # Blender's special cases
    tails = heads + 0.1 * directions
    rest = bone_matrix(heads, tails, rng.uniform(-np.pi, np.pi, 200))
    rolls = bone_roll_towards(heads, tails, rest[:, :3, 0])
    np.testing.assert_allclose(bone_matrix(heads, tails, rolls), rest, atol=1e-9)


def test_mesh_loops_and_uvs(rig):
    mesh = mesh_arrays(rig)
    assert mesh.vertex_count == rig.vertex_count and mesh.polygon_count == rig.triangles.shape[0]
    np.testing.assert_array_equal(mesh.coordinates.reshape(-1, 3), rig.vertices)
    np.testing.assert_array_equal(triangles_from_loops(mesh.loop_vertices, mesh.loop_totals), rig.triangles)
    np.testing.assert_array_equal(mesh.loop_starts, 3 * np.arange(rig.triangles.shape[0]))
    loop_uvs = mesh.loop_uvs.reshape(-1, 3, 2)
    np.testing.assert_array_equal(loop_uvs, rig.uvs[rig.triangle_uvs])
    with pytest.raises(AvatarError, match="triangles"):
        triangles_from_loops(mesh.loop_vertices[:8], np.array([4, 4], np.int32))


def test_joint_weights_are_the_sparse_skin_made_dense(rig):
    weights = joint_weights(rig)
    assert weights.shape == (rig.joint_count, rig.vertex_count)
    np.testing.assert_allclose(weights.sum(0), 1.0, atol=1e-6)
    for vertex in (0, 37, rig.vertex_count - 1):
        expected = np.zeros(rig.joint_count)
        np.add.at(expected, rig.skin_indices[vertex], rig.skin_weights[vertex])
        np.testing.assert_allclose(weights[:, vertex], expected, atol=1e-7)


def test_shape_keys_are_rest_plus_delta(rig):
    keys = shape_key_coordinates(rig)
    assert keys.shape == (len(rig.expression_names), rig.vertex_count * 3)
    np.testing.assert_allclose(keys[1].reshape(-1, 3), rig.vertices + rig.expression_deltas[1], atol=1e-7)


def test_splat_attributes_are_the_rest_gaussians_in_3dgs_conventions(avatar):
    means, attributes = splat_attributes(avatar)
    rest_means, rest_rotations, rest_scales = pose_gaussians(bind(avatar), avatar.rig.vertices)
    np.testing.assert_allclose(means, rest_means, atol=1e-7)
    rotations = np.stack([attributes[f"rot_{c}"] for c in range(4)], axis=1)
    # A quaternion and its negative are the same rotation.
    np.testing.assert_allclose(np.abs((rotations * rest_rotations).sum(1)), 1.0, atol=1e-5)
    scales = np.exp(np.stack([attributes[f"scale_{a}"] for a in range(3)], axis=1))
    np.testing.assert_allclose(scales, rest_scales, rtol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-attributes["opacity"])), avatar.opacities, atol=1e-6)
    assert sorted(n for n in attributes if n.startswith("f_rest_")) == sorted(
        f"f_rest_{i}" for i in range(24)
    )
    # Channel-major f_rest: red's 8 coefficients first.
    np.testing.assert_array_equal(attributes["f_rest_0"], avatar.sh[:, 1, 0])
    np.testing.assert_array_equal(attributes["f_rest_8"], avatar.sh[:, 1, 1])
    for values in attributes.values():
        assert values.dtype in (np.float32, np.int32) and values.flags.c_contiguous


def test_attributes_round_trip_to_the_avatar(avatar):
    _, attributes = splat_attributes(avatar)
    rebuilt = avatar_from_attributes(avatar.rig, attributes)
    for name in ("triangle_ids", "barycentrics", "normal_offsets", "albedo", "roughness", "specular", "sh"):
        np.testing.assert_array_equal(getattr(rebuilt, name), getattr(avatar, name), err_msg=name)
    # These pass through world rest values, logs and logits in float32: equal within a few ulps.
    np.testing.assert_allclose(rebuilt.rotations, avatar.rotations, atol=1e-6)
    np.testing.assert_allclose(rebuilt.log_scales, avatar.log_scales, atol=2e-6)
    np.testing.assert_allclose(rebuilt.opacities, avatar.opacities, atol=1e-6)


def test_a_surface_rig_poses_the_same_gaussians(avatar):
    """Blender poses on the body mesh alone; the Gaussians must come out as from the full rig."""
    _, attributes = splat_attributes(avatar)
    rig = avatar.rig
    on_surface = avatar_from_attributes(surface_rig(rig.vertices, rig.triangles), attributes)
    posed = rig.vertices + np.array([0.0, 0.1, 0.0], np.float32) * rig.vertices[:, 2:3]
    expected = pose_gaussians(bind(avatar), posed)
    found = pose_gaussians(bind(on_surface), posed)
    for want, have in zip(expected, found, strict=True):
        np.testing.assert_allclose(have, want, atol=1e-5)


def test_missing_attributes_are_reported(avatar):
    _, attributes = splat_attributes(avatar)
    del attributes["triangle_id"]
    with pytest.raises(AvatarError, match="triangle_id"):
        avatar_from_attributes(avatar.rig, attributes)


def test_outward_signs_follow_the_shading_rule(avatar):
    """The fast rule equals its definition: the Z, in the triangle frame, of each thin axis."""
    local_axes = quaternion_to_matrix(avatar.rotations.astype(np.float64))
    thinnest = np.argmin(avatar.log_scales, axis=1)
    reference = np.where(local_axes[np.arange(len(thinnest)), 2, thinnest] < 0, -1.0, 1.0)
    np.testing.assert_array_equal(outward_signs(avatar), reference)
    assert outward_signs(avatar).dtype == np.float32 and {-1.0, 1.0} == set(np.unique(outward_signs(avatar)))


@pytest.mark.parametrize("coefficients", [1, 16])
def test_static_splats_round_trip_through_their_attributes(coefficients):
    splats = random_splats(300, coefficients, seed=4)
    means, attributes = static_splat_attributes(splats)
    # The same 3DGS names and conventions as an avatar's splats mesh (and a .ply), nothing more.
    _, avatar_attributes = splat_attributes(random_avatar(make_tube_rig(), 10, seed=1, sh_degree=3))
    expected_names = {
        name for name in avatar_attributes if name.startswith(("f_", "opacity", "scale_", "rot_"))
    }
    if coefficients == 1:
        expected_names = {name for name in expected_names if not name.startswith("f_rest_")}
    assert set(attributes) == expected_names
    assert all(values.dtype == np.float32 and values.flags.c_contiguous for values in attributes.values())
    assert_splats_close(static_splats_from_attributes(means, attributes), splats)
    del attributes["rot_2"]
    with pytest.raises(AvatarError, match="rot_2"):
        static_splats_from_attributes(means, attributes)


def test_a_topology_change_names_the_modifiers_that_make_it():
    modifiers = [("Lighter", "DECIMATE"), ("Armature", "ARMATURE"), ("Smooth", "CORRECTIVE_SMOOTH")]
    assert topology_change("body", (10, 48), (10, 48), modifiers) is None
    message = topology_change("body", (10, 48), (6, 24), modifiers)
    assert message.startswith(
        "'body' has 6 vertices and 24 corners after its modifiers, its splats need 10 and 48"
    )
    assert "disable 'Lighter' (" in message and "Armature" not in message and "Smooth" not in message
    # A change the listed types cannot explain (a Geometry Nodes modifier may keep or change it).
    assert "disable the modifiers that change it" in topology_change("body", (10, 48), (10, 60), [])
