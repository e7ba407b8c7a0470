"""Posing in numpy: joint rotations and expressions -> posed body mesh -> posed Gaussians.

The maths (the torch twin in `deform_torch.py` follows it line by line):

- Forward kinematics, Blender's pose-bone convention. With rest frames P_j and local rotations
  L_j = [R(q_j) | 0]:  W_root = [I | t] P_root L_root,  W_j = W_parent (P_parent^-1 P_j) L_j.
  The skinning transform of a joint is T_j = W_j P_j^-1 (identity at rest).
- Mesh: rest vertices plus expression blendshapes, then linear blend skinning,
  v' = sum_k w_k T_{j_k} (v + sum_e e_w delta_e).
- Triangle frame (one per triangle of the posed mesh): tangent = unit first edge, normal = unit
  (e1 x e2), bitangent = normal x tangent; its size is sqrt(|e1 x e2|), the square root of twice
  the area, so a Gaussian's scale follows the skin's stretch.
- Gaussian: mean = barycentric point + offset * normal; rotation = frame * local rotation;
  scale = exp(log_scale) * size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .avatar import GaussianAvatar, Pose, Rig, Splats
from .errors import PoseError
from .rotations import matrix_to_quaternion, quaternion_to_matrix


@dataclass(frozen=True)
class JointTransforms:
    """The result of forward kinematics."""

    world: np.ndarray  # [J, 4, 4] posed bone frames
    skinning: np.ndarray  # [J, 4, 4] rest-to-posed transforms, W_j P_j^-1


@dataclass(frozen=True)
class TriangleFrames:
    """Per-triangle frames of a mesh."""

    rotations: np.ndarray  # [F, 4] unit quaternions (w, x, y, z) of (tangent, bitangent, normal)
    normals: np.ndarray  # [F, 3] unit normals
    sizes: np.ndarray  # [F] sqrt(2 * area)


@dataclass(frozen=True)
class GaussianBinding:
    """Per-Gaussian data prepared once so that posing a frame touches as little as possible."""

    triangle_ids: np.ndarray  # [N] int32
    corner_vertices: np.ndarray  # [3, N] int32 the three vertices of each Gaussian's triangle
    barycentrics: np.ndarray  # [3, N] float32, one row per corner (contiguous for speed)
    normal_offsets: np.ndarray  # [N] float32
    local_rotations: np.ndarray  # [4, N] float32 quaternion components w, x, y, z
    scale_factors: np.ndarray  # [N, 3] float32 exp(log_scales)


def expression_vector(rig: Rig, weights: Mapping[str, float] | np.ndarray | None) -> np.ndarray:
    """[E] expression weights from a name -> weight mapping (unnamed ones are 0), or checked as given."""
    vector = np.zeros(len(rig.expression_names), np.float32)
    if weights is None:
        return vector
    if isinstance(weights, Mapping):
        for name, value in weights.items():
            if name not in rig.expression_names:
                raise PoseError(
                    f"Unknown expression '{name}'. Known expressions: "
                    f"{', '.join(rig.expression_names) or 'none'}."
                )
            vector[rig.expression_names.index(name)] = value
    else:
        vector = np.asarray(weights, np.float32)
        if vector.shape != (len(rig.expression_names),):
            raise PoseError(f"Expected {len(rig.expression_names)} expression weights, found {vector.shape}.")
    if not np.isfinite(vector).all():
        raise PoseError("Expression weights must be finite numbers.")
    return vector


def forward_kinematics(rig: Rig, pose: Pose) -> JointTransforms:
    """Posed bone frames and skinning transforms for `pose` (see the module docstring)."""
    pose.validate(rig)
    rest = rig.rest_transforms.astype(np.float64)
    rest_inverse = np.linalg.inv(rest)
    local = np.zeros_like(rest)
    local[:, :3, :3] = quaternion_to_matrix(pose.rotations.astype(np.float64))
    local[:, 3, 3] = 1.0
    world = np.empty_like(rest)
    root_offset = np.eye(4)
    root_offset[:3, 3] = pose.translation
    world[0] = root_offset @ rest[0] @ local[0]
    parents = rig.joint_parents
    for joint in range(1, rig.joint_count):
        parent = parents[joint]
        world[joint] = world[parent] @ (rest_inverse[parent] @ rest[joint]) @ local[joint]
    skinning = world @ rest_inverse
    return JointTransforms(world=world.astype(np.float32), skinning=skinning.astype(np.float32))


def pose_from_world(rig: Rig, world: np.ndarray) -> Pose:
    """The Pose whose forward kinematics gives the posed bone frames `world` [J, 4, 4].

    Frames are taken as rigid and children as attached to their parents (as in any skeleton
    animation); only the root may translate.
    """
    rest = rig.rest_transforms.astype(np.float64)
    world = np.asarray(world, np.float64)
    local = np.empty_like(world)
    local[0] = np.linalg.inv(rest[0]) @ world[0]
    for joint in range(1, rig.joint_count):
        parent = rig.joint_parents[joint]
        local[joint] = np.linalg.inv(rest[joint]) @ rest[parent] @ np.linalg.inv(world[parent]) @ world[joint]
    return Pose(
        rotations=matrix_to_quaternion(local[:, :3, :3]).astype(np.float32),
        translation=(world[0, :3, 3] - rest[0, :3, 3]).astype(np.float32),
    )


def expression_vertices(rig: Rig, expression_weights: np.ndarray) -> np.ndarray:
    """[V, 3] rest vertices with the expression blendshapes added."""
    active = np.flatnonzero(expression_weights)
    if active.size == 0:
        return rig.vertices.copy()
    offsets = np.tensordot(expression_weights[active], rig.expression_deltas[active], axes=1)
    return rig.vertices + offsets.astype(np.float32)


def skin_vertices(rig: Rig, vertices: np.ndarray, skinning: np.ndarray) -> np.ndarray:
    """Linear blend skinning of `vertices` [V, 3] with the joints' `skinning` transforms [J, 4, 4]."""
    blended = np.einsum("vk,vkij->vij", rig.skin_weights, skinning[rig.skin_indices, :3, :])
    return np.einsum("vij,vj->vi", blended[:, :, :3], vertices) + blended[:, :, 3]


def pose_vertices(
    rig: Rig,
    pose: Pose,
    expression_weights: Mapping[str, float] | np.ndarray | None = None,
) -> np.ndarray:
    """[V, 3] float32 posed mesh vertices for a pose and expression weights."""
    weights = expression_vector(rig, expression_weights)
    transforms = forward_kinematics(rig, pose)
    return skin_vertices(rig, expression_vertices(rig, weights), transforms.skinning)


def triangle_frames(vertices: np.ndarray, triangles: np.ndarray) -> TriangleFrames:
    """Frames of every triangle of a mesh: `vertices` [V, 3], `triangles` [F, 3]."""
    corners = vertices[triangles]  # [F, 3, 3]
    edge1 = corners[:, 1] - corners[:, 0]
    edge2 = corners[:, 2] - corners[:, 0]
    cross = np.cross(edge1, edge2)
    twice_area = np.linalg.norm(cross, axis=1)
    # Degenerate triangles keep a finite frame and a tiny positive size (scales stay valid).
    normals = cross / np.maximum(twice_area, 1e-20)[:, None]
    tangents = edge1 / np.maximum(np.linalg.norm(edge1, axis=1), 1e-20)[:, None]
    bitangents = np.cross(normals, tangents)
    frames = np.stack([tangents, bitangents, normals], axis=2)  # columns are the axes
    return TriangleFrames(
        rotations=matrix_to_quaternion(frames).astype(np.float32),
        normals=normals.astype(np.float32),
        sizes=np.sqrt(np.maximum(twice_area, 1e-12)).astype(np.float32),
    )


def bind(avatar: GaussianAvatar) -> GaussianBinding:
    """Prepare `avatar`'s Gaussians for fast posing with `pose_gaussians`."""
    corner_vertices = avatar.rig.triangles[avatar.triangle_ids].T
    return GaussianBinding(
        triangle_ids=avatar.triangle_ids,
        corner_vertices=np.ascontiguousarray(corner_vertices),
        barycentrics=np.ascontiguousarray(avatar.barycentrics.T),
        normal_offsets=avatar.normal_offsets,
        local_rotations=np.ascontiguousarray(avatar.rotations.T),
        scale_factors=np.exp(avatar.log_scales),
    )


def pose_gaussians(
    binding: GaussianBinding, vertices: np.ndarray, triangles: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posed means [N, 3], rotations [N, 4] (w, x, y, z) and scales [N, 3] on a posed mesh.

    `vertices` [V, 3] is the posed mesh (from `pose_vertices`, or read from Blender's evaluated
    body), `triangles` [F, 3] its triangles. This is what the viewport runs every frame: it works
    on columns of contiguous arrays and avoids per-Gaussian matrices.
    """
    frames = triangle_frames(vertices, triangles)
    ids = binding.triangle_ids
    corner0, corner1, corner2 = binding.corner_vertices
    bary0, bary1, bary2 = binding.barycentrics
    means = vertices[corner0] * bary0[:, None]
    means += vertices[corner1] * bary1[:, None]
    means += vertices[corner2] * bary2[:, None]
    means += frames.normals[ids] * binding.normal_offsets[:, None]

    # Hamilton product frame * local, written out on [N] columns.
    fw, fx, fy, fz = frames.rotations[ids].T
    lw, lx, ly, lz = binding.local_rotations
    rotations = np.empty((ids.shape[0], 4), np.float32)
    rotations[:, 0] = fw * lw - fx * lx - fy * ly - fz * lz
    rotations[:, 1] = fw * lx + fx * lw + fy * lz - fz * ly
    rotations[:, 2] = fw * ly - fx * lz + fy * lw + fz * lx
    rotations[:, 3] = fw * lz + fx * ly - fy * lx + fz * lw

    scales = binding.scale_factors * frames.sizes[ids][:, None]
    return means, rotations, scales


def pose_avatar(
    avatar: GaussianAvatar,
    pose: Pose | None = None,
    expression_weights: Mapping[str, float] | np.ndarray | None = None,
) -> Splats:
    """The avatar's Gaussians in world space for a pose (rest when None) and expression."""
    rig = avatar.rig
    vertices = pose_vertices(rig, pose or Pose.rest(rig.joint_count), expression_weights)
    means, rotations, scales = pose_gaussians(bind(avatar), vertices, rig.triangles)
    return Splats(
        means=means,
        rotations=rotations,
        scales=scales,
        opacities=avatar.opacities,
        sh=avatar.sh,
    )
