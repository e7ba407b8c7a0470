"""Posing drives the splats: after frame changes, depsgraph updates and file loads, re-pose the previews.

Each splats object (`obj.lca.is_splats`, a child of its body mesh) is posed on its body's
EVALUATED mesh, so whatever deforms the body in Blender (the armature, shape keys, a lattice,
cloth) moves the splats. The binding comes from the splats mesh's point attributes and the
body's rest mesh (see `lca_blender/blender_data.py`), so a saved .blend needs no .lca file.

The handlers only call the plain functions below, which tests call directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import bpy
import numpy as np

from . import state

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _BoundSplats:
    """A splats object's binding and appearance, read from Blender once and kept until they change."""

    source: tuple  # what they were read from: data blocks and sizes
    binding: object  # deform.GaussianBinding
    body_vertex_count: int
    opacities: np.ndarray  # [N]
    sh: np.ndarray  # [N, B, 3]
    albedo: np.ndarray  # [N, 3]
    roughness: np.ndarray  # [N]
    specular: np.ndarray  # [N]
    outward_signs: np.ndarray  # [N]


_BOUND: dict[str, _BoundSplats] = {}


def splats_objects(scene: bpy.types.Scene) -> list[bpy.types.Object]:
    return [obj for obj in scene.objects if obj.type == "MESH" and obj.lca.is_splats]


def body_of(splats: bpy.types.Object) -> bpy.types.Object | None:
    """The body mesh whose deformation the splats follow: their parent."""
    parent = splats.parent
    return parent if parent is not None and parent.type == "MESH" else None


def update_previews(
    scene: bpy.types.Scene,
    depsgraph: bpy.types.Depsgraph,
    objects: list[bpy.types.Object] | None = None,
) -> None:
    """Re-pose the previews of `objects` (every splats object of the scene when None), then redraw."""
    from ..lca_blender.errors import AvatarError

    if objects is None:
        objects = splats_objects(scene)
        current = {obj.name for obj in objects}
        for name in {*state.previews(), *state.posing_errors()} - current:
            state.remove_preview(name)
            state.clear_posing_error(name)
            _BOUND.pop(name, None)
            _POSED_FROM.pop(name, None)
    for obj in objects:
        if not obj.lca.preview:
            state.remove_preview(obj.name)
            state.clear_posing_error(obj.name)
            continue
        try:
            _update_preview(obj, depsgraph)
        except AvatarError as error:
            # A handler cannot report to the artist: the sidebar shows the message until posing
            # works again, and the preview keeps its last pose meanwhile.
            logger.warning("LCA: cannot pose '%s': %s", obj.name, error)
            state.set_posing_error(obj.name, str(error))
        else:
            state.clear_posing_error(obj.name)
    _tag_view3d_redraw()


@dataclass(frozen=True)
class _PosingInputs:
    """Everything a preview is posed from; equal inputs give an equal preview."""

    bound: _BoundSplats
    world_vertices: np.ndarray  # [V, 3] the body's evaluated mesh in world space

    def same_as(self, other: _PosingInputs | None) -> bool:
        return (
            other is not None
            and other.bound is self.bound
            and np.array_equal(other.world_vertices, self.world_vertices)
        )


# What each preview was last posed from: depsgraph updates that leave the body's mesh as it was
# (selecting, renaming, the look and splat sliders, which the drawer applies) then cost no
# re-posing, re-upload or re-sort.
_POSED_FROM: dict[str, _PosingInputs] = {}


def _update_preview(splats: bpy.types.Object, depsgraph: bpy.types.Depsgraph) -> None:
    inputs = _posing_inputs(splats, depsgraph)
    if state.get_preview(splats.name) is not None and inputs.same_as(_POSED_FROM.get(splats.name)):
        return
    state.set_preview(splats.name, _posed(inputs))
    _POSED_FROM[splats.name] = inputs


def pose_splats(splats: bpy.types.Object, depsgraph: bpy.types.Depsgraph) -> state.SplatPreview:
    """The splats posed on their body's evaluated mesh, in world space (the object's splat scale and
    opacity sliders are not applied: the drawer applies them, see `draw.object_settings`)."""
    return _posed(_posing_inputs(splats, depsgraph))


def _posing_inputs(splats: bpy.types.Object, depsgraph: bpy.types.Depsgraph) -> _PosingInputs:
    from ..lca_blender.errors import AvatarError

    body = body_of(splats)
    if body is None:
        raise AvatarError(
            f"'{splats.name}' follows the mesh it is parented to and has none: "
            "parent it to its avatar's body mesh again."
        )
    bound = _bound_splats(splats, body)
    evaluated = body.evaluated_get(depsgraph)
    mesh = evaluated.data
    if len(mesh.vertices) != bound.body_vertex_count:
        raise AvatarError(
            f"'{body.name}' has {len(mesh.vertices)} vertices after its modifiers, its splats need "
            f"{bound.body_vertex_count}: disable modifiers that change the topology (subdivision, remesh)."
        )
    vertices = np.empty(bound.body_vertex_count * 3, np.float32)
    mesh.attributes["position"].data.foreach_get("vector", vertices)
    matrix = np.array(evaluated.matrix_world, np.float32)
    world_vertices = vertices.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
    return _PosingInputs(bound, world_vertices)


def _posed(inputs: _PosingInputs) -> state.SplatPreview:
    from ..lca_blender.maths.deform import pose_gaussians

    bound = inputs.bound
    means, rotations, scales = pose_gaussians(bound.binding, inputs.world_vertices)
    return state.SplatPreview(
        means=means,
        rotations=rotations,
        scales=scales,
        opacities=bound.opacities,
        sh=bound.sh,
        albedo=bound.albedo,
        roughness=bound.roughness,
        specular=bound.specular,
        outward_signs=bound.outward_signs,
    )


def bind_splats(splats: bpy.types.Object, avatar, binding) -> None:
    """Cache the binding of `splats` from the avatar they were just built from and its `bind(avatar)`
    (saves reading them back from Blender and binding again)."""
    _BOUND[splats.name] = _bound_from_avatar(_source_key(splats), avatar, binding)


def _source_key(splats: bpy.types.Object) -> tuple:
    """What a binding is read from: the data blocks and their sizes; a change means reading again."""
    body_mesh, splats_mesh = body_of(splats).data, splats.data
    return (
        splats_mesh.as_pointer(),
        len(splats_mesh.vertices),
        body_mesh.as_pointer(),
        len(body_mesh.vertices),
        len(body_mesh.loops),
    )


def _bound_splats(splats: bpy.types.Object, body: bpy.types.Object) -> _BoundSplats:
    from ..lca_blender.addon.blender_data import avatar_from_attributes, surface_rig, triangles_from_loops

    source = _source_key(splats)
    cached = _BOUND.get(splats.name)
    if cached is not None and cached.source == source:
        return cached

    body_mesh = body.data
    rest = np.empty(len(body_mesh.vertices) * 3, np.float32)
    # The rest mesh is the Basis shape (the reference key), which the mesh's own vertices mirror.
    reference = body_mesh.shape_keys.reference_key.data if body_mesh.shape_keys else body_mesh.vertices
    reference.foreach_get("co", rest)
    loop_vertices = np.empty(len(body_mesh.loops), np.int32)
    body_mesh.loops.foreach_get("vertex_index", loop_vertices)
    loop_totals = np.empty(len(body_mesh.polygons), np.int32)
    body_mesh.polygons.foreach_get("loop_total", loop_totals)
    rig = surface_rig(rest.reshape(-1, 3), triangles_from_loops(loop_vertices, loop_totals))
    bound = _bound_from_avatar(source, avatar_from_attributes(rig, _point_attributes(splats.data)))
    _BOUND[splats.name] = bound
    return bound


def _bound_from_avatar(source: tuple, avatar, binding=None) -> _BoundSplats:
    from ..lca_blender.maths.deform import bind
    from ..lca_blender.maths.shading import outward_signs

    return _BoundSplats(
        source=source,
        binding=bind(avatar) if binding is None else binding,
        body_vertex_count=avatar.rig.vertex_count,
        opacities=avatar.opacities,
        sh=avatar.sh,
        albedo=avatar.albedo,
        roughness=avatar.roughness,
        specular=avatar.specular,
        outward_signs=outward_signs(avatar),
    )


_READERS = {
    "FLOAT": ("value", np.float32, 1),
    "INT": ("value", np.int32, 1),
    "FLOAT_VECTOR": ("vector", np.float32, 3),
}


def _point_attributes(mesh: bpy.types.Mesh) -> dict[str, np.ndarray]:
    """The mesh's user point attributes as arrays ([N] or [N, 3])."""
    count = len(mesh.vertices)
    attributes = {}
    for attribute in mesh.attributes:
        reader = _READERS.get(attribute.data_type)
        if attribute.domain != "POINT" or reader is None or attribute.name.startswith((".", "position")):
            continue
        field, dtype, width = reader
        values = np.empty(count * width, dtype)
        attribute.data.foreach_get(field, values)
        attributes[attribute.name] = values.reshape(count, width) if width > 1 else values
    return attributes


def _tag_view3d_redraw() -> None:
    window_manager = bpy.context.window_manager
    # No windows in background mode (and in the bpy module): nothing to redraw.
    for window in window_manager.windows if window_manager else ():
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def _drivers(splats: bpy.types.Object) -> set[int]:
    """Pointers of the data blocks whose change re-poses `splats`: itself, its body, the body's
    shape keys and the objects that deform the body (armatures, lattices, ...)."""
    body = body_of(splats)
    blocks = [splats, splats.data]
    if body is not None:
        blocks += [body, body.data, body.data.shape_keys, body.parent]
        blocks += [getattr(modifier, "object", None) for modifier in body.modifiers]
    return {block.as_pointer() for block in blocks if block is not None}


@bpy.app.handlers.persistent
def on_frame_change(scene: bpy.types.Scene, depsgraph: bpy.types.Depsgraph | None = None) -> None:
    update_previews(scene, depsgraph or bpy.context.evaluated_depsgraph_get())


@bpy.app.handlers.persistent
def on_depsgraph_update(scene: bpy.types.Scene, depsgraph: bpy.types.Depsgraph) -> None:
    changed = {update.id.original.as_pointer() for update in depsgraph.updates}
    affected = [obj for obj in splats_objects(scene) if _drivers(obj) & changed]
    if affected:
        update_previews(scene, depsgraph, affected)


@bpy.app.handlers.persistent
def on_load(*_arguments: object) -> None:
    """Rebuild every preview of the newly loaded file from its own data."""
    _BOUND.clear()
    _POSED_FROM.clear()
    state.clear()
    scene = bpy.context.scene
    if scene is not None:
        update_previews(scene, bpy.context.evaluated_depsgraph_get())


_HANDLERS = (
    (bpy.app.handlers.frame_change_post, on_frame_change),
    (bpy.app.handlers.depsgraph_update_post, on_depsgraph_update),
    (bpy.app.handlers.load_post, on_load),
)

classes: tuple[type, ...] = ()


def register() -> None:
    for handlers, handler in _HANDLERS:
        if handler not in handlers:
            handlers.append(handler)


def unregister() -> None:
    for handlers, handler in _HANDLERS:
        if handler in handlers:
            handlers.remove(handler)
    _BOUND.clear()
    _POSED_FROM.clear()
