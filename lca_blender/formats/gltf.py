"""Gaussian splats and rigged splat avatars as binary glTF 2.0 (.glb) with KHR_gaussian_splatting.

What we write
-------------
Everything is in glTF's frame: metres, +Y up, the avatar facing +Z. Our frame (Blender's) is +Z up,
facing -Y, so every position, direction and rotation goes through the turn (x, y, z) -> (x, z, -y)
(-90 degrees about X); spherical harmonics are turned with it (`maths/sh_rotation.py`).

`write_splats_glb` (posed splats, what any KHR_gaussian_splatting viewer shows): one node, one mesh,
one primitive of mode POINTS (0) with
- POSITION (VEC3 float, with min/max): the Gaussians' means;
- KHR_gaussian_splatting:ROTATION (VEC4 float): unit quaternions in glTF's (x, y, z, w) order;
- KHR_gaussian_splatting:SCALE (VEC3 float): linear standard deviations along the rotated axes;
- KHR_gaussian_splatting:OPACITY (SCALAR float): linear, in [0, 1];
- KHR_gaussian_splatting:SH_DEGREE_l_COEF_n (VEC3 float, RGB) for every degree l up to the
  avatar's, n = 0..2l ordered m = -l..l: exactly the 3DGS coefficients (Condon-Shortley phase,
  the 0.5 offset applied by the renderer), so SH_DEGREE_0_COEF_0 is the 3DGS `f_dc`;
- COLOR_0 (VEC4 float): the fallback point colour (0.5 + C0 f_dc clipped to [0, 1], decoded from
  sRGB to linear as glTF colours are; alpha = opacity);
and the primitive's extension object {"kernel": "ellipse", "colorSpace": "srgb_rec709_display"}:
3DGS colours are display-referred sRGB, which is how this project fits and shows them.

`write_avatar_glb` (a rigged splat avatar) adds to that:
- the skeleton as a glTF skin: one node per joint, named as the rig's joints, parented as they
  are, whose local translation and rotation are its rest frame relative to its parent's (the
  root's in glTF's frame) composed with the pose; inverseBindMatrices are the inverses of the
  rest frames in glTF's frame, so at rest every joint matrix is the identity;
- the splat primitive, at rest, skinned: JOINTS_0 / WEIGHTS_0 from each Gaussian's binding, the
  barycentric blend of its triangle's three vertices' skin weights, the `influences` largest kept
  (4 by default, more in JOINTS_1/WEIGHTS_1, ...) and normalised to sum to 1;
- the body mesh (the splats' cage, the rig's template mesh) as a second skinned mesh, TRIANGLES,
  with the same kind of JOINTS/WEIGHTS;
- the expressions (the 52 ARKit names) as morph targets of both meshes, in the rig's expression
  order, named in each mesh's `extras.targetNames`: the body's are its blendshapes; the splats'
  are how far each Gaussian's mean moves when that expression alone is at weight 1 (only
  positions: glTF targets cannot hold the extension's attributes). Targets are sparse
  accessors: an expression moves only the face;
- optionally an animation (an `AnimationClip`): LINEAR samplers at the clip's frame times for the
  rotation of every joint that moves, the root's translation when it moves, and the morph-target
  weights of both meshes.

How a viewer should skin splats (KHR_gaussian_splatting does not define it): exactly as glTF
skins a vertex. Add the morph targets to POSITION, then take the splat's blended joint matrix
M = sum_i WEIGHTS_i * jointMatrix(JOINTS_i) (jointMatrix = the joint's global transform times its
inverse bind matrix); the posed mean is M * position, and M plays the role that the extension
gives to "the global transformation matrix of the node" for the covariance: with A the upper-left
3x3 of M, Sigma' = A Sigma A^T, Sigma = R S S^T R^T from ROTATION and SCALE. Spherical harmonics may
be turned by the rotation part of A (this project's own posing leaves them as they are).

How close that comes to this project's posing: our Gaussians ride on their triangles
(`maths/deform.py`: barycentric point of the posed triangle plus the normal offset, the triangle's
turn and stretch applied to rotation and scale); linear blend skinning of the point with blended,
truncated weights is an approximation of it, exact where the skin moves rigidly. On the Anny body
with 20,000 Gaussians under the pose presets (t-pose, wave, point, fists; tests/core/test_gltf.py),
the median Gaussian's mean lands within float32 noise of ours, the 99th percentile within about
3 mm, the worst about 2 cm: on the 2-3 cm triangles of the shoulders and the base of the neck when
an arm is raised, where skin weights change fastest across a triangle. Keeping 8 influences instead
of 4 changes that little (it is the straight-line blend of joint matrices across a triangle).

The reader (`read_glb`, `read_splats_glb`) is strict and small: it reads what this writer writes
and ordinary KHR_gaussian_splatting files (float, normalised or integer accessors, byteStride,
sparse accessors), in our frame.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..avatar import GaussianAvatar, Pose, Rig, Splats
from ..errors import AvatarFileError, AvatarWriteError
from ..maths.colour import srgb_to_linear
from ..maths.deform import bind, expression_vector, pose_avatar, pose_gaussians
from ..maths.rotations import matrix_to_quaternion, quaternion_multiply, quaternion_to_matrix
from ..maths.sh import SH_C0, degree_of
from ..maths.sh_rotation import rotate_sh
from .animation import AnimationClip
from .atomic import atomic_output
from .reading import open_regular_file, read_at_most

EXTENSION = "KHR_gaussian_splatting"
PREFIX = f"{EXTENSION}:"
COLOR_SPACE = "srgb_rec709_display"
KERNEL = "ellipse"

Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""Our frame (Blender's: +Z up, facing -Y) to glTF's (+Y up, facing +Z): (x, y, z) -> (x, z, -y)."""

MAX_GLB_BYTES = 4 * 1024**3
"""A .glb larger than this is refused (reading stops there; far above any avatar)."""
MAX_ACCESSOR_VALUES = 2**29
"""Most numbers one accessor may hold (checked before allocating: an accessor without data is zeros)."""

_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _UBYTE, _USHORT, _UINT, _BYTE, _SHORT = 5126, 5121, 5123, 5125, 5120, 5122
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_DTYPES = {_FLOAT: "<f4", _UBYTE: "u1", _USHORT: "<u2", _UINT: "<u4", _BYTE: "i1", _SHORT: "<i2"}
_COMPONENT_TYPES = {np.dtype(dtype): code for code, dtype in _DTYPES.items()}


def sh_attribute(degree: int, coefficient: int) -> str:
    """The attribute name of one SH coefficient: KHR_gaussian_splatting:SH_DEGREE_<l>_COEF_<n>."""
    return f"{PREFIX}SH_DEGREE_{degree}_COEF_{coefficient}"


# ---------------------------------------------------------------------------------------------
# Writing


class _GlbBuilder:
    """The JSON document and binary buffer of a .glb, filled accessor by accessor."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {
            "asset": {"version": "2.0", "generator": f"LCA Avatars {__version__}"},
            "buffers": [],
            "bufferViews": [],
            "accessors": [],
        }
        self._chunks: list[bytes] = []
        self._length = 0

    def view(self, data: np.ndarray, target: int | None = None) -> int:
        """A buffer view holding `data`'s bytes, 4-byte aligned; returns its index."""
        raw = np.ascontiguousarray(data).tobytes()
        padding = -self._length % 4
        if padding:
            self._chunks.append(b"\0" * padding)
            self._length += padding
        view: dict[str, Any] = {"buffer": 0, "byteOffset": self._length, "byteLength": len(raw)}
        if target is not None:
            view["target"] = target
        self._chunks.append(raw)
        self._length += len(raw)
        self.document["bufferViews"].append(view)
        return len(self.document["bufferViews"]) - 1

    def accessor(
        self,
        values: np.ndarray,
        kind: str,
        *,
        target: int | None = None,
        bounds: bool = False,
    ) -> int:
        """An accessor over `values` [count, components] (or [count] for SCALAR), little-endian."""
        code = _COMPONENT_TYPES[np.dtype(np.asarray(values).dtype.name)]
        values = np.asarray(values).astype(_DTYPES[code], copy=False)
        accessor: dict[str, Any] = {
            "bufferView": self.view(values, target),
            "componentType": code,
            "count": int(values.shape[0]),
            "type": kind,
        }
        if bounds:
            accessor.update(_bounds(values.reshape(values.shape[0], -1)))
        return self._add_accessor(accessor)

    def sparse_accessor(self, count: int, indices: np.ndarray, values: np.ndarray, kind: str) -> int:
        """A float accessor of `count` elements, zero except `values` [k, components] at the strictly
        increasing `indices` [k]; all zeros (no data at all) when k = 0."""
        components = _COMPONENTS[kind]
        accessor: dict[str, Any] = {"componentType": _FLOAT, "count": int(count), "type": kind}
        # The bounds are over every element: the zeros too, unless the substitutes cover them all.
        parts = [np.zeros((1, components), np.float32)] if len(indices) < count else []
        if len(indices):
            values = np.asarray(values, "<f4").reshape(len(indices), components)
            accessor["sparse"] = {
                "count": int(len(indices)),
                "indices": {"bufferView": self.view(np.asarray(indices, "<u4")), "componentType": _UINT},
                "values": {"bufferView": self.view(values)},
            }
            parts.append(values)
        accessor.update(_bounds(np.concatenate(parts)))
        return self._add_accessor(accessor)

    def _add_accessor(self, accessor: dict[str, Any]) -> int:
        self.document["accessors"].append(accessor)
        return len(self.document["accessors"]) - 1

    def add(self, kind: str, item: dict[str, Any]) -> int:
        """Append `item` to the document's list `kind` (nodes, meshes, ...); returns its index."""
        self.document.setdefault(kind, []).append(item)
        return len(self.document[kind]) - 1

    def glb(self) -> bytes:
        """The whole .glb: header, JSON chunk (space-padded), BIN chunk (zero-padded)."""
        binary = b"".join(self._chunks)
        binary += b"\0" * (-len(binary) % 4)
        self.document["buffers"] = [{"byteLength": len(binary)}]
        text = json.dumps(self.document, separators=(",", ":"), allow_nan=False).encode("utf-8")
        text += b" " * (-len(text) % 4)
        total = 12 + 8 + len(text) + 8 + len(binary)
        return b"".join(
            [
                struct.pack("<III", _GLB_MAGIC, 2, total),
                struct.pack("<II", len(text), _JSON_CHUNK),
                text,
                struct.pack("<II", len(binary), _BIN_CHUNK),
                binary,
            ]
        )


def _bounds(values: np.ndarray) -> dict[str, list]:
    """min and max per component, as the stored values read back (float32 or integers)."""
    low, high = values.min(0), values.max(0)
    convert = float if values.dtype.kind == "f" else int
    return {"min": [convert(value) for value in low], "max": [convert(value) for value in high]}


def _write(path: str | os.PathLike, builder: _GlbBuilder) -> None:
    data = builder.glb()
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)


def _to_gltf_points(points: np.ndarray) -> np.ndarray:
    return (np.asarray(points, np.float64) @ Y_UP.T).astype(np.float32)


def _to_gltf_rotations(rotations: np.ndarray) -> np.ndarray:
    """[N, 4] (w, x, y, z) rotations in our frame -> [N, 4] float32 unit (x, y, z, w) in glTF's."""
    turned = quaternion_multiply(matrix_to_quaternion(Y_UP), np.asarray(rotations, np.float64))
    turned /= np.linalg.norm(turned, axis=1, keepdims=True)
    return np.ascontiguousarray(turned[:, [1, 2, 3, 0]], np.float32)


def _splat_primitive(builder: _GlbBuilder, splats: Splats) -> dict[str, Any]:
    """The POINTS primitive of `splats` (in our frame), turned into glTF's frame."""
    if splats.count == 0:
        raise AvatarWriteError("There are no splats to write.")
    sh = rotate_sh(splats.sh, Y_UP)
    attributes = {
        "POSITION": builder.accessor(
            _to_gltf_points(splats.means), "VEC3", target=_ARRAY_BUFFER, bounds=True
        ),
        f"{PREFIX}ROTATION": builder.accessor(
            _to_gltf_rotations(splats.rotations), "VEC4", target=_ARRAY_BUFFER
        ),
        f"{PREFIX}SCALE": builder.accessor(splats.scales.astype(np.float32), "VEC3", target=_ARRAY_BUFFER),
        f"{PREFIX}OPACITY": builder.accessor(
            splats.opacities.astype(np.float32), "SCALAR", target=_ARRAY_BUFFER
        ),
    }
    for degree in range(degree_of(sh.shape[1]) + 1):
        for coefficient in range(2 * degree + 1):
            attributes[sh_attribute(degree, coefficient)] = builder.accessor(
                np.ascontiguousarray(sh[:, degree * degree + coefficient, :], np.float32),
                "VEC3",
                target=_ARRAY_BUFFER,
            )
    colour = np.empty((splats.count, 4), np.float32)
    colour[:, :3] = srgb_to_linear(np.clip(0.5 + SH_C0 * splats.sh[:, 0, :].astype(np.float64), 0.0, 1.0))
    colour[:, 3] = splats.opacities
    attributes["COLOR_0"] = builder.accessor(colour, "VEC4", target=_ARRAY_BUFFER)
    return {
        "attributes": attributes,
        "mode": 0,
        "extensions": {EXTENSION: {"kernel": KERNEL, "colorSpace": COLOR_SPACE}},
    }


def write_splats_glb(path: str | os.PathLike, splats: Splats, name: str = "splats") -> None:
    """Write world-space `splats` (a posed avatar, an imported .ply) as a static KHR_gaussian_splatting
    .glb (see the module docstring). The file appears whole or not at all."""
    builder = _GlbBuilder()
    builder.document["extensionsUsed"] = [EXTENSION]
    mesh = builder.add("meshes", {"name": name, "primitives": [_splat_primitive(builder, splats)]})
    node = builder.add("nodes", {"name": name, "mesh": mesh})
    builder.document["scenes"] = [{"name": name, "nodes": [node]}]
    builder.document["scene"] = 0
    _write(path, builder)


@dataclass(frozen=True)
class SkinInfluences:
    """Per-point joints and weights as glTF's JOINTS_n / WEIGHTS_n sets take them."""

    joints: np.ndarray  # [P, K] int joint index per influence, K a multiple of 4; 0 where unused
    weights: np.ndarray  # [P, K] float32, each row sums to 1 in float32, descending


def _strongest_influences(
    points: np.ndarray, joints: np.ndarray, weights: np.ndarray, point_count: int, influences: int
) -> SkinInfluences:
    """Merge repeated (point, joint) pairs, keep each point's `influences` largest weights, normalise.

    `points`, `joints`, `weights` are flat [M] lists of contributions.
    """
    if influences < 1:
        raise AvatarWriteError("A skin needs at least one influence per point.")
    joint_count = int(joints.max(initial=0)) + 1
    keys = points.astype(np.int64) * joint_count + joints
    unique, inverse = np.unique(keys, return_inverse=True)
    summed = np.bincount(inverse.ravel(), weights.astype(np.float64).ravel(), minlength=len(unique))
    owner = unique // joint_count
    counts = np.bincount(owner, minlength=point_count)
    width = max(int(counts.max(initial=0)), 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(unique)) - starts[owner]
    table_weights = np.zeros((point_count, width))
    table_joints = np.zeros((point_count, width), np.int64)
    table_weights[owner, slot] = summed
    table_joints[owner, slot] = unique % joint_count
    order = np.argsort(-table_weights, axis=1, kind="stable")[:, :influences]
    kept_weights = np.take_along_axis(table_weights, order, axis=1)
    kept_joints = np.take_along_axis(table_joints, order, axis=1)
    totals = kept_weights.sum(1, keepdims=True)
    if (totals <= 0).any():
        raise AvatarWriteError("Some points have no skin weight at all; the rig's skin weights are broken.")
    kept_weights /= totals
    kept_joints[kept_weights <= 0] = 0
    columns = -(-kept_weights.shape[1] // 4) * 4  # whole JOINTS_n / WEIGHTS_n sets of 4
    padded_weights = np.zeros((point_count, columns), np.float32)
    padded_joints = np.zeros((point_count, columns), np.int64)
    padded_weights[:, : kept_weights.shape[1]] = kept_weights
    padded_joints[:, : kept_joints.shape[1]] = kept_joints
    # float32 rounding leaves sums a few ulps off 1; the largest weight takes up the difference, so
    # the stored rows sum to 1 as readers (and glTF-Validator) add them up.
    residual = 1.0 - padded_weights.astype(np.float64).sum(1)
    padded_weights[:, 0] = (padded_weights[:, 0].astype(np.float64) + residual).astype(np.float32)
    return SkinInfluences(joints=padded_joints, weights=padded_weights)


def vertex_skin_influences(rig: Rig, influences: int = 4) -> SkinInfluences:
    """The rig's template-mesh skin as glTF influences: the `influences` largest per vertex."""
    vertices = np.repeat(np.arange(rig.vertex_count), rig.skin_indices.shape[1])
    return _strongest_influences(
        vertices, rig.skin_indices.ravel(), rig.skin_weights.ravel(), rig.vertex_count, influences
    )


def gaussian_skin_influences(avatar: GaussianAvatar, influences: int = 4) -> SkinInfluences:
    """Each Gaussian's skin: the barycentric blend of its triangle's vertices' skin weights, the
    `influences` largest kept and normalised."""
    rig = avatar.rig
    corners = rig.triangles[avatar.triangle_ids]  # [N, 3]
    per_corner = rig.skin_indices.shape[1]
    gaussians = np.repeat(np.arange(avatar.gaussian_count), 3 * per_corner)
    joints = rig.skin_indices[corners].reshape(-1)  # [N, 3, K] -> flat
    weights = (avatar.barycentrics[:, :, None].astype(np.float64) * rig.skin_weights[corners]).reshape(-1)
    return _strongest_influences(gaussians, joints, weights, avatar.gaussian_count, influences)


def _skin_attributes(builder: _GlbBuilder, skin: SkinInfluences, joint_count: int) -> dict[str, int]:
    dtype = np.uint8 if joint_count <= 256 else np.uint16
    attributes = {}
    for index in range(skin.weights.shape[1] // 4):
        columns = slice(4 * index, 4 * index + 4)
        attributes[f"JOINTS_{index}"] = builder.accessor(
            skin.joints[:, columns].astype(dtype), "VEC4", target=_ARRAY_BUFFER
        )
        attributes[f"WEIGHTS_{index}"] = builder.accessor(
            np.ascontiguousarray(skin.weights[:, columns]), "VEC4", target=_ARRAY_BUFFER
        )
    return attributes


def _rigid_parts(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Translations [J, 3] and (w, x, y, z) rotations [J, 4] of 4x4 frames, orthonormalised."""
    u, _, vt = np.linalg.svd(matrices[:, :3, :3])
    return matrices[:, :3, 3], matrix_to_quaternion(u @ vt)


def _joint_frames(rig: Rig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The joints' rest frames in glTF's frame [J, 4, 4], and their local translations [J, 3] and
    rotations [J, 4] (w, x, y, z) relative to their parents (the root's relative to the world)."""
    turn = np.eye(4)
    turn[:3, :3] = Y_UP
    world = turn @ rig.rest_transforms.astype(np.float64)
    local = world.copy()
    parents = rig.joint_parents
    local[1:] = np.linalg.inv(world[parents[1:]]) @ world[1:]
    translations, rotations = _rigid_parts(local)
    return world, translations, rotations


def _posed_joint_rotations(rest_rotations: np.ndarray, pose_rotations: np.ndarray) -> np.ndarray:
    """[..., J, 4] (x, y, z, w) node rotations: the rest rotation, then the pose in the bone's frame."""
    posed = quaternion_multiply(rest_rotations, pose_rotations.astype(np.float64))
    posed /= np.linalg.norm(posed, axis=-1, keepdims=True)
    return posed[..., [1, 2, 3, 0]]


def _mesh_targets(
    builder: _GlbBuilder, count: int, offsets: list[tuple[np.ndarray, np.ndarray]]
) -> list[dict[str, int]]:
    """One POSITION morph target per (indices, [k, 3] offsets in our frame) pair, as sparse accessors."""
    return [
        {"POSITION": builder.sparse_accessor(count, indices, _to_gltf_points(values), "VEC3")}
        for indices, values in offsets
    ]


def _body_targets(rig: Rig) -> list[tuple[np.ndarray, np.ndarray]]:
    targets = []
    for deltas in rig.expression_deltas:
        moved = np.flatnonzero(np.any(deltas != 0, axis=1))
        targets.append((moved, deltas[moved]))
    return targets


def _splat_targets(avatar: GaussianAvatar, rest_means: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """How far each expression alone at weight 1 (at rest) moves each Gaussian's mean."""
    rig = avatar.rig
    binding = bind(avatar)
    corners = rig.triangles[avatar.triangle_ids]
    targets = []
    for deltas in rig.expression_deltas:
        moved_vertices = np.any(deltas != 0, axis=1)
        moved = np.flatnonzero(moved_vertices[corners].any(axis=1))
        if moved.size == 0:
            targets.append((moved, np.zeros((0, 3), np.float32)))
            continue
        means, _, _ = pose_gaussians(binding, rig.vertices + deltas)
        targets.append((moved, (means[moved].astype(np.float64) - rest_means[moved]).astype(np.float32)))
    return targets


def write_avatar_glb(
    path: str | os.PathLike,
    avatar: GaussianAvatar,
    pose: Pose | None = None,
    expression_weights: Mapping[str, float] | np.ndarray | None = None,
    animation: AnimationClip | None = None,
    body: bool = True,
    influences: int = 4,
    name: str = "avatar",
) -> None:
    """Write `avatar` as a rigged splat avatar .glb (see the module docstring).

    The joint nodes take `pose` (rest when None) and the meshes' morph weights
    `expression_weights`; `animation`, when given, becomes the file's one animation. The file
    appears whole or not at all.
    """
    rig = avatar.rig
    pose = pose or Pose.rest(rig.joint_count)
    pose.validate(rig)
    weights = expression_vector(rig, expression_weights)
    if animation is not None:
        animation.check_rig(rig)
    builder = _GlbBuilder()
    builder.document["extensionsUsed"] = [EXTENSION]

    world, local_translations, local_rotations = _joint_frames(rig)
    node_rotations = _posed_joint_rotations(local_rotations, pose.rotations)
    root_translation = local_translations[0] + Y_UP @ pose.translation.astype(np.float64)
    joint_nodes = []
    for joint, joint_name in enumerate(rig.joint_names):
        translation = root_translation if joint == 0 else local_translations[joint]
        node = {
            "name": joint_name,
            "translation": [float(value) for value in translation.astype(np.float32)],
            "rotation": [float(value) for value in node_rotations[joint].astype(np.float32)],
        }
        joint_nodes.append(builder.add("nodes", node))
    for joint in range(1, rig.joint_count):
        parent = builder.document["nodes"][joint_nodes[rig.joint_parents[joint]]]
        parent.setdefault("children", []).append(joint_nodes[joint])
    inverse_binds = np.linalg.inv(world)
    inverse_binds[:, 3] = [0.0, 0.0, 0.0, 1.0]
    inverse_binds = inverse_binds.transpose(0, 2, 1)  # glTF matrices are column-major
    skin = builder.add(
        "skins",
        {
            "name": f"{name}_skeleton",
            "joints": joint_nodes,
            "skeleton": joint_nodes[0],
            "inverseBindMatrices": builder.accessor(inverse_binds.reshape(-1, 16).astype(np.float32), "MAT4"),
        },
    )
    target_names = list(rig.expression_names)
    mesh_weights = [float(value) for value in weights]

    rest = pose_avatar(avatar)
    splat_primitive = _splat_primitive(builder, rest)
    splat_primitive["attributes"].update(
        _skin_attributes(builder, gaussian_skin_influences(avatar, influences), rig.joint_count)
    )
    mesh_nodes = []
    splat_mesh: dict[str, Any] = {"name": f"{name}_splats", "primitives": [splat_primitive]}
    if target_names:
        splat_primitive["targets"] = _mesh_targets(
            builder, avatar.gaussian_count, _splat_targets(avatar, rest.means.astype(np.float64))
        )
        splat_mesh["weights"] = mesh_weights
        splat_mesh["extras"] = {"targetNames": target_names}
    mesh_nodes.append(
        builder.add(
            "nodes", {"name": f"{name}_splats", "mesh": builder.add("meshes", splat_mesh), "skin": skin}
        )
    )
    if body:
        mesh_nodes.append(
            builder.add("nodes", _body_node(builder, rig, influences, skin, name, mesh_weights))
        )
    builder.document["scenes"] = [{"name": name, "nodes": [joint_nodes[0], *mesh_nodes]}]
    builder.document["scene"] = 0
    if animation is not None:
        _add_animation(
            builder, animation, joint_nodes, mesh_nodes, local_translations[0], local_rotations, pose, weights
        )
    _write(path, builder)


def _body_node(
    builder: _GlbBuilder, rig: Rig, influences: int, skin: int, name: str, mesh_weights: list[float]
) -> dict[str, Any]:
    index_dtype = np.uint16 if rig.vertex_count <= 65535 else np.uint32
    attributes = {
        "POSITION": builder.accessor(_to_gltf_points(rig.vertices), "VEC3", target=_ARRAY_BUFFER, bounds=True)
    }
    attributes.update(_skin_attributes(builder, vertex_skin_influences(rig, influences), rig.joint_count))
    primitive: dict[str, Any] = {
        "attributes": attributes,
        "indices": builder.accessor(
            rig.triangles.reshape(-1).astype(index_dtype), "SCALAR", target=_ELEMENT_ARRAY_BUFFER
        ),
        "mode": 4,
    }
    mesh: dict[str, Any] = {"name": f"{name}_body", "primitives": [primitive]}
    if rig.expression_names:
        primitive["targets"] = _mesh_targets(builder, rig.vertex_count, _body_targets(rig))
        mesh["weights"] = mesh_weights
        mesh["extras"] = {"targetNames": list(rig.expression_names)}
    return {"name": f"{name}_body", "mesh": builder.add("meshes", mesh), "skin": skin}


def _add_animation(
    builder: _GlbBuilder,
    clip: AnimationClip,
    joint_nodes: list[int],
    mesh_nodes: list[int],
    root_rest_translation: np.ndarray,
    local_rotations: np.ndarray,
    static_pose: Pose,
    static_weights: np.ndarray,
) -> None:
    times = builder.accessor(clip.times.astype(np.float32), "SCALAR", bounds=True)
    samplers: list[dict[str, Any]] = []
    channels: list[dict[str, Any]] = []

    def channel(node: int, path: str, output: int) -> None:
        samplers.append({"input": times, "output": output, "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": node, "path": path}})

    rotations = _posed_joint_rotations(local_rotations[None], clip.rotations)  # [T, J, 4] xyzw
    # Neighbouring keys on the same side of the 4-sphere, so interpolation takes the short way.
    for frame in range(1, clip.frame_count):
        flip = np.einsum("jc,jc->j", rotations[frame], rotations[frame - 1]) < 0
        rotations[frame, flip] *= -1
    # Joints, root offset and weights get channels where the clip leaves the nodes' static pose.
    alignment = np.abs(np.einsum("tjc,jc->tj", clip.rotations.astype(np.float64), static_pose.rotations))
    for joint in np.flatnonzero((alignment < 1.0 - 1e-7).any(axis=0)):
        channel(
            joint_nodes[joint], "rotation", builder.accessor(rotations[:, joint].astype(np.float32), "VEC4")
        )
    if np.any(clip.translations != static_pose.translation):
        translations = root_rest_translation + clip.translations.astype(np.float64) @ Y_UP.T
        channel(joint_nodes[0], "translation", builder.accessor(translations.astype(np.float32), "VEC3"))
    if clip.expression_weights.shape[1] and np.any(clip.expression_weights != static_weights):
        output = builder.accessor(clip.expression_weights.reshape(-1).astype(np.float32), "SCALAR")
        for node in mesh_nodes:
            channel(node, "weights", output)
    if not channels:
        # A clip that holds the static pose still says so: the root keeps its rotation.
        channel(joint_nodes[0], "rotation", builder.accessor(rotations[:, 0].astype(np.float32), "VEC4"))
    builder.add("animations", {"name": clip.name, "samplers": samplers, "channels": channels})


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class GltfDocument:
    """A parsed .glb: its JSON and its binary chunk, with accessor decoding."""

    json: dict[str, Any]
    binary: bytes
    source: str = ""
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def accessor(self, index: int) -> np.ndarray:
        """[count, components] (or [count] for SCALAR) values of accessor `index`: floats stay
        float32, normalised integers become float32 in [0, 1] or [-1, 1], other integers stay
        integers; sparse substitutions applied."""
        if index not in self._cache:
            self._cache[index] = self._read_accessor(index)
        return self._cache[index]

    def _read_accessor(self, index: int) -> np.ndarray:
        accessors = self.json.get("accessors", [])
        if not isinstance(index, int) or not 0 <= index < len(accessors):
            raise self._error(f"it refers to an accessor ({index}) that does not exist")
        accessor = accessors[index]
        try:
            kind, code, count = accessor["type"], accessor["componentType"], int(accessor["count"])
            components, dtype = _COMPONENTS[kind], np.dtype(_DTYPES[code])
        except (KeyError, TypeError, ValueError):
            raise self._error(f"accessor {index} has no valid type, componentType or count") from None
        if not 0 < count <= MAX_ACCESSOR_VALUES // components:
            raise self._error(
                f"accessor {index} holds {count} elements; 1 to {MAX_ACCESSOR_VALUES // components} are read"
            )
        if "bufferView" in accessor:
            values = self._view_elements(
                accessor["bufferView"], accessor.get("byteOffset", 0), count, components, dtype
            )
        else:
            values = np.zeros((count, components), dtype)
        sparse = accessor.get("sparse")
        if sparse is not None:
            values = values.copy()
            try:
                sparse_count = int(sparse["count"])
                indices = self._view_elements(
                    sparse["indices"]["bufferView"],
                    sparse["indices"].get("byteOffset", 0),
                    sparse_count,
                    1,
                    np.dtype(_DTYPES[sparse["indices"]["componentType"]]),
                )[:, 0]
                substitutes = self._view_elements(
                    sparse["values"]["bufferView"],
                    sparse["values"].get("byteOffset", 0),
                    sparse_count,
                    components,
                    dtype,
                )
            except (KeyError, TypeError, ValueError):
                raise self._error(f"accessor {index} has a malformed sparse part") from None
            if indices.size and (indices.min() < 0 or indices.max() >= count):
                raise self._error(f"accessor {index} has sparse indices outside its {count} elements")
            values[indices.astype(np.int64)] = substitutes
        if accessor.get("normalized"):
            values = _normalised(values)
        elif dtype.kind == "f":
            values = values.astype(np.float32)
        return values[:, 0] if kind == "SCALAR" else values

    def _view_elements(
        self, view_index: Any, offset: Any, count: int, components: int, dtype: np.dtype
    ) -> np.ndarray:
        views = self.json.get("bufferViews", [])
        if not isinstance(view_index, int) or not 0 <= view_index < len(views):
            raise self._error(f"it refers to a buffer view ({view_index}) that does not exist")
        view = views[view_index]
        try:
            if view.get("buffer", 0) != 0:
                raise self._error(
                    "its data lies in an external buffer; only self-contained .glb files are read"
                )
            start = int(view.get("byteOffset", 0)) + int(offset)
            length = int(view["byteLength"])
            stride = int(view.get("byteStride", components * dtype.itemsize))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._error(f"buffer view {view_index} is malformed") from None
        element = components * dtype.itemsize
        end = start + (count - 1) * stride + element if count else start
        view_end = int(view.get("byteOffset", 0)) + length
        if start < 0 or stride < element or end > view_end or view_end > len(self.binary):
            raise self._error(f"buffer view {view_index} is too short for what it is said to hold")
        if count == 0:
            return np.zeros((0, components), dtype)
        raw = np.frombuffer(self.binary, np.uint8, count=end - start, offset=start)
        if stride == element:
            return raw.view(dtype.newbyteorder("<")).reshape(count, components).copy()
        rows = np.lib.stride_tricks.as_strided(raw, shape=(count, element), strides=(stride, 1))
        return np.ascontiguousarray(rows).view(dtype.newbyteorder("<")).reshape(count, components)

    def _error(self, reason: str) -> AvatarFileError:
        return AvatarFileError(f"Cannot read '{self.source}' as glTF: {reason}.")


def _normalised(values: np.ndarray) -> np.ndarray:
    info = np.iinfo(values.dtype)
    scaled = values.astype(np.float64) / info.max
    return np.maximum(scaled, -1.0).astype(np.float32)


def read_glb(path: str | os.PathLike) -> GltfDocument:
    """Parse a binary glTF 2.0 file: header, JSON chunk and optional BIN chunk, checked."""
    source = Path(path)

    def error(reason: str) -> AvatarFileError:
        return AvatarFileError(f"Cannot read '{source.name}' as a .glb: {reason}.")

    try:
        with open_regular_file(source) as handle:
            data = bytes(read_at_most(handle, MAX_GLB_BYTES))
    except OSError as os_error:
        raise error(os_error.strerror or str(os_error)) from None
    if len(data) > MAX_GLB_BYTES:
        raise error("it is larger than 4 GB")
    if len(data) < 20:
        raise error("it is too short to be one")
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != _GLB_MAGIC:
        raise error("it does not start with the glTF magic bytes (a .gltf text file is not read here)")
    if version != 2:
        raise error(f"it is glTF version {version}; only 2 is read")
    if total != len(data):
        raise error(f"its header says {total} bytes, the file has {len(data)} (truncated?)")
    chunks: list[tuple[int, bytes]] = []
    offset = 12
    while offset < total:
        if offset + 8 > total:
            raise error("a chunk header is cut short")
        length, kind = struct.unpack_from("<II", data, offset)
        if offset + 8 + length > total:
            raise error("a chunk runs past the end of the file")
        chunks.append((kind, data[offset + 8 : offset + 8 + length]))
        offset += 8 + length  # a chunk's length counts its padding
    if not chunks or chunks[0][0] != _JSON_CHUNK:
        raise error("its first chunk is not JSON")
    try:
        document = json.loads(chunks[0][1].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as json_error:
        raise error(f"its JSON is malformed ({json_error})") from None
    if not isinstance(document, dict) or document.get("asset", {}).get("version") != "2.0":
        raise error("its JSON is not a glTF 2.0 document")
    binary = chunks[1][1] if len(chunks) > 1 and chunks[1][0] == _BIN_CHUNK else b""
    return GltfDocument(json=document, binary=binary, source=source.name)


def _node_global_matrices(document: GltfDocument) -> dict[int, np.ndarray]:
    """Global 4x4 transform of every node reachable from the scenes' roots (or of every node)."""
    nodes = document.json.get("nodes", [])
    local = [_node_matrix(node) for node in nodes]
    children = {index: node.get("children", []) for index, node in enumerate(nodes)}
    is_child = {child for kids in children.values() for child in kids}
    result: dict[int, np.ndarray] = {}
    stack = [(index, np.eye(4)) for index in range(len(nodes)) if index not in is_child]
    while stack:
        index, parent = stack.pop()
        if index in result or not 0 <= index < len(nodes):
            continue
        result[index] = parent @ local[index]
        stack.extend((child, result[index]) for child in children[index])
    return result


def _node_matrix(node: Mapping[str, Any]) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], np.float64).reshape(4, 4).T
    matrix = np.eye(4)
    x, y, z, w = node.get("rotation", [0.0, 0.0, 0.0, 1.0])
    matrix[:3, :3] = quaternion_to_matrix(np.array([w, x, y, z], np.float64)) * np.asarray(
        node.get("scale", [1.0, 1.0, 1.0]), np.float64
    )
    matrix[:3, 3] = node.get("translation", [0.0, 0.0, 0.0])
    return matrix


def splat_primitives(document: GltfDocument) -> list[tuple[int, int, dict[str, Any]]]:
    """(node, mesh, primitive) of every KHR_gaussian_splatting primitive instanced by a node."""
    found = []
    meshes = document.json.get("meshes", [])
    for node_index, node in enumerate(document.json.get("nodes", [])):
        mesh_index = node.get("mesh")
        if isinstance(mesh_index, int) and 0 <= mesh_index < len(meshes):
            for primitive in meshes[mesh_index].get("primitives", []):
                if EXTENSION in primitive.get("extensions", {}):
                    found.append((node_index, mesh_index, primitive))
    return found


def read_splats_glb(path: str | os.PathLike) -> Splats:
    """The first KHR_gaussian_splatting primitive of a .glb as `Splats` in our frame.

    The node's global transform is applied when it is a similarity (rotation, translation,
    uniform scale); a skinned node's transform is ignored, as glTF says, and its splats come back
    at their bind pose. Quaternions are renormalised; opacities must lie in [0, 1] and scales must
    not be negative (zero scales become the smallest positive float32).
    """
    document = read_glb(path)
    found = splat_primitives(document)
    if not found:
        raise document._error("it holds no KHR_gaussian_splatting primitive")
    node_index, _, primitive = found[0]
    attributes = primitive.get("attributes", {})
    missing = [
        name
        for name in (
            "POSITION",
            f"{PREFIX}ROTATION",
            f"{PREFIX}SCALE",
            f"{PREFIX}OPACITY",
            sh_attribute(0, 0),
        )
        if name not in attributes
    ]
    if missing:
        raise document._error(f"its splat primitive lacks {', '.join(missing)}")
    if primitive.get("mode", 4) != 0:
        raise document._error("its splat primitive is not of mode POINTS (0)")
    means = document.accessor(attributes["POSITION"]).astype(np.float64)
    xyzw = document.accessor(attributes[f"{PREFIX}ROTATION"]).astype(np.float64)
    scales = document.accessor(attributes[f"{PREFIX}SCALE"]).astype(np.float64)
    opacities = document.accessor(attributes[f"{PREFIX}OPACITY"]).astype(np.float64)
    degree = 0
    while degree < 3 and all(sh_attribute(degree + 1, n) in attributes for n in range(2 * degree + 3)):
        degree += 1
    sh = np.stack(
        [
            document.accessor(attributes[sh_attribute(level, n)]).astype(np.float32)
            for level in range(degree + 1)
            for n in range(2 * level + 1)
        ],
        axis=1,
    )
    count = means.shape[0]
    shapes = {"ROTATION": (xyzw, 4), "SCALE": (scales, 3), "SH": (sh[:, 0], 3)}
    for label, (values, width) in shapes.items():
        if values.shape != (count, width):
            raise document._error(f"its {label} attribute does not have one VEC{width} per splat")
    if opacities.shape != (count,):
        raise document._error("its OPACITY attribute does not have one value per splat")
    if not all(np.isfinite(values).all() for values in (means, xyzw, scales, opacities, sh)):
        raise document._error("its splats hold NaN or infinite values")
    if opacities.size and (opacities.min() < 0 or opacities.max() > 1):
        raise document._error("its opacities lie outside [0, 1]")
    if scales.size and scales.min() < 0:
        raise document._error("its scales are negative")
    norms = np.linalg.norm(xyzw, axis=1, keepdims=True)
    if norms.size and norms.min() == 0:
        raise document._error("its rotations include zero quaternions")
    rotations = (xyzw / norms)[:, [3, 0, 1, 2]]

    transform = np.eye(4)
    if "skin" not in document.json["nodes"][node_index]:
        transform = _node_global_matrices(document).get(node_index, np.eye(4))
    to_ours = np.eye(4)
    to_ours[:3, :3] = Y_UP.T
    transform = to_ours @ transform
    linear = transform[:3, :3]
    scale = np.cbrt(np.linalg.det(linear))
    turn = linear / scale if scale > 0 else linear
    if scale <= 0 or not np.allclose(turn.T @ turn, np.eye(3), atol=1e-5):
        raise document._error("its splat node's transform is not a rotation with a uniform scale")
    return Splats(
        means=(means @ linear.T + transform[:3, 3]).astype(np.float32),
        rotations=quaternion_multiply(matrix_to_quaternion(turn), rotations).astype(np.float32),
        scales=np.maximum(scales * scale, np.finfo(np.float32).tiny).astype(np.float32),
        opacities=opacities.astype(np.float32),
        sh=rotate_sh(sh, turn),
    )
