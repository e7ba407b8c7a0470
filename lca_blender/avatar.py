"""The avatar data model: a rig, Gaussians bound to its template mesh, their appearance, provenance.

Everything here is a dataclass of numpy arrays (float32 / int32) that owns its data and checks its
own shapes. These classes are the only thing that crosses between the engine and Blender.

Conventions (shared by every module of the project):
- Units are metres; the body stands along +Z and faces -Y (Blender's front view looks at its face).
- Rotations are unit quaternions in (w, x, y, z) order, as in 3DGS and Blender.
- A joint's rest transform is its bone frame in Blender's convention: the bone's Y axis runs from
  head to tail, the frame sits at the head. A pose rotates each joint in that frame, exactly as a
  Blender pose bone's rotation does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import AvatarError, PoseError

ARKIT_EXPRESSIONS: tuple[str, ...] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft",
    "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight", "tongueOut",
)  # fmt: skip
"""The 52 ARKit blendshape names, in ARKit's documented order."""

SKIN_LAYER = 0
"""`Rig.vertex_layers` value of the body's own skin (the body model's mesh)."""
OUTER_LAYER = 1
"""`Rig.vertex_layers` value of the outer layer fitted beyond the skin: clothes, hair, shoes."""
LAYER_NAMES = ("skin", "outer")

RIGID_TOLERANCE = 1e-3
"""How far a rest frame's rotation part may be from orthonormal (float32 frames are ~1e-7 off)."""
UNIT_TOLERANCE = 1e-3
"""How far from 1 a unit quaternion's length, a row of skin weights' or barycentrics' sum may be."""
MIN_BONE_LENGTH = 1e-5
"""Metres; Blender deletes zero-length bones, so a rig needs none."""
MAX_COORDINATE = 1e4
"""Metres: positions and offsets in a rig or avatar stay within this (a person is about 2 m tall):
posing in float32 stays far from overflow, and triangles keep frames precise enough to orient
Gaussians (a vertex 1e5 m out already gives posed rotations that are not unit quaternions)."""
MIN_TWICE_AREA = 1e-12
"""Square metres; a Gaussian's triangle needs an area (a micrometre-sized triangle has 1e-12)."""
MAX_LOG_SCALE = 40.0
"""|log_scales| bound: exp() of it times any triangle's size stays a positive, finite float32."""

FINGERS: tuple[str, ...] = ("finger1", "finger2", "finger3", "finger4", "finger5")
"""The rig's finger names, thumb to little finger (MakeHuman: `finger2-1.L` is the left index's first
phalanx); MediaPipe Hands numbers its landmarks in the same order."""


def shape_mismatch(array: np.ndarray, shape: tuple) -> str | None:
    """None when `array` has `shape` (None = any size), else the wanted shape as text, e.g. "Nx3"."""
    if array.ndim == len(shape) and all(
        want is None or have == want for have, want in zip(array.shape, shape, strict=True)
    ):
        return None
    return "x".join("N" if want is None else str(want) for want in shape)


def _check_array(name: str, array: np.ndarray, shape: tuple, dtype: type) -> None:
    """Raise AvatarError unless `array` has `dtype` and `shape` (None = any size) and is finite."""
    if not isinstance(array, np.ndarray) or array.dtype != np.dtype(dtype):
        found = getattr(array, "dtype", type(array).__name__)
        raise AvatarError(f"'{name}' must be a {np.dtype(dtype)} array, found {found}.")
    wanted = shape_mismatch(array, shape)
    if wanted:
        raise AvatarError(f"'{name}' must have shape {wanted}, found {array.shape}.")
    if array.dtype.kind == "f" and not _all_finite(array):
        raise AvatarError(f"'{name}' contains NaN or infinite values.")


def _all_finite(array: np.ndarray, block_bytes: int = 64 * 1024**2) -> bool:
    """np.isfinite(array).all(), a block of rows at a time: a large array needs no array of flags."""
    rows = max(1, block_bytes // max(1, array[:1].nbytes))
    return all(np.isfinite(array[start : start + rows]).all() for start in range(0, len(array), rows))


def _check_bounded(name: str, values: np.ndarray) -> None:
    """Raise AvatarError unless every value of the finite array `values` is within MAX_COORDINATE."""
    if values.size and max(values.max(), -values.min()) > MAX_COORDINATE:  # no |values| copy
        raise AvatarError(f"'{name}' holds values over {MAX_COORDINATE:,.0f} m; a person is about 2 m tall.")


def _within(values: np.ndarray, low: float, high: float) -> bool:
    """Whether every value lies in [low, high] (False for NaN: the comparisons are written so)."""
    return bool(values.min() >= low and values.max() <= high)


def _check_indices(name: str, indices: np.ndarray, upper: int) -> None:
    if indices.size and (indices.min() < 0 or indices.max() >= upper):
        raise AvatarError(f"'{name}' refers to items outside 0..{upper - 1}.")


def _flat_triangles(vertices: np.ndarray, triangles: np.ndarray, block: int = 1 << 20) -> np.ndarray:
    """[F] bool: which triangles have (almost) no area, computed a block of triangles at a time."""
    vertices = vertices.astype(np.float64)
    flat = np.empty(len(triangles), bool)
    for start in range(0, len(triangles), block):
        corners = vertices[triangles[start : start + block]]
        cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        flat[start : start + block] = np.linalg.norm(cross, axis=1) < MIN_TWICE_AREA
    return flat


@dataclass
class Rig:
    """A skinned, shaped body: skeleton, template mesh, skin weights and expression blendshapes."""

    joint_names: list[str]
    joint_parents: np.ndarray  # [J] int32, -1 for the root; parents come before children
    rest_transforms: np.ndarray  # [J, 4, 4] float32 world bone frames at rest (Y along the bone)
    bone_tails: np.ndarray  # [J, 3] float32 Blender bone tails (heads are the frames' origins)
    vertices: np.ndarray  # [V, 3] float32 shaped template mesh at rest
    triangles: np.ndarray  # [F, 3] int32, counter-clockwise seen from outside
    skin_indices: np.ndarray  # [V, K] int32 joint per influence
    skin_weights: np.ndarray  # [V, K] float32, rows sum to 1
    expression_names: list[str]
    expression_deltas: np.ndarray  # [E, V, 3] float32 vertex offsets at weight 1
    uvs: np.ndarray | None = None  # [U, 2] float32 texture coordinates
    triangle_uvs: np.ndarray | None = None  # [F, 3] int32 indices into uvs per corner
    body_model: str = "unknown"  # e.g. "anny 0.6.2" or "smplx"
    body_parameters: dict[str, Any] = field(default_factory=dict)  # phenotype, betas, ...
    # [V] int32 SKIN_LAYER or OUTER_LAYER; None = all skin (every rig before the outer layer). The
    # body model's vertices come first, so its indices (landmarks, expressions) stay valid.
    vertex_layers: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def joint_count(self) -> int:
        return len(self.joint_names)

    @property
    def vertex_count(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def skin_vertex_count(self) -> int:
        """How many of the first vertices are the body's skin (the rest are the outer layer)."""
        if self.vertex_layers is None:
            return self.vertex_count
        return int(np.count_nonzero(self.vertex_layers == SKIN_LAYER))

    @property
    def bone_heads(self) -> np.ndarray:
        """[J, 3] the bones' heads: the origins of the rest frames."""
        return self.rest_transforms[:, :3, 3]

    def joint_index(self, name: str) -> int:
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise PoseError(
                f"The rig has no joint named '{name}'. Joints are: {', '.join(self.joint_names)}."
            ) from None

    def validate(self) -> None:
        joint_count, vertex_count = len(self.joint_names), int(np.shape(self.vertices)[0])
        if joint_count == 0:
            raise AvatarError("A rig needs at least one joint.")
        if len(set(self.joint_names)) != joint_count:
            raise AvatarError("Joint names must be unique.")
        if len(set(self.expression_names)) != len(self.expression_names):
            raise AvatarError("Expression names must be unique.")
        _check_array("joint_parents", self.joint_parents, (joint_count,), np.int32)
        _check_array("rest_transforms", self.rest_transforms, (joint_count, 4, 4), np.float32)
        _check_array("bone_tails", self.bone_tails, (joint_count, 3), np.float32)
        _check_array("vertices", self.vertices, (None, 3), np.float32)
        _check_array("triangles", self.triangles, (None, 3), np.int32)
        _check_array("skin_indices", self.skin_indices, (vertex_count, None), np.int32)
        _check_array("skin_weights", self.skin_weights, self.skin_indices.shape, np.float32)
        _check_array(
            "expression_deltas",
            self.expression_deltas,
            (len(self.expression_names), vertex_count, 3),
            np.float32,
        )
        parents = self.joint_parents
        if parents[0] != -1 or (joint_count > 1 and not (parents[1:] < np.arange(1, joint_count)).all()):
            raise AvatarError("Joint 0 must be the root and every parent must precede its child.")
        if joint_count > 1 and parents[1:].min() < 0:
            raise AvatarError("Only the first joint may be a root.")
        _check_indices("triangles", self.triangles, vertex_count)
        _check_indices("skin_indices", self.skin_indices, joint_count)
        for name in ("vertices", "expression_deltas", "bone_tails", "rest_transforms"):
            _check_bounded(name, getattr(self, name))
        self._check_bones()
        weights = self.skin_weights
        if weights.size and (
            weights.min() < 0 or np.abs(weights.sum(axis=1, dtype=np.float64) - 1).max() > UNIT_TOLERANCE
        ):
            raise AvatarError("'skin_weights' must be 0 or more, and each vertex's weights must sum to 1.")
        if (self.uvs is None) != (self.triangle_uvs is None):
            raise AvatarError("'uvs' and 'triangle_uvs' come together or not at all.")
        if self.uvs is not None:
            _check_array("uvs", self.uvs, (None, 2), np.float32)
            _check_array("triangle_uvs", self.triangle_uvs, self.triangles.shape, np.int32)
            _check_indices("triangle_uvs", self.triangle_uvs, int(self.uvs.shape[0]))
        if self.vertex_layers is not None:
            _check_array("vertex_layers", self.vertex_layers, (vertex_count,), np.int32)
            layers = self.vertex_layers
            if layers.size and (layers.min() < SKIN_LAYER or layers.max() > OUTER_LAYER):
                raise AvatarError(f"'vertex_layers' must hold {SKIN_LAYER} (skin) or {OUTER_LAYER} (outer).")
            skin = int(np.count_nonzero(layers == SKIN_LAYER))
            if (layers[:skin] != SKIN_LAYER).any():
                raise AvatarError("The skin's vertices must come before the outer layer's.")

    def _check_bones(self) -> None:
        """The rest frames are rigid (posing inverts them) and each bone runs from its frame's origin
        along the frame's Y axis to its tail, with a length (how Blender rebuilds the same frames)."""
        rest = self.rest_transforms.astype(np.float64)
        rotations = rest[:, :3, :3]
        orthonormal_error = np.abs(np.einsum("jki,jkl->jil", rotations, rotations) - np.eye(3)).max()
        bottom_error = np.abs(rest[:, 3] - (0.0, 0.0, 0.0, 1.0)).max()
        if not (orthonormal_error <= RIGID_TOLERANCE and bottom_error <= RIGID_TOLERANCE) or (
            np.linalg.det(rotations).min() <= 0
        ):
            raise AvatarError("'rest_transforms' must be rigid bone frames: a rotation and a translation.")
        bones = self.bone_tails.astype(np.float64) - rest[:, :3, 3]
        lengths = np.linalg.norm(bones, axis=1)
        if lengths.min() < MIN_BONE_LENGTH:
            raise AvatarError(f"Every bone must be at least {MIN_BONE_LENGTH} m long, from head to tail.")
        along_y = np.einsum("ji,ji->j", bones, rotations[:, :, 1]) / lengths
        if not along_y.min() >= 1 - RIGID_TOLERANCE:
            raise AvatarError("'bone_tails' must lie along the Y axis of each bone's rest frame.")


@dataclass
class GaussianAvatar:
    """Gaussians bound to the triangles of a rig's template mesh, with their appearance.

    A Gaussian's rest position is the barycentric point of its triangle plus `normal_offsets`
    metres along the triangle's unit normal. Its rotation is `rotations` composed after the
    triangle's frame (tangent = first edge, normal, bitangent = normal x tangent), and its scale is
    exp(`log_scales`) times the triangle's size (sqrt of twice its area), so Gaussians stretch with
    the skin they ride on. `antialiased`: the Gaussians were fitted to be rendered with their
    opacities compensated for the screen-space low-pass filter (`maths/projection.py`).
    """

    rig: Rig
    triangle_ids: np.ndarray  # [N] int32 parent triangle
    barycentrics: np.ndarray  # [N, 3] float32, rows sum to 1
    normal_offsets: np.ndarray  # [N] float32 metres along the triangle normal
    rotations: np.ndarray  # [N, 4] float32 unit quaternion (w, x, y, z) in the triangle frame
    log_scales: np.ndarray  # [N, 3] float32 log of scale / triangle size
    opacities: np.ndarray  # [N] float32 in [0, 1]
    albedo: np.ndarray  # [N, 3] float32 linear reflectance in [0, 1]
    roughness: np.ndarray  # [N] float32 in [0, 1]
    specular: np.ndarray  # [N] float32 in [0, 1]
    sh: np.ndarray  # [N, B, 3] float32 "as captured" colour, 3DGS spherical harmonics (B = 1, 4, 9, 16)
    provenance: dict[str, Any] = field(default_factory=dict)
    antialiased: bool = False

    def __post_init__(self) -> None:
        self.validate()

    @property
    def gaussian_count(self) -> int:
        return int(self.triangle_ids.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(np.sqrt(self.sh.shape[1]))) - 1

    def validate(self) -> None:
        count = int(np.shape(self.triangle_ids)[0]) if np.ndim(self.triangle_ids) else -1
        _check_array("triangle_ids", self.triangle_ids, (None,), np.int32)
        _check_array("barycentrics", self.barycentrics, (count, 3), np.float32)
        _check_array("normal_offsets", self.normal_offsets, (count,), np.float32)
        _check_array("rotations", self.rotations, (count, 4), np.float32)
        _check_array("log_scales", self.log_scales, (count, 3), np.float32)
        _check_array("opacities", self.opacities, (count,), np.float32)
        _check_array("albedo", self.albedo, (count, 3), np.float32)
        _check_array("roughness", self.roughness, (count,), np.float32)
        _check_array("specular", self.specular, (count,), np.float32)
        _check_array("sh", self.sh, (count, None, 3), np.float32)
        if self.sh.shape[1] not in (1, 4, 9, 16):
            raise AvatarError(f"'sh' must hold 1, 4, 9 or 16 coefficients, found {self.sh.shape[1]}.")
        _check_indices("triangle_ids", self.triangle_ids, int(self.rig.triangles.shape[0]))
        for name in ("opacities", "roughness", "specular", "albedo"):
            values = getattr(self, name)
            if values.size and (values.min() < 0 or values.max() > 1):
                raise AvatarError(f"'{name}' must lie between 0 and 1.")
        if count <= 0:
            return
        if _flat_triangles(self.rig.vertices, self.rig.triangles)[self.triangle_ids].any():
            raise AvatarError(
                "Some Gaussians sit on triangles of no area (collapsed), which give them no orientation."
            )
        # In float32, without copies: both run on every import. |q| within UNIT_TOLERANCE of 1 is
        # |q|^2 within these bounds; float32 rounding (1e-7) is far below the tolerance.
        squared_norms = np.einsum("ij,ij->i", self.rotations, self.rotations)
        if not _within(squared_norms, (1 - UNIT_TOLERANCE) ** 2, (1 + UNIT_TOLERANCE) ** 2):
            raise AvatarError("'rotations' must be unit quaternions (w, x, y, z).")
        # Row sums as column additions: 10x faster than sum(axis=1), and unlike a matrix product
        # it wakes no BLAS threads, which spin on the cores the rest of the import needs.
        sums = self.barycentrics[:, 0] + self.barycentrics[:, 1] + self.barycentrics[:, 2]
        if not _within(sums, 1 - UNIT_TOLERANCE, 1 + UNIT_TOLERANCE):
            raise AvatarError("Each Gaussian's 'barycentrics' must sum to 1.")
        _check_bounded("normal_offsets", self.normal_offsets)
        if np.abs(self.log_scales).max() > MAX_LOG_SCALE:
            raise AvatarError(f"'log_scales' must lie between -{MAX_LOG_SCALE:g} and {MAX_LOG_SCALE:g}.")

    def subset(self, keep: np.ndarray) -> GaussianAvatar:
        """A copy with only the Gaussians selected by `keep` (a boolean mask or indices)."""
        per_gaussian = {
            f.name: getattr(self, f.name)[keep]
            for f in dataclasses.fields(self)
            if f.name not in ("rig", "provenance", "antialiased")
        }
        return GaussianAvatar(
            rig=self.rig, provenance=dict(self.provenance), antialiased=self.antialiased, **per_gaussian
        )


@dataclass
class Pose:
    """A body pose: a local rotation per joint (in its rest bone frame) and a root translation."""

    rotations: np.ndarray  # [J, 4] float32 unit quaternions (w, x, y, z), identity = rest
    translation: np.ndarray  # [3] float32 world offset of the whole body, metres

    @classmethod
    def rest(cls, joint_count: int) -> Pose:
        rotations = np.zeros((joint_count, 4), np.float32)
        rotations[:, 0] = 1.0
        return cls(rotations=rotations, translation=np.zeros(3, np.float32))

    def validate(self, rig: Rig) -> None:
        try:
            _check_array("pose rotations", self.rotations, (rig.joint_count, 4), np.float32)
            _check_array("pose translation", self.translation, (3,), np.float32)
        except AvatarError as error:
            raise PoseError(str(error)) from None
        norms = np.linalg.norm(self.rotations, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise PoseError("Pose rotations must be unit quaternions (w, x, y, z).")


@dataclass
class Splats:
    """World-space Gaussians, as 3DGS tools see them (a posed avatar or an imported .ply)."""

    means: np.ndarray  # [N, 3] float32
    rotations: np.ndarray  # [N, 4] float32 unit quaternions (w, x, y, z)
    scales: np.ndarray  # [N, 3] float32 standard deviations, metres
    opacities: np.ndarray  # [N] float32 in [0, 1]
    sh: np.ndarray  # [N, B, 3] float32 3DGS spherical harmonics (B = 1, 4, 9, 16)
    antialiased: bool = False  # opacities compensated for the low-pass filter when rendered

    def __post_init__(self) -> None:
        count = int(np.shape(self.means)[0]) if np.ndim(self.means) == 2 else -1
        _check_array("means", self.means, (None, 3), np.float32)
        _check_array("rotations", self.rotations, (count, 4), np.float32)
        _check_array("scales", self.scales, (count, 3), np.float32)
        _check_array("opacities", self.opacities, (count,), np.float32)
        _check_array("sh", self.sh, (count, None, 3), np.float32)
        if self.sh.shape[1] not in (1, 4, 9, 16):
            raise AvatarError(f"'sh' must hold 1, 4, 9 or 16 coefficients, found {self.sh.shape[1]}.")
        if self.scales.size and self.scales.min() <= 0:
            raise AvatarError("Splat scales must be positive.")
        if self.opacities.size and (self.opacities.min() < 0 or self.opacities.max() > 1):
            raise AvatarError("Splat opacities must lie between 0 and 1.")

    @property
    def count(self) -> int:
        return int(self.means.shape[0])
