"""The whole avatar back from what Blender holds: armature, body (vertex groups, shape keys) and splats.

What a rigged export (glTF) needs when the scene, not an .lca file, is the truth: the artist may
have re-weighted, re-shaped or re-posed the avatar, and a .blend needs no .lca. The Blender side
reads flat arrays with `foreach_get` and hands them here; everything is in the body's object
space, then moved to the world by `to_world`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..avatar import GaussianAvatar, Pose, Rig
from ..errors import AvatarError
from ..maths.sh_rotation import rotate_sh


def rig_from_blender(
    joint_names: Sequence[str],
    joint_parents: Sequence[int],
    rest_matrices: np.ndarray,
    bone_tails: np.ndarray,
    vertices: np.ndarray,
    triangles: np.ndarray,
    skin: tuple[np.ndarray, np.ndarray, np.ndarray],
    expression_names: Sequence[str],
    expression_coordinates: np.ndarray,
    body_model: str = "blender",
) -> Rig:
    """A Rig from Blender's data, all in the body's object space.

    `joint_parents` [J] (-1 for roots) index `joint_names`; bones are reordered so that parents
    come first, and a single root is required. `rest_matrices` [J, 4, 4] are the bones'
    `matrix_local` (row-major), `bone_tails` [J, 3] their `tail_local`. `skin` is three flat
    arrays (vertex, joint, weight), one entry per vertex-group membership; each vertex keeps its
    weights normalised to sum 1 (a vertex in no group follows the root). `expression_coordinates`
    [E, V, 3] are the shape keys' coordinates (not offsets).
    """
    count = len(joint_names)
    parents = np.asarray(joint_parents, np.int64)
    if count == 0:
        raise AvatarError("The armature has no bones.")
    roots = np.flatnonzero(parents < 0)
    if len(roots) != 1:
        raise AvatarError(
            f"The armature has {len(roots)} root bones ({', '.join(joint_names[r] for r in roots)}); "
            "a rigged export needs one root: parent the others to it."
        )
    order = _parents_first(parents)
    position = np.empty(count, np.int64)
    position[order] = np.arange(count)
    new_parents = np.where(parents[order] < 0, -1, position[np.maximum(parents[order], 0)])

    vertices = np.ascontiguousarray(vertices, np.float32)
    vertex_count = vertices.shape[0]
    members, joints, weights = (np.asarray(part) for part in skin)
    dense = np.zeros((vertex_count, count))
    np.add.at(
        dense, (members.astype(np.int64), position[joints.astype(np.int64)]), weights.astype(np.float64)
    )
    dense = np.maximum(dense, 0.0)
    totals = dense.sum(1)
    dense[totals <= 0, 0] = 1.0
    dense /= dense.sum(1, keepdims=True)
    influences = max(1, int((dense > 0).sum(1).max()))
    skin_indices = np.argsort(-dense, axis=1, kind="stable")[:, :influences]
    skin_weights = np.take_along_axis(dense, skin_indices, axis=1)
    skin_indices[skin_weights <= 0] = 0

    coordinates = np.asarray(expression_coordinates, np.float32).reshape(
        len(expression_names), vertex_count, 3
    )
    return Rig(
        joint_names=[joint_names[index] for index in order],
        joint_parents=new_parents.astype(np.int32),
        rest_transforms=_rigid(np.asarray(rest_matrices, np.float64)[order]).astype(np.float32),
        bone_tails=np.asarray(bone_tails, np.float32)[order],
        vertices=vertices,
        triangles=np.ascontiguousarray(triangles, np.int32),
        skin_indices=skin_indices.astype(np.int32),
        skin_weights=skin_weights.astype(np.float32),
        expression_names=list(expression_names),
        expression_deltas=(coordinates - vertices[None]).astype(np.float32),
        body_model=body_model,
    )


def _parents_first(parents: np.ndarray) -> np.ndarray:
    """An order of the joints in which every parent precedes its children: the given order where it
    already does (Blender lists bones depth-first), else each joint just after its ancestors."""
    order: list[int] = []
    placed = np.zeros(len(parents), bool)
    for joint in range(len(parents)):
        chain = []
        while joint >= 0 and not placed[joint]:
            if joint in chain:
                raise AvatarError("The armature's bone parents form a loop.")
            chain.append(joint)
            joint = int(parents[joint])
        for ancestor in reversed(chain):
            placed[ancestor] = True
            order.append(ancestor)
    return np.array(order, np.int64)


def _rigid(matrices: np.ndarray) -> np.ndarray:
    """4x4 frames with their rotation parts made exactly orthonormal (Blender stores float32)."""
    u, _, vt = np.linalg.svd(matrices[:, :3, :3])
    rigid = matrices.copy()
    rigid[:, :3, :3] = u @ vt
    rigid[:, 3] = (0.0, 0.0, 0.0, 1.0)
    return rigid


def similarity_parts(matrix: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
    """(scale, rotation [3, 3], translation [3]) of a 4x4 rotation + translation + uniform scale;
    None when `matrix` is anything else (non-uniform scale, shear, mirror)."""
    matrix = np.asarray(matrix, np.float64)
    linear = matrix[:3, :3]
    determinant = np.linalg.det(linear)
    if determinant <= 0:
        return None
    scale = float(np.cbrt(determinant))
    rotation = linear / scale
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-5) or not np.allclose(
        matrix[3], [0, 0, 0, 1]
    ):
        return None
    return scale, rotation, matrix[:3, 3]


def to_world(avatar: GaussianAvatar, pose: Pose, matrix: np.ndarray) -> tuple[GaussianAvatar, Pose]:
    """`avatar` and `pose` in the body's object space moved by its world `matrix` [4, 4].

    The Gaussians are bound to triangles, so a rotation, translation and uniform scale of the
    whole body leaves their binding as it is; the normal offsets (metres) scale and the
    spherical harmonics turn with the body.
    """
    parts = similarity_parts(matrix)
    if parts is None:
        raise AvatarError(
            "The avatar's body is scaled unevenly, sheared or mirrored; apply its scale "
            "(Object > Apply > Scale) on the armature and the body, then export again."
        )
    scale, rotation, translation = parts
    if np.allclose(matrix, np.eye(4), atol=1e-9):
        return avatar, pose
    rig = avatar.rig
    rest = rig.rest_transforms.astype(np.float64)
    moved = np.empty_like(rest)
    moved[:, :3, :3] = rotation @ rest[:, :3, :3]
    moved[:, :3, 3] = scale * rest[:, :3, 3] @ rotation.T + translation
    moved[:, 3] = (0.0, 0.0, 0.0, 1.0)

    def points(values: np.ndarray) -> np.ndarray:
        return (scale * values.astype(np.float64) @ rotation.T + translation).astype(np.float32)

    moved_rig = Rig(
        joint_names=list(rig.joint_names),
        joint_parents=rig.joint_parents.copy(),
        rest_transforms=moved.astype(np.float32),
        bone_tails=points(rig.bone_tails),
        vertices=points(rig.vertices),
        triangles=rig.triangles,
        skin_indices=rig.skin_indices,
        skin_weights=rig.skin_weights,
        expression_names=list(rig.expression_names),
        expression_deltas=(scale * rig.expression_deltas.astype(np.float64) @ rotation.T).astype(np.float32),
        uvs=rig.uvs,
        triangle_uvs=rig.triangle_uvs,
        body_model=rig.body_model,
        body_parameters=dict(rig.body_parameters),
        vertex_layers=rig.vertex_layers,
    )
    moved_avatar = GaussianAvatar(
        rig=moved_rig,
        triangle_ids=avatar.triangle_ids,
        barycentrics=avatar.barycentrics,
        normal_offsets=(avatar.normal_offsets * scale).astype(np.float32),
        rotations=avatar.rotations,
        log_scales=avatar.log_scales,
        opacities=avatar.opacities,
        albedo=avatar.albedo,
        roughness=avatar.roughness,
        specular=avatar.specular,
        # The captured look depends on the viewing direction in the world: it turns with the body.
        sh=rotate_sh(avatar.sh, rotation),
        provenance=dict(avatar.provenance),
    )
    moved_pose = pose_to_world(pose, matrix)
    return moved_avatar, moved_pose


def pose_to_world(pose: Pose, matrix: np.ndarray) -> Pose:
    """A pose of a rig in the body's object space, for that rig moved by `to_world(..., matrix)`:
    the joints' local rotations stay, the root's offset turns and scales with the body."""
    parts = similarity_parts(matrix)
    if parts is None:
        raise AvatarError("The avatar's body is scaled unevenly, sheared or mirrored; apply its scale.")
    scale, rotation, _ = parts
    return Pose(
        rotations=pose.rotations.copy(),
        translation=(scale * pose.translation.astype(np.float64) @ rotation.T).astype(np.float32),
    )
