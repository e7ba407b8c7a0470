"""An avatar as the flat arrays Blender's `foreach_set` takes, and back: bones, mesh, skin, splats.

The Blender side (`operators/import_export.py`, `viewport/posing.py`) only moves these arrays in
and out of Blender data; every conversion lives here, in numpy, with tests that need no Blender.

Splats are stored as point attributes of a mesh whose vertices are the Gaussians' rest means:
- 3DGS attributes under 3DGS names and conventions, describing the Gaussians at rest in the
  body's object space: `f_dc_0..2`, `f_rest_*` (channel-major, as INRIA writes them),
  `opacity` (logit), `scale_0..2` (natural log of standard deviations), `rot_0..3` (w, x, y, z);
- the binding to the body mesh: `triangle_id`, `bary_0..2`, `normal_offset`;
- the relighting appearance: `albedo` (a 3-vector), `roughness`, `specular`.
With the body's rest mesh this is the whole avatar, so a .blend needs no .lca file to pose it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..avatar import OUTER_LAYER, GaussianAvatar, Rig, Splats
from ..errors import AvatarError
from ..maths.deform import GaussianBinding, bind, component_rows, place_gaussians, triangle_frames
from ..maths.rotations import bone_roll_towards, quaternion_multiply

OPACITY_CLIP = 1e-6
OUTER_LAYER_GROUP = "LCA Outer Layer"
"""The body's vertex group of its outer layer (clothes, hair): no bone has this name, so the
armature ignores it; artists select, hide or mask by it."""
"""Opacities are clipped to [OPACITY_CLIP, 1 - OPACITY_CLIP] before the logit (as in formats/ply.py)."""


@dataclass(frozen=True)
class BoneArrays:
    """A rig's skeleton as Blender edit bones take it."""

    names: list[str]
    parents: np.ndarray  # [J] int32, -1 for the root
    heads: np.ndarray  # [J, 3] float32
    tails: np.ndarray  # [J, 3] float32
    rolls: np.ndarray  # [J] float32 radians


@dataclass(frozen=True)
class MeshArrays:
    """A triangle mesh as `vertices.add`, `loops.add`, `polygons.add` + `foreach_set` take it."""

    coordinates: np.ndarray  # [V * 3] float32
    loop_vertices: np.ndarray  # [3 F] int32 vertex of each loop ("vertex_index")
    loop_starts: np.ndarray  # [F] int32 first loop of each polygon ("loop_start")
    loop_totals: np.ndarray  # [F] int32 loops per polygon (3; read-only in Blender 4.0+)
    loop_uvs: np.ndarray | None  # [3 F * 2] float32 UV of each loop ("uv"), when the rig has UVs

    @property
    def vertex_count(self) -> int:
        return self.coordinates.shape[0] // 3

    @property
    def polygon_count(self) -> int:
        return int(self.loop_starts.shape[0])


def bone_arrays(rig: Rig) -> BoneArrays:
    """Heads, tails and rolls from which Blender rebuilds exactly `rig.rest_transforms`.

    Blender derives a bone's frame from head, tail and roll with the formula of
    `rotations.bone_matrix`; the roll is the one that turns its X axis onto the rest frame's X.
    """
    heads = rig.rest_transforms[:, :3, 3].astype(np.float64)
    tails = rig.bone_tails.astype(np.float64)
    rolls = bone_roll_towards(heads, tails, rig.rest_transforms[:, :3, 0].astype(np.float64))
    return BoneArrays(
        names=list(rig.joint_names),
        parents=rig.joint_parents.copy(),
        heads=heads.astype(np.float32),
        tails=tails.astype(np.float32),
        rolls=rolls.astype(np.float32),
    )


def mesh_arrays(rig: Rig) -> MeshArrays:
    """The rig's template mesh as flat loop arrays, one triangle per polygon."""
    triangle_count = int(rig.triangles.shape[0])
    loop_uvs = None
    if rig.uvs is not None:
        loop_uvs = np.ascontiguousarray(rig.uvs[rig.triangle_uvs.reshape(-1)], np.float32).reshape(-1)
    return MeshArrays(
        coordinates=np.ascontiguousarray(rig.vertices, np.float32).reshape(-1),
        loop_vertices=np.ascontiguousarray(rig.triangles, np.int32).reshape(-1),
        loop_starts=np.arange(0, 3 * triangle_count, 3, dtype=np.int32),
        loop_totals=np.full(triangle_count, 3, np.int32),
        loop_uvs=loop_uvs,
    )


def joint_weights(rig: Rig) -> np.ndarray:
    """[J, V] float32 dense skin weight of every joint on every vertex (0 where it has no influence).

    One row per Blender vertex group; repeated influences of a joint on a vertex add up.
    """
    vertices = np.broadcast_to(np.arange(rig.vertex_count)[:, None], rig.skin_indices.shape)
    flat_index = rig.skin_indices.astype(np.int64) * rig.vertex_count + vertices
    weights = np.bincount(
        flat_index.ravel(), rig.skin_weights.ravel().astype(np.float64), rig.joint_count * rig.vertex_count
    )
    return weights.reshape(rig.joint_count, rig.vertex_count).astype(np.float32)


def outer_layer_weights(rig: Rig) -> np.ndarray | None:
    """[V] 1.0 on the outer layer's vertices and 0.0 on the skin's; None when the rig has none."""
    if rig.vertex_layers is None or not (rig.vertex_layers == OUTER_LAYER).any():
        return None
    return (rig.vertex_layers == OUTER_LAYER).astype(np.float32)


def shape_key_coordinates(rig: Rig) -> np.ndarray:
    """[E, V * 3] float32 each expression's shape key: the rest mesh plus its blendshape at weight 1."""
    keys = rig.vertices[None, :, :] + rig.expression_deltas
    return np.ascontiguousarray(keys, np.float32).reshape(len(rig.expression_names), -1)


def splat_attributes(
    avatar: GaussianAvatar, binding: GaussianBinding | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The Gaussians' rest means [N, 3] (the splat mesh's vertices) and their point attributes.

    Attributes are [N] float32 (Blender 'FLOAT'), [N] int32 ('INT') or [N, 3] float32
    ('FLOAT_VECTOR'); see the module docstring for the names. `binding` is `bind(avatar)` when
    the caller has it already (the importer binds once for this and for the preview).
    """
    binding = bind(avatar) if binding is None else binding
    # Placing on the rest mesh gives the rest means and scales (the rotations are the binding's).
    means, scales = place_gaussians(binding, avatar.rig.vertices)
    attributes = _gaussian_attributes(avatar.sh, avatar.opacities, scales, binding.rest_rotations)
    attributes["triangle_id"] = avatar.triangle_ids
    barycentric_rows = component_rows(avatar.barycentrics)
    for corner in range(3):
        attributes[f"bary_{corner}"] = barycentric_rows[corner]
    attributes["normal_offset"] = avatar.normal_offsets
    attributes["albedo"] = avatar.albedo
    attributes["roughness"] = avatar.roughness
    attributes["specular"] = avatar.specular
    return means, _stored(attributes)


def static_splat_attributes(splats: Splats) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The means [N, 3] and the 3DGS point attributes (as `splat_attributes`, without binding or
    relighting appearance) of static splats, such as a .ply's: the mesh Blender before 5.3 holds
    them in, which the viewport preview draws where the mesh object is."""
    rotation_rows = component_rows(splats.rotations)
    attributes = _gaussian_attributes(splats.sh, splats.opacities, splats.scales, rotation_rows)
    return np.ascontiguousarray(splats.means, np.float32), _stored(attributes)


def static_splats_from_attributes(means: np.ndarray, attributes: Mapping[str, np.ndarray]) -> Splats:
    """The static splats of a mesh made by `static_splat_attributes`, in its object space."""
    missing = [name for name in _GAUSSIAN_NAMES if name not in attributes]
    if missing:
        raise AvatarError(f"The splats lack the attributes {', '.join(missing)}; import the .ply again.")
    rotations = np.stack([np.asarray(attributes[f"rot_{component}"]) for component in range(4)], 1)
    log_scales = np.stack([np.asarray(attributes[f"scale_{axis}"], np.float64) for axis in range(3)], 1)
    return Splats(
        means=np.asarray(means, np.float32).reshape(-1, 3),
        rotations=rotations.astype(np.float32),  # unit, as the .ply reader wrote them
        scales=np.exp(log_scales).astype(np.float32),
        opacities=_opacities_from_logits(attributes).astype(np.float32),
        sh=_sh_from_attributes(attributes),
    )


# The 3DGS attributes every splats mesh has (the f_rest_* follow the SH degree).
_GAUSSIAN_NAMES = (
    *(f"f_dc_{channel}" for channel in range(3)),
    "opacity",
    *(f"scale_{axis}" for axis in range(3)),
    *(f"rot_{component}" for component in range(4)),
)


def _gaussian_attributes(
    sh: np.ndarray,  # [N, B, 3]
    opacities: np.ndarray,  # [N] linear
    scales: np.ndarray,  # [N, 3] standard deviations
    rotation_rows: np.ndarray,  # [4, N] w, x, y, z
) -> dict[str, np.ndarray]:
    """The 3DGS attributes under 3DGS names and conventions (module docstring)."""
    # Each attribute is one contiguous row: transposing whole arrays once is far cheaper than
    # copying out 30 strided columns.
    log_scale_rows = np.log(component_rows(scales))
    clipped = np.clip(opacities.astype(np.float64), OPACITY_CLIP, 1.0 - OPACITY_CLIP)
    coefficients = sh.shape[1]
    sh_rows = component_rows(sh).reshape(coefficients, 3, -1)  # [B, 3, N]

    attributes: dict[str, np.ndarray] = {}
    for channel in range(3):
        attributes[f"f_dc_{channel}"] = sh_rows[0, channel]
    # f_rest index = channel * (B - 1) + (coefficient - 1), as INRIA's .ply has it.
    for channel in range(3):
        for coefficient in range(1, coefficients):
            rest_index = channel * (coefficients - 1) + coefficient - 1
            attributes[f"f_rest_{rest_index}"] = sh_rows[coefficient, channel]
    attributes["opacity"] = np.log(clipped / (1.0 - clipped))
    for axis in range(3):
        attributes[f"scale_{axis}"] = log_scale_rows[axis]
    for component in range(4):
        attributes[f"rot_{component}"] = rotation_rows[component]
    return attributes


def _stored(attributes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The attributes as the contiguous float32 / int32 arrays Blender's `foreach_set` copies."""
    return {
        name: np.ascontiguousarray(values, np.int32 if values.dtype.kind == "i" else np.float32)
        for name, values in attributes.items()
    }


def _sh_from_attributes(attributes: Mapping[str, np.ndarray]) -> np.ndarray:
    """[N, B, 3] float32 SH from f_dc_* and the channel-major f_rest_*."""
    rest_count = sum(1 for name in attributes if name.startswith("f_rest_"))
    if rest_count % 3 or rest_count // 3 + 1 not in (1, 4, 9, 16):
        raise AvatarError(f"The splats hold {rest_count} f_rest attributes; 3DGS uses 0, 9, 24 or 45.")
    coefficients = rest_count // 3 + 1
    count = np.asarray(attributes["f_dc_0"]).shape[0]
    sh = np.empty((count, coefficients, 3), np.float32)
    sh[:, 0, :] = np.stack([np.asarray(attributes[f"f_dc_{channel}"]) for channel in range(3)], axis=1)
    if coefficients > 1:
        rest_sh = np.stack([np.asarray(attributes[f"f_rest_{index}"]) for index in range(rest_count)], axis=1)
        sh[:, 1:, :] = rest_sh.reshape(count, 3, coefficients - 1).transpose(0, 2, 1)
    return sh


def _opacities_from_logits(attributes: Mapping[str, np.ndarray]) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(attributes["opacity"], np.float64)))


def avatar_from_attributes(
    rig: Rig, attributes: Mapping[str, np.ndarray], provenance: dict | None = None
) -> GaussianAvatar:
    """Rebuild the avatar from its splat attributes (see `splat_attributes`) on `rig`'s rest mesh.

    Exact for the binding and the appearance; rotations, scales and opacities go through float32
    world values, logs and logits and come back within a few float32 ulps.
    """
    missing = [name for name in _required_names() if name not in attributes]
    if missing:
        raise AvatarError(
            f"The splats lack the attributes {', '.join(missing)}; re-import the avatar from its .lca file."
        )
    triangle_ids = np.asarray(attributes["triangle_id"], np.int32)
    count = triangle_ids.shape[0]
    sh = _sh_from_attributes(attributes)
    if triangle_ids.size and (triangle_ids.min() < 0 or triangle_ids.max() >= rig.triangles.shape[0]):
        raise AvatarError("The splats refer to triangles the body mesh does not have.")

    def column(name: str) -> np.ndarray:
        return np.asarray(attributes[name], np.float64)

    frames = triangle_frames(rig.vertices, rig.triangles)
    world_rotations = np.stack([column(f"rot_{component}") for component in range(4)], axis=1)
    frame_inverse = frames.rotations[triangle_ids].astype(np.float64) * np.array([1.0, -1.0, -1.0, -1.0])
    rotations = quaternion_multiply(frame_inverse, world_rotations)
    rotations /= np.linalg.norm(rotations, axis=1, keepdims=True)
    log_sizes = np.log(frames.sizes.astype(np.float64))[triangle_ids]
    log_scales = np.stack([column(f"scale_{axis}") for axis in range(3)], axis=1) - log_sizes[:, None]
    opacities = _opacities_from_logits(attributes)
    return GaussianAvatar(
        rig=rig,
        triangle_ids=triangle_ids,
        barycentrics=np.stack([column(f"bary_{corner}") for corner in range(3)], axis=1).astype(np.float32),
        normal_offsets=column("normal_offset").astype(np.float32),
        rotations=rotations.astype(np.float32),
        log_scales=log_scales.astype(np.float32),
        opacities=opacities.astype(np.float32),
        albedo=np.asarray(attributes["albedo"], np.float32).reshape(count, 3),
        roughness=column("roughness").astype(np.float32),
        specular=column("specular").astype(np.float32),
        sh=sh,
        provenance=dict(provenance or {}),
    )


def _required_names() -> list[str]:
    return [
        *_GAUSSIAN_NAMES,
        "triangle_id",
        *(f"bary_{corner}" for corner in range(3)),
        "normal_offset",
        "albedo",
        "roughness",
        "specular",
    ]


def surface_rig(vertices: np.ndarray, triangles: np.ndarray) -> Rig:
    """A rig that is only a surface: a body mesh whose skeleton and shape keys Blender owns.

    What posing inside Blender needs: Blender deforms the body, the Gaussians follow its triangles.
    `vertices` [V, 3] is the rest mesh (the Basis shape), `triangles` [F, 3] its faces.
    """
    vertices = np.ascontiguousarray(vertices, np.float32)
    vertex_count = vertices.shape[0]
    return Rig(
        joint_names=["body"],
        joint_parents=np.array([-1], np.int32),
        rest_transforms=np.eye(4, dtype=np.float32)[None],
        bone_tails=np.array([[0.0, 1.0, 0.0]], np.float32),
        vertices=vertices,
        triangles=np.ascontiguousarray(triangles, np.int32),
        skin_indices=np.zeros((vertex_count, 1), np.int32),
        skin_weights=np.ones((vertex_count, 1), np.float32),
        expression_names=[],
        expression_deltas=np.zeros((0, vertex_count, 3), np.float32),
        body_model="blender",
    )


def triangles_from_loops(loop_vertices: np.ndarray, loop_totals: np.ndarray) -> np.ndarray:
    """[F, 3] int32 triangles of a mesh read back from Blender; refuses meshes with other polygons."""
    if loop_totals.size and (loop_totals != 3).any():
        raise AvatarError(
            "The body mesh must be all triangles, as imported; undo the edit that added other polygons."
        )
    return np.asarray(loop_vertices, np.int32).reshape(-1, 3)


# Blender modifier types that move a mesh's vertices and keep its vertices, faces and corners: the
# splats, bound to the body's vertices and corners by index, follow a body deformed by these.
TOPOLOGY_KEEPING_MODIFIERS = frozenset(
    {
        "ARMATURE", "CAST", "CLOTH", "COLLISION", "CORRECTIVE_SMOOTH", "CURVE", "DATA_TRANSFER",
        "DISPLACE", "DYNAMIC_PAINT", "HOOK", "LAPLACIANDEFORM", "LAPLACIANSMOOTH", "LATTICE",
        "MESH_CACHE", "MESH_DEFORM", "MESH_SEQUENCE_CACHE", "NORMAL_EDIT", "SHRINKWRAP", "SIMPLE_DEFORM",
        "SMOOTH", "SOFT_BODY", "SURFACE", "SURFACE_DEFORM", "UV_PROJECT", "UV_WARP", "VERTEX_WEIGHT_EDIT",
        "VERTEX_WEIGHT_MIX", "VERTEX_WEIGHT_PROXIMITY", "WARP", "WAVE", "WEIGHTED_NORMAL",
    }
)  # fmt: skip


def topology_change(
    body_name: str,
    rest_counts: tuple[int, int],  # (vertices, corners) of the body's own mesh
    evaluated_counts: tuple[int, int],  # the same after its modifiers
    modifiers: Sequence[tuple[str, str]],  # (name, Blender type) of the modifiers enabled on the body
) -> str | None:
    """Why splats cannot follow a body whose modifiers changed its topology, for the artist; None
    when the evaluated body has the vertices and corners the splats are bound to."""
    if tuple(evaluated_counts) == tuple(rest_counts):
        return None
    culprits = [f"'{name}'" for name, kind in modifiers if kind not in TOPOLOGY_KEEPING_MODIFIERS]
    which = f"disable {', '.join(culprits)}" if culprits else "disable the modifiers that change it"
    return (
        f"'{body_name}' has {evaluated_counts[0]} vertices and {evaluated_counts[1]} corners after its "
        f"modifiers, its splats need {rest_counts[0]} and {rest_counts[1]}: {which} (subdivision, "
        "remesh, decimate and other modifiers that change the topology)."
    )
