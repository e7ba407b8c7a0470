"""Posing in numpy: joint rotations and expressions -> posed body mesh -> posed Gaussians.

The maths (the torch twin in `deform_torch.py` computes it directly; this module arranges it for
speed, see `GaussianBinding`):

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

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..avatar import GaussianAvatar, Pose, Rig, Splats
from ..errors import PoseError
from .rotations import (
    hamilton_rows,
    matrix_to_quaternion,
    quaternion_from_matrix_entries,
    quaternion_to_matrix,
)


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
    """Per-Gaussian data prepared once, as contiguous columns, so posing a frame touches little.

    Posing gathers one 17-row table of per-triangle values per Gaussian and combines it with
    these rows; numpy is fastest on long contiguous rows, slow on short [N, 3] rows. Rotations
    are kept at rest in world axes, so a frame only needs each triangle's turn from rest.
    """

    triangle_corners: np.ndarray  # [3, F] intp vertex of each triangle corner
    rest_axes: np.ndarray  # [3, 3, F] float32 tangent, bitangent, normal rows of the rest triangles
    triangle_ids: np.ndarray  # [N] intp
    barycentrics: np.ndarray  # [2, N] float32 weights of corners 1 and 2 (corner 0 implied)
    normal_offsets: np.ndarray  # [N] float32
    rest_rotations: np.ndarray  # [4, N] float32 world rotation at rest (triangle frame * local)
    scale_factors: np.ndarray  # [3, N] float32 exp(log_scales)


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


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """[V, 3] unit area-weighted vertex normals of a mesh (zero where a vertex has no faces)."""
    corners = vertices[triangles]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices)
    for corner in range(3):
        np.add.at(normals, triangles[:, corner], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def triangle_frames(vertices: np.ndarray, triangles: np.ndarray) -> TriangleFrames:
    """Frames of every triangle of a mesh: `vertices` [V, 3], `triangles` [F, 3]."""
    geometry = _triangle_geometry(np.ascontiguousarray(vertices.T), np.ascontiguousarray(triangles.T))
    # axes[k][row, f] is entry (row, k) of triangle f's frame matrix.
    frames = np.stack(geometry.axes, axis=1).transpose(2, 0, 1)
    return TriangleFrames(
        rotations=matrix_to_quaternion(frames).astype(np.float32),
        normals=np.ascontiguousarray(geometry.axes[2].T),
        sizes=geometry.table[12].copy(),
    )


@dataclass(frozen=True)
class _TriangleGeometry:
    # [17, F] corner 0 (3), edge 1 (3), edge 2 (3), unit normal (3), size (1); rows 13-16 free
    table: np.ndarray
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]  # tangent, bitangent, normal, each [3, F]


def _triangle_geometry(
    vertices: np.ndarray, corners: np.ndarray, out: np.ndarray | None = None
) -> _TriangleGeometry:
    """Per-triangle geometry from `vertices` [3, V] and `corners` [3, F], as contiguous rows
    (written into `out` [17, F] when given)."""
    table = np.empty((17, corners.shape[1]), np.float32) if out is None else out
    origin, edge1, edge2, normal = table[0:3], table[3:6], table[6:9], table[9:12]
    for axis in range(3):
        origin[axis] = np.take(vertices[axis], corners[0])
        edge1[axis] = np.take(vertices[axis], corners[1]) - origin[axis]
        edge2[axis] = np.take(vertices[axis], corners[2]) - origin[axis]
    _cross(edge1, edge2, out=normal)
    twice_area = np.sqrt(normal[0] ** 2 + normal[1] ** 2 + normal[2] ** 2)
    # Degenerate triangles keep a finite frame and a tiny positive size (scales stay valid).
    normal /= np.maximum(twice_area, 1e-20)
    table[12] = np.sqrt(np.maximum(twice_area, 1e-12))
    tangent = edge1 / np.maximum(np.sqrt(edge1[0] ** 2 + edge1[1] ** 2 + edge1[2] ** 2), 1e-20)
    return _TriangleGeometry(table=table, axes=(tangent, _cross(normal, tangent), normal))


def _cross(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Cross products of [3, F] rows of vectors."""
    out = np.empty_like(a) if out is None else out
    out[0] = a[1] * b[2] - a[2] * b[1]
    out[1] = a[2] * b[0] - a[0] * b[2]
    out[2] = a[0] * b[1] - a[1] * b[0]
    return out


def _frame_turns(
    rest_axes: tuple[np.ndarray, ...], posed_axes: tuple[np.ndarray, ...], out: np.ndarray
) -> None:
    """Write into `out` [4, F] the quaternions of D = posed_frame @ rest_frame^T, each frame
    given by its columns (tangent, bitangent, normal) as [3, F] rows.

    With frame columns r_k (rest) and p_k (posed): trace(D) = sum_k r_k . p_k, and D's
    antisymmetric part is sum_k r_k x p_k, so 4 w^2 = 1 + trace and (x, y, z) = sum_k r_k x p_k / 4w.
    Triangles turn little between rest and pose, so this short formula is accurate; the few
    turned by more than about 150 degrees (w < 0.25) take Shepperd's general method.
    """
    trace = sum(r[axis] * p[axis] for r, p in zip(rest_axes, posed_axes, strict=True) for axis in range(3))
    twice_sines = sum(_cross(r, p) for r, p in zip(rest_axes, posed_axes, strict=True))
    out[0] = 0.5 * np.sqrt(np.maximum(1.0 + trace, 0.0))
    out[1:4] = twice_sines * (0.25 / np.maximum(out[0], 1e-20))
    far = np.flatnonzero(out[0] < 0.25)
    if far.size:
        # D[i][j] = sum_k p_k[i] r_k[j]
        entries = [
            sum(p[i, far] * r[j, far] for r, p in zip(rest_axes, posed_axes, strict=True))
            for i in range(3)
            for j in range(3)
        ]
        out[:, far] = quaternion_from_matrix_entries(*entries)


def component_rows(values: np.ndarray, block: int = 4096) -> np.ndarray:
    """[K, N] contiguous rows of the [N, ...] `values` (their components flattened to K).

    The transpose goes a block of items at a time: numpy's one-pass transpose of a long [N, K]
    array walks memory with a large stride and runs about 2.5x slower (a million Gaussians' SH).
    """
    flat = values.reshape(values.shape[0], -1)
    rows = np.empty(flat.shape[::-1], flat.dtype)
    for start in range(0, flat.shape[0], block):
        rows[:, start : start + block] = flat[start : start + block].T
    return rows


def bind(avatar: GaussianAvatar) -> GaussianBinding:
    """Prepare `avatar`'s Gaussians for fast posing with `pose_gaussians`."""
    rig = avatar.rig
    corners = np.ascontiguousarray(rig.triangles.T, np.intp)
    rest = _triangle_geometry(np.ascontiguousarray(rig.vertices.T), corners)
    # Entry (row, k) of a triangle's frame matrix is row `row` of its axis k, as [F] rows in float64.
    entries = [rest.axes[column][row].astype(np.float64) for row in range(3) for column in range(3)]
    rest_frames = np.array(quaternion_from_matrix_entries(*entries), np.float32)  # [4, F]
    triangle_ids = avatar.triangle_ids.astype(np.intp)
    # Each Gaussian's rotation at rest, in world axes: posing only turns it by its triangle's turn.
    # Computed on [4, N] rows in float32 (what is stored): bind runs on every import.
    rest_rotations = np.empty((4, triangle_ids.shape[0]), np.float32)
    hamilton_rows(
        np.take(rest_frames, triangle_ids, axis=1), component_rows(avatar.rotations), out=rest_rotations
    )
    return GaussianBinding(
        triangle_corners=corners,
        rest_axes=np.stack(rest.axes),
        triangle_ids=triangle_ids,
        barycentrics=component_rows(avatar.barycentrics[:, 1:]),
        normal_offsets=avatar.normal_offsets,
        rest_rotations=rest_rotations,
        scale_factors=np.exp(component_rows(avatar.log_scales)),
    )


def pose_gaussians(
    binding: GaussianBinding, vertices: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posed means [N, 3], rotations [N, 4] (w, x, y, z) and scales [N, 3] on a posed mesh.

    `vertices` [V, 3] is the posed mesh (from `pose_vertices`, or read from Blender's evaluated
    body). This is what the viewport runs every frame: per-triangle work once, then one gather
    of a 17-row triangle table and arithmetic on contiguous [N] rows.
    """
    return _pose(binding, vertices, with_rotations=True)


def place_gaussians(binding: GaussianBinding, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means [N, 3] and scales [N, 3] on a mesh, as `pose_gaussians` gives them, without the
    rotations: on the rest mesh (the import's splats) they are the binding's `rest_rotations`."""
    means, _, scales = _pose(binding, vertices, with_rotations=False)
    return means, scales


def _pose(
    binding: GaussianBinding, vertices: np.ndarray, with_rotations: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    corners = binding.triangle_corners
    vertex_rows = np.ascontiguousarray(vertices.T, np.float32)
    table = np.empty((17, corners.shape[1]), np.float32)

    def pose_triangles(part: slice) -> None:
        geometry = _triangle_geometry(vertex_rows, corners[:, part], out=table[:, part])
        _frame_turns(tuple(binding.rest_axes[:, :, part]), geometry.axes, out=table[13:17, part])

    count = binding.triangle_ids.shape[0]
    means = np.empty((count, 3), np.float32)
    rotations = np.empty((count, 4), np.float32) if with_rotations else None
    scales = np.empty((count, 3), np.float32)

    def pose_part(part: slice) -> None:
        _pose_chunk(binding, table, part, means, rotations, scales)

    # numpy releases the GIL in take() and in arithmetic, so the parts run on all cores at once.
    _run_in_parts(pose_triangles, corners.shape[1])
    _run_in_parts(pose_part, count)
    return means, rotations, scales


def _run_in_parts(work: Callable[[slice], None], count: int) -> None:
    """Call `work` on slices of range(count), one per core (all on the caller for small jobs)."""
    parts = max(1, min(_CORES, count // _MIN_PART))
    bounds = np.linspace(0, count, parts + 1).astype(int)
    slices = [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]
    # The calling thread takes the first part itself rather than waiting idle.
    futures = [_helper_threads().submit(work, part) for part in slices[1:]]
    work(slices[0])
    for future in futures:
        future.result()


_CORES = min(4, os.cpu_count() or 1)
_MIN_PART = 8192  # below this, thread hand-over costs more than it saves
_POOL: list[ThreadPoolExecutor] = []


def _helper_threads() -> ThreadPoolExecutor:
    """The threads that work beside the caller (created on first use, never at import)."""
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=max(1, _CORES - 1), thread_name_prefix="lca-pose"))
    return _POOL[0]


def _pose_chunk(
    binding: GaussianBinding,
    table: np.ndarray,
    part: slice,
    means: np.ndarray,
    rotations: np.ndarray | None,
    scales: np.ndarray,
) -> None:
    """Pose the Gaussians in `part` from the triangle `table`, writing into the output arrays."""
    needed = table if rotations is not None else table[:13]  # rows 13-16: the triangles' turns
    # mode="wrap" skips the bounds check of "raise"; bind() took the ids from a validated avatar.
    per_gaussian = np.take(needed, binding.triangle_ids[part], axis=1, mode="wrap")
    origin, edge1, edge2, normal = per_gaussian[0:3], per_gaussian[3:6], per_gaussian[6:9], per_gaussian[9:12]
    size = per_gaussian[12]
    weight1, weight2 = binding.barycentrics[:, part]
    offsets = binding.normal_offsets[part]
    for axis in range(3):
        means[part, axis] = (
            origin[axis] + weight1 * edge1[axis] + weight2 * edge2[axis] + offsets * normal[axis]
        )

    # (triangle's turn) * (rotation at rest); rotations[part].T is a [4, n] view of the output.
    if rotations is not None:
        hamilton_rows(per_gaussian[13:17], binding.rest_rotations[:, part], out=rotations[part].T)
    for axis in range(3):
        scales[part, axis] = binding.scale_factors[axis, part] * size


def pose_avatar(
    avatar: GaussianAvatar,
    pose: Pose | None = None,
    expression_weights: Mapping[str, float] | np.ndarray | None = None,
    binding: GaussianBinding | None = None,
) -> Splats:
    """The avatar's Gaussians in world space for a pose (rest when None) and expression;
    `binding` is `bind(avatar)`, worked out here when not given (pass it when posing many times)."""
    rig = avatar.rig
    vertices = pose_vertices(rig, pose or Pose.rest(rig.joint_count), expression_weights)
    means, rotations, scales = pose_gaussians(binding or bind(avatar), vertices)
    return Splats(
        means=means,
        rotations=rotations,
        scales=scales,
        opacities=avatar.opacities,
        sh=avatar.sh,
        antialiased=avatar.antialiased,
    )
