"""Builders shared by the core tests: a small synthetic rig and avatars with random fields.

A module of its own (not conftest.py): tests import these by name, and several test folders
each have a conftest module that would shadow one another.
"""

from __future__ import annotations

import numpy as np

from lca_blender.avatar import GaussianAvatar, Rig
from lca_blender.maths.rotations import bone_matrix, bone_roll_towards
from lca_blender.reconstruct.sample import sample_avatar


def make_tube_rig(rings: int = 12, segments: int = 10, radius: float = 0.05) -> Rig:
    """A Y-shaped skeleton (a trunk up Z that forks in two) skinning a tube round the trunk.

    Small enough for brute-force references, but with a fork, a leaf, blended skin weights and
    two expressions so every branch of the posing maths is exercised.
    """
    heads = np.array([[0, 0, 0], [0, 0, 0.3], [0, 0, 0.6], [0.1, 0, 0.6]], np.float64)
    tails = np.array([[0, 0, 0.3], [0, 0, 0.6], [0, 0, 0.9], [0.3, 0, 0.7]], np.float64)
    parents = np.array([-1, 0, 1, 1], np.int32)
    rolls = bone_roll_towards(heads, tails, np.tile([1.0, 0, 0], (4, 1)))
    rest = bone_matrix(heads, tails, rolls + np.array([0.0, 0.3, -0.2, 0.5]))

    heights = np.linspace(0.0, 0.9, rings)
    angles = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    vertices = np.array(
        [[radius * np.cos(a), radius * np.sin(a), h] for h in heights for a in angles], np.float64
    )
    triangles = []
    for ring in range(rings - 1):
        for segment in range(segments):
            a = ring * segments + segment
            b = ring * segments + (segment + 1) % segments
            triangles += [[a, b, b + segments], [a, b + segments, a + segments]]
    triangles = np.array(triangles, np.int32)

    # Each vertex follows the two joints around its height, blended linearly.
    joint_heights = np.array([0.0, 0.3, 0.6])
    position = np.clip(np.interp(vertices[:, 2], joint_heights, [0, 1, 2]), 0, 2)
    lower = np.minimum(np.floor(position).astype(np.int32), 1)
    upper_weight = position - lower
    skin_indices = np.stack([lower, lower + 1, np.full_like(lower, 3)], axis=1).astype(np.int32)
    fork_weight = 0.1 * (vertices[:, 2] > 0.55)
    skin_weights = np.stack([1 - upper_weight, upper_weight, fork_weight], axis=1)
    skin_weights /= skin_weights.sum(1, keepdims=True)

    rng = np.random.default_rng(7)
    expression_deltas = 0.01 * rng.standard_normal((2, len(vertices), 3))
    uvs = rng.random((len(vertices), 2))
    return Rig(
        joint_names=["root", "spine", "neck", "arm.L"],
        joint_parents=parents,
        rest_transforms=rest.astype(np.float32),
        bone_tails=tails.astype(np.float32),
        vertices=vertices.astype(np.float32),
        triangles=triangles,
        skin_indices=skin_indices,
        skin_weights=skin_weights.astype(np.float32),
        expression_names=["jawOpen", "eyeBlinkLeft"],
        expression_deltas=expression_deltas.astype(np.float32),
        uvs=uvs.astype(np.float32),
        triangle_uvs=triangles.copy(),
        body_model="test-tube",
        body_parameters={"radius": radius},
    )


def random_avatar(rig: Rig, count: int, seed: int = 0, sh_degree: int = 2) -> GaussianAvatar:
    """Gaussians with every per-Gaussian field random (offsets and rotations included)."""
    rng = np.random.default_rng(seed)
    avatar = sample_avatar(rig, count, sh_degree=sh_degree, seed=seed)
    rotations = rng.standard_normal((count, 4))
    rotations /= np.linalg.norm(rotations, axis=1, keepdims=True)
    avatar.normal_offsets = rng.uniform(-0.01, 0.01, count).astype(np.float32)
    avatar.rotations = rotations.astype(np.float32)
    avatar.log_scales = rng.uniform(-3, 0, (count, 3)).astype(np.float32)
    avatar.opacities = rng.random(count).astype(np.float32)
    avatar.sh = rng.standard_normal(avatar.sh.shape).astype(np.float32)
    avatar.validate()
    return avatar


def random_rotations(count: int, rng: np.random.Generator, scale: float = 0.5) -> np.ndarray:
    """[count, 4] random unit quaternions, within about `scale` radians of identity."""
    from lca_blender.maths.rotations import axis_angle_to_quaternion

    return axis_angle_to_quaternion(scale * rng.standard_normal((count, 3))).astype(np.float32)
