"""Posing in torch, differentiable: the twin of `deform.py` (same maths, tested for parity).

The engine fits poses, expressions and Gaussians through these functions; Blender never imports
this module. See `deform.py` for the formulas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..avatar import GaussianAvatar, Rig
from .rotations_torch import matrix_to_quaternion, quaternion_multiply, quaternion_to_matrix


@dataclass(frozen=True)
class RigTensors:
    """A Rig's arrays as tensors on one device and dtype."""

    joint_parents: list[int]
    rest_transforms: torch.Tensor  # [J, 4, 4]
    vertices: torch.Tensor  # [V, 3]
    triangles: torch.Tensor  # [F, 3] int64
    skin_indices: torch.Tensor  # [V, K] int64
    skin_weights: torch.Tensor  # [V, K]
    expression_deltas: torch.Tensor  # [E, V, 3]

    @classmethod
    def from_rig(cls, rig: Rig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        def tensor(array: np.ndarray, as_type: torch.dtype = dtype) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(array), device=device).to(as_type)

        return cls(
            joint_parents=[int(parent) for parent in rig.joint_parents],
            rest_transforms=tensor(rig.rest_transforms),
            vertices=tensor(rig.vertices),
            triangles=tensor(rig.triangles, torch.int64),
            skin_indices=tensor(rig.skin_indices, torch.int64),
            skin_weights=tensor(rig.skin_weights),
            expression_deltas=tensor(rig.expression_deltas),
        )


def forward_kinematics(
    rig: RigTensors,
    rotations: torch.Tensor,  # [J, 4] local quaternions (w, x, y, z)
    translation: torch.Tensor,  # [3] world offset of the root
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed bone frames [J, 4, 4] and skinning transforms [J, 4, 4] (W_j P_j^-1)."""
    rest = rig.rest_transforms
    rest_inverse = torch.linalg.inv(rest)
    local = torch.zeros_like(rest)
    local[:, :3, :3] = quaternion_to_matrix(rotations.to(rest.dtype))
    local[:, 3, 3] = 1.0
    root_offset = torch.eye(4, dtype=rest.dtype, device=rest.device)
    root_offset[:3, 3] = translation.to(rest)
    world = [root_offset @ rest[0] @ local[0]]
    for joint in range(1, len(rig.joint_parents)):
        parent = rig.joint_parents[joint]
        world.append(world[parent] @ (rest_inverse[parent] @ rest[joint]) @ local[joint])
    world_tensor = torch.stack(world)
    return world_tensor, world_tensor @ rest_inverse


def expression_vertices(rig: RigTensors, expression_weights: torch.Tensor) -> torch.Tensor:
    """[V, 3] rest vertices plus the expression blendshapes for weights [E]."""
    return rig.vertices + torch.einsum(
        "e,evc->vc", expression_weights.to(rig.vertices), rig.expression_deltas
    )


def skin_vertices(rig: RigTensors, vertices: torch.Tensor, skinning: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning of `vertices` [V, 3] with skinning transforms [J, 4, 4]."""
    blended = torch.einsum("vk,vkij->vij", rig.skin_weights, skinning[rig.skin_indices, :3, :])
    return torch.einsum("vij,vj->vi", blended[:, :, :3], vertices) + blended[:, :, 3]


def pose_vertices(
    rig: RigTensors,
    rotations: torch.Tensor,  # [J, 4]
    translation: torch.Tensor,  # [3]
    expression_weights: torch.Tensor,  # [E]
) -> torch.Tensor:
    """[V, 3] posed mesh vertices."""
    _, skinning = forward_kinematics(rig, rotations, translation)
    return skin_vertices(rig, expression_vertices(rig, expression_weights), skinning)


def triangle_frames(
    vertices: torch.Tensor,  # [V, 3]
    triangles: torch.Tensor,  # [F, 3] int64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-triangle frame quaternions [F, 4], unit normals [F, 3] and sizes sqrt(2 area) [F]."""
    corners = vertices[triangles]
    edge1 = corners[:, 1] - corners[:, 0]
    edge2 = corners[:, 2] - corners[:, 0]
    cross = torch.linalg.cross(edge1, edge2)
    twice_area = cross.norm(dim=1)
    normals = cross / twice_area.clamp_min(1e-20)[:, None]
    tangents = edge1 / edge1.norm(dim=1).clamp_min(1e-20)[:, None]
    bitangents = torch.linalg.cross(normals, tangents)
    frames = torch.stack([tangents, bitangents, normals], dim=2)
    return matrix_to_quaternion(frames), normals, twice_area.clamp_min(1e-12).sqrt()


def pose_gaussians(
    vertices: torch.Tensor,  # [V, 3] posed mesh
    triangles: torch.Tensor,  # [F, 3] int64
    triangle_ids: torch.Tensor,  # [N] int64
    barycentrics: torch.Tensor,  # [N, 3]
    normal_offsets: torch.Tensor,  # [N]
    local_rotations: torch.Tensor,  # [N, 4]
    log_scales: torch.Tensor,  # [N, 3]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posed means [N, 3], rotations [N, 4] and scales [N, 3], differentiable in every input."""
    frame_rotations, normals, sizes = triangle_frames(vertices, triangles)
    corners = vertices[triangles[triangle_ids]]  # [N, 3, 3]
    means = (barycentrics[:, :, None] * corners).sum(1) + normals[triangle_ids] * normal_offsets[:, None]
    rotations = quaternion_multiply(frame_rotations[triangle_ids], local_rotations)
    scales = log_scales.exp() * sizes[triangle_ids][:, None]
    return means, rotations, scales


def pose_avatar(
    avatar: GaussianAvatar,
    rotations: torch.Tensor,  # [J, 4]
    translation: torch.Tensor,  # [3]
    expression_weights: torch.Tensor,  # [E]
    rig: RigTensors | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posed means, rotations and scales of `avatar`'s Gaussians (the twin of `deform.pose_avatar`)."""
    rig = rig or RigTensors.from_rig(avatar.rig, device=rotations.device, dtype=torch.float32)
    vertices = pose_vertices(rig, rotations, translation, expression_weights)

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, device=vertices.device)

    return pose_gaussians(
        vertices,
        rig.triangles,
        tensor(avatar.triangle_ids).long(),
        tensor(avatar.barycentrics),
        tensor(avatar.normal_offsets),
        tensor(avatar.rotations),
        tensor(avatar.log_scales),
    )
