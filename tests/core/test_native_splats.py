"""Blender 5.3's native splat attributes: radiance from the SH, and the binding the node group poses with."""

import numpy as np
from rig_builders import random_rotations

from lca_blender.addon.blender_data import splat_attributes
from lca_blender.addon.native_splats import (
    LOCAL_ROTATION,
    SCALE_FACTOR,
    binding_attributes,
    relit_coefficients,
    sh_sources,
)
from lca_blender.avatar import Pose
from lca_blender.maths.colour import srgb_to_linear
from lca_blender.maths.deform import bind, pose_gaussians, pose_vertices, triangle_frames
from lca_blender.maths.rotations import quaternion_multiply
from lca_blender.maths.sh import SH_C0


def test_relit_coefficients_are_the_colours_blender_shows():
    # Blender shows a splat's degree-0 coefficient c as srgb_to_linear(0.5 + SH_C0 c), above 1 too
    # (checked in a Cycles render of 5.3.0); light never makes a negative colour: those are black.
    colours = np.array([[0.0, 0.2, 1.0], [0.002, 2.5, 0.6], [-0.3, 0.5, 7.0]])
    coefficients = relit_coefficients(colours)
    assert coefficients.dtype == np.float32 and coefficients.shape == (3, 3)
    shown = srgb_to_linear(0.5 + SH_C0 * coefficients.astype(np.float64))
    np.testing.assert_allclose(shown, np.maximum(colours, 0.0), rtol=1e-6, atol=1e-7)


def test_sh_sources_rebuild_every_higher_coefficient_from_the_splats_mesh(tube_avatar):
    _, attributes = splat_attributes(tube_avatar)
    coefficients = tube_avatar.sh.shape[1]
    sources = sh_sources(coefficients)
    assert [name for name, _ in sources] == [f"radiance:sh_{k}" for k in range(coefficients - 1)]
    for k, (_, channels) in enumerate(sources):
        rebuilt = np.stack([attributes[channel] for channel in channels], axis=1)
        np.testing.assert_array_equal(rebuilt, tube_avatar.sh[:, k + 1])
    assert sh_sources(1) == []
    assert sh_sources(16)[-1] == ("radiance:sh_14", ("f_rest_14", "f_rest_29", "f_rest_44"))


def test_binding_attributes_pose_the_gaussians_as_deform_does(tube_rig, tube_avatar):
    # What the node group computes: the posed triangle's frame times the local rotation, and the
    # scale factor times the triangle's size.
    rng = np.random.default_rng(5)
    pose = Pose(rotations=random_rotations(tube_rig.joint_count, rng), translation=np.zeros(3, np.float32))
    vertices = pose_vertices(tube_rig, pose, {"jawOpen": 0.7})
    _, expected_rotations, expected_scales = pose_gaussians(bind(tube_avatar), vertices)

    attributes = binding_attributes(tube_avatar)
    assert attributes[LOCAL_ROTATION].dtype == attributes[SCALE_FACTOR].dtype == np.float32
    frames = triangle_frames(vertices, tube_rig.triangles)
    triangles = tube_avatar.triangle_ids
    rotations = quaternion_multiply(frames.rotations[triangles], attributes[LOCAL_ROTATION])
    same_sign = np.sign(np.sum(rotations * expected_rotations, axis=1, keepdims=True))
    np.testing.assert_allclose(rotations * same_sign, expected_rotations, atol=1e-5)
    scales = attributes[SCALE_FACTOR] * frames.sizes[triangles, None]
    np.testing.assert_allclose(scales, expected_scales, rtol=1e-5)
