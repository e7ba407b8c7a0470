"""Posing drives the splats: after frame changes, depsgraph updates and file loads, re-pose the previews.

Each splats object (`obj.lca.is_splats`, a child of its body mesh) is posed on its body's
EVALUATED mesh, so whatever deforms the body in Blender (the armature, shape keys, a lattice,
cloth) moves the splats. The binding comes from the splats mesh's point attributes and the
body's rest mesh (see `lca_blender/blender_data.py`), so a saved .blend needs no .lca file.
A body whose modifiers change its topology cannot be followed: the sidebar says which to disable.
Static splats (an imported .ply before Blender 5.3: a splats mesh without binding) are placed by
their object's transform. Splats that Blender 5.3+ renders itself (`native_splats`) have no
preview unless switched on; here they are checked for the topology and, in the relit look,
relit (their node group shows the colours written here).

The handlers only call the plain functions below, which tests call directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import bpy
import numpy as np

from . import native_splats, state

if TYPE_CHECKING:
    from ..lca_blender.maths.lights import Lighting

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
    avatar: object  # GaussianAvatar they were bound from

    @cached_property
    def outward_signs(self) -> np.ndarray:
        """[N] (see `shading.outward_signs`): made on first use, as natively rendered splats
        need them only in the relit look."""
        from ..lca_blender.maths.shading import outward_signs

        return outward_signs(self.avatar)


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
            _RELIT_FROM.pop(name, None)
            _STATIC.pop(name, None)
    for obj in objects:
        native = native_splats.renders_natively(obj)
        if not obj.lca.preview:
            state.remove_preview(obj.name)
            if not native:
                state.clear_posing_error(obj.name)
                continue
        try:
            if obj.lca.preview:
                _update_preview(obj, depsgraph)
            if native:
                _update_native(obj, scene, depsgraph)
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

    def same_as(self, other: object) -> bool:
        return (
            isinstance(other, _PosingInputs)
            and other.bound is self.bound
            and np.array_equal(other.world_vertices, self.world_vertices)
        )


# What each preview was last posed from: depsgraph updates that leave the body's mesh as it was
# (selecting, renaming, the look and splat sliders, which the drawer applies) then cost no
# re-posing, re-upload or re-sort.
_POSED_FROM: dict[str, _PosingInputs | _StaticInputs] = {}


@dataclass(frozen=True)
class _StaticInputs:
    """What static splats (an imported .ply, no body) are placed from: their object's transform."""

    preview: state.SplatPreview  # in the object's space, read from Blender once per mesh
    matrix_world: np.ndarray  # [4, 4]

    def same_as(self, other: object) -> bool:
        return (
            isinstance(other, _StaticInputs)
            and other.preview is self.preview
            and np.array_equal(other.matrix_world, self.matrix_world)
        )


def is_static(splats: bpy.types.Object) -> bool:
    """Whether the splats object holds static splats (a .ply's: 3DGS attributes and no binding)
    rather than an avatar's bound ones."""
    attributes = splats.data.attributes
    return "f_dc_0" in attributes and "triangle_id" not in attributes


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


def _posing_inputs(splats: bpy.types.Object, depsgraph: bpy.types.Depsgraph) -> _PosingInputs | _StaticInputs:

    if is_static(splats):
        return _static_inputs(splats)
    body = _body_or_error(splats)
    bound = _bound_splats(splats, body)
    evaluated = _same_topology_body(body, depsgraph)
    mesh = evaluated.data
    vertices = np.empty(bound.body_vertex_count * 3, np.float32)
    mesh.attributes["position"].data.foreach_get("vector", vertices)
    matrix = np.array(evaluated.matrix_world, np.float32)
    world_vertices = vertices.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
    return _PosingInputs(bound, world_vertices)


def _body_or_error(splats: bpy.types.Object) -> bpy.types.Object:
    from ..lca_blender.errors import AvatarError

    body = body_of(splats)
    if body is None:
        raise AvatarError(
            f"'{splats.name}' follows the mesh it is parented to and has none: "
            "parent it to its avatar's body mesh again."
        )
    return body


def _same_topology_body(body: bpy.types.Object, depsgraph: bpy.types.Depsgraph) -> bpy.types.Object:
    """The evaluated body, when its modifiers kept the vertices and corners the splats are bound to."""
    from ..lca_blender.addon.blender_data import topology_change
    from ..lca_blender.errors import AvatarError

    evaluated = body.evaluated_get(depsgraph)
    mesh = evaluated.data
    message = topology_change(
        body.name,
        (len(body.data.vertices), len(body.data.loops)),
        (len(mesh.vertices), len(mesh.loops)),
        [(modifier.name, modifier.type) for modifier in body.modifiers if modifier.show_viewport],
    )
    if message is not None:
        raise AvatarError(message)
    return evaluated


# What each natively rendered relit look was last lit from: (posing inputs, lights, eye).
_RELIT_FROM: dict[str, tuple] = {}


def _update_native(splats: bpy.types.Object, scene: bpy.types.Scene, depsgraph: bpy.types.Depsgraph) -> None:
    """Check that Blender can pose the splats (their node group outputs none on a body of another
    topology) and, in the relit look, relight them for it."""
    from ..lca_blender.addon.viewport_maths import shader_light_rows
    from .draw import scene_lighting

    _same_topology_body(_body_or_error(splats), depsgraph)
    if splats.lca.look != "RELIT":
        _RELIT_FROM.pop(splats.name, None)
        return
    inputs = _posing_inputs(splats, depsgraph)
    lighting = scene_lighting(scene, for_render=True)
    camera = scene.camera
    eye = None if camera is None else np.array(camera.evaluated_get(depsgraph).matrix_world.translation)
    key = (inputs, shader_light_rows(lighting).tobytes(), None if eye is None else eye.tobytes())
    previous = _RELIT_FROM.get(splats.name)
    if previous is not None and inputs.same_as(previous[0]) and previous[1:] == key[1:]:
        return
    native_splats.set_relit_colors(splats, relit_colors(_posed(inputs), lighting, eye))
    _RELIT_FROM[splats.name] = key


def relit_colors(preview: state.SplatPreview, lighting: Lighting, eye: np.ndarray | None) -> np.ndarray:
    """[N, 3] linear colours of the posed splats under `lighting`, the specular
    lobe seen from `eye` [3] (the scene camera; head-on when None), as the viewport's relit look."""
    from ..lca_blender.maths.shading import gaussian_normals, relight, view_directions

    normals = gaussian_normals(preview.rotations, preview.scales) * preview.outward_signs[:, None]
    means = preview.means.astype(np.float64)
    view_dirs = normals if eye is None else view_directions(means, eye)
    return relight(means, normals, view_dirs, preview.albedo, preview.roughness, preview.specular, lighting)


def _posed(inputs: _PosingInputs | _StaticInputs) -> state.SplatPreview:
    from ..lca_blender.maths.deform import pose_gaussians

    if isinstance(inputs, _StaticInputs):
        return _placed(inputs)
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


_STATIC: dict[str, tuple[tuple, state.SplatPreview]] = {}  # static splats in object space, per source


def _static_inputs(splats: bpy.types.Object) -> _StaticInputs:
    from ..lca_blender.addon.blender_data import static_splats_from_attributes
    from ..lca_blender.maths.colour import srgb_to_linear
    from ..lca_blender.maths.sh import SH_C0

    mesh = splats.data
    source = (mesh.as_pointer(), len(mesh.vertices))
    cached = _STATIC.get(splats.name)
    if cached is None or cached[0] != source:
        means = np.empty(len(mesh.vertices) * 3, np.float32)
        if len(means):  # a mesh without vertices has no position attribute
            mesh.attributes["position"].data.foreach_get("vector", means)
        gaussians = static_splats_from_attributes(means, _point_attributes(mesh))
        count = gaussians.count
        # A .ply has no relighting appearance: its base colour stands for the albedo, with a
        # middling roughness and specular and discs lit from the side their axis points to.
        albedo = srgb_to_linear(np.clip(0.5 + SH_C0 * gaussians.sh[:, 0], 0.0, 1.0)).astype(np.float32)
        preview = state.SplatPreview(
            means=gaussians.means,
            rotations=gaussians.rotations,
            scales=gaussians.scales,
            opacities=gaussians.opacities,
            sh=gaussians.sh,
            albedo=albedo,
            roughness=np.full(count, 0.5, np.float32),
            specular=np.full(count, 0.5, np.float32),
            outward_signs=np.ones(count, np.float32),
        )
        cached = _STATIC[splats.name] = (source, preview)
    return _StaticInputs(cached[1], np.array(splats.matrix_world, np.float64))


def _placed(inputs: _StaticInputs) -> state.SplatPreview:
    """Static splats moved to the world by their object's transform (a non-uniform scale scales
    each Gaussian by the mean of the three)."""
    from ..lca_blender.maths.rotations import matrix_to_quaternion, quaternion_multiply

    local, matrix = inputs.preview, inputs.matrix_world
    axes = np.linalg.norm(matrix[:3, :3], axis=0)
    turn = matrix_to_quaternion(matrix[:3, :3] / np.maximum(axes, 1e-12))
    rotations = quaternion_multiply(turn, local.rotations.astype(np.float64))
    return state.SplatPreview(
        means=(local.means @ matrix[:3, :3].T + matrix[:3, 3]).astype(np.float32),
        rotations=rotations.astype(np.float32),
        scales=local.scales * np.float32(axes.mean()),
        opacities=local.opacities,
        sh=local.sh,
        albedo=local.albedo,
        roughness=local.roughness,
        specular=local.specular,
        outward_signs=local.outward_signs,
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

    return _BoundSplats(
        source=source,
        binding=bind(avatar) if binding is None else binding,
        body_vertex_count=avatar.rig.vertex_count,
        opacities=avatar.opacities,
        sh=avatar.sh,
        albedo=avatar.albedo,
        roughness=avatar.roughness,
        specular=avatar.specular,
        avatar=avatar,
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


def _lights_changed(depsgraph: bpy.types.Depsgraph) -> bool:
    """Whether the update touched what the relit look depends on beyond the body: a light, the
    world, a camera, or the scene (its active camera)."""
    for update in depsgraph.updates:
        block = update.id
        if isinstance(block, (bpy.types.Light, bpy.types.World, bpy.types.Camera, bpy.types.Scene)):
            return True
        if isinstance(block, bpy.types.Object) and block.type in {"LIGHT", "CAMERA"}:
            return True
    return False


@bpy.app.handlers.persistent
def on_depsgraph_update(scene: bpy.types.Scene, depsgraph: bpy.types.Depsgraph) -> None:
    changed = {update.id.original.as_pointer() for update in depsgraph.updates}
    relit_lights = None  # computed only when some splats are relit
    affected = []
    for obj in splats_objects(scene):
        if _drivers(obj) & changed:
            affected.append(obj)
        elif obj.lca.look == "RELIT" and native_splats.renders_natively(obj):
            relit_lights = _lights_changed(depsgraph) if relit_lights is None else relit_lights
            if relit_lights:
                affected.append(obj)
    if affected:
        update_previews(scene, depsgraph, affected)


@bpy.app.handlers.persistent
def on_load(*_arguments: object) -> None:
    """Rebuild every preview of the newly loaded file from its own data."""
    _BOUND.clear()
    _POSED_FROM.clear()
    _RELIT_FROM.clear()
    _STATIC.clear()
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
    _RELIT_FROM.clear()
    _STATIC.clear()
