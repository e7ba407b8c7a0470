"""Native Gaussian splats (Blender 5.3+): a Geometry Nodes modifier turns an avatar's splats mesh
into a posed splat point cloud that Cycles and EEVEE render, in F12 and on render nodes.

The node group reads the body's evaluated mesh (the armature, shape keys and anything else that
deforms it) and the binding stored on the splats mesh as point attributes, and poses every
Gaussian as `deform.pose_gaussians` does: the triangle of corners 3t, 3t+1, 3t+2 (the import
makes one polygon per triangle, in order) gives the frame (tangent = unit first edge, normal =
unit e1 x e2) and size sqrt(|e1 x e2|), worked out once per body face and looked up by each
splat (per splat, it cost twice the time per pose change at 200k splats); mean = corner 0 +
b1 e1 + b2 e2 + offset * normal, rotation = frame * local rotation, scale = scale factor * size *
the splat scale slider. The group and its inputs live in the .blend, so the avatar renders posed
where the extension is not installed.

The object's look and sliders (`Object.lca`) reach the group as modifier inputs (`apply_settings`):
the splat scale, the opacity multiplier and the look. The relit look's colours are the add-on's:
`posing` relights the posed splats with `shading.relight` (the scene's lights and world colour,
the specular lobe seen from the scene camera, as `lca.render_frames` shades them) after every
frame change and every change of the body, a light, the world or the camera, and writes them to
the splats mesh (`set_relit_colors`); the group shows them view-independent in place of the
captured SH. A render node without the extension renders the relit colours last written, which
follow neither the pose nor the lights of later frames (render the captured look there, or
render with the extension installed).

A body whose modifiers change its topology (Subdivision, Remesh, Decimate) no longer has the
corners the binding indexes: the group then outputs no splats rather than wrong ones, and
`posing` tells the artist which modifier to disable.

Before 5.3 Blender has no splat primitive: the draw handler (`draw.py`) and `lca.render_frames`
show the splats instead.
"""

from __future__ import annotations

import bpy
import numpy as np

NATIVE_SPLATS_MIN_VERSION = (5, 3, 0)
MODIFIER_NAME = "LCA Native Splats"
NODE_GROUP_NAME = "LCA Splats on Body"
BODY_INPUT = "Body"
BODY_CORNERS_INPUT = "Body Corners"  # the body's corner count the binding indexes
SPLAT_SCALE_INPUT = "Splat Scale"
OPACITY_INPUT = "Opacity"
RELIT_INPUT = "Relit"


def has_native_splats() -> bool:
    """Whether this Blender renders Gaussian splats itself (a PointCloud of type 'GAUSSIAN_SPLAT')."""
    return bpy.app.version >= NATIVE_SPLATS_MIN_VERSION


def renders_natively(splats: bpy.types.Object) -> bool:
    """Whether Blender renders this splats object itself (its posing modifier is on for renders)."""
    modifier = splats.modifiers.get(MODIFIER_NAME)
    return modifier is not None and modifier.show_render


def add_native_splats(splats: bpy.types.Object, body: bpy.types.Object, avatar) -> bpy.types.Modifier:
    """Give the splats mesh (built by the import) the native attributes and the posing modifier."""
    from ..lca_blender.addon.native_splats import LOCAL_ROTATION, SCALE_FACTOR, binding_attributes

    attributes = splats.data.attributes
    types_and_fields = {LOCAL_ROTATION: ("QUATERNION", "value"), SCALE_FACTOR: ("FLOAT_VECTOR", "vector")}
    for name, values in binding_attributes(avatar).items():
        data_type, field = types_and_fields[name]
        attributes.new(name, data_type, "POINT").data.foreach_set(field, values.reshape(-1))
    splats.data.update()

    modifier = splats.modifiers.new(MODIFIER_NAME, "NODES")
    modifier.node_group = splats_node_group(avatar.sh.shape[1])
    _set_input(modifier, BODY_INPUT, body)
    _set_input(modifier, BODY_CORNERS_INPUT, len(body.data.loops))
    apply_settings(splats)
    return modifier


def apply_settings(splats: bpy.types.Object) -> None:
    """Hand the object's look, splat scale and opacity (`Object.lca`) to its posing modifier."""
    modifier = splats.modifiers.get(MODIFIER_NAME)
    if (
        modifier is None
        or modifier.node_group is None
        or RELIT_INPUT not in modifier.node_group.interface.items_tree
    ):
        return
    settings = splats.lca
    for name, value in (
        (SPLAT_SCALE_INPUT, settings.splat_scale),
        (OPACITY_INPUT, settings.opacity),
        (RELIT_INPUT, settings.look == "RELIT"),
    ):
        if _get_input(modifier, name) != value:  # an unchanged value would re-evaluate the group
            _set_input(modifier, name, value)


def set_relit_colors(splats: bpy.types.Object, colors: np.ndarray) -> None:
    """Write the relit look's linear colours [N, 3] of the splats for the posing modifier."""
    from ..lca_blender.addon.native_splats import RELIT_BASE, relit_coefficients

    attributes = splats.data.attributes
    attribute = attributes.get(RELIT_BASE) or attributes.new(RELIT_BASE, "FLOAT_VECTOR", "POINT")
    attribute.data.foreach_set("vector", relit_coefficients(colors).reshape(-1))
    splats.data.update()


def _modifier_input(modifier: bpy.types.Modifier, name: str):
    # Blender 5.2 moved the modifier's inputs from ID properties to RNA (`properties.inputs`).
    identifier = modifier.node_group.interface.items_tree[name].identifier
    return getattr(modifier.properties.inputs, identifier)


def _get_input(modifier: bpy.types.Modifier, name: str):
    return _modifier_input(modifier, name).value


def _set_input(modifier: bpy.types.Modifier, name: str, value) -> None:
    _modifier_input(modifier, name).value = value


def splats_node_group(coefficients: int) -> bpy.types.GeometryNodeTree:
    """The posing node group for avatars with `coefficients` SH coefficients per channel, shared by
    every such avatar of the file (made on first use)."""
    name = f"{NODE_GROUP_NAME} (SH {coefficients})"
    group = bpy.data.node_groups.get(name)
    # A group saved before the look and sliders were inputs is left to the objects that use it.
    if (
        group is None
        or group.bl_idname != "GeometryNodeTree"
        or RELIT_INPUT not in group.interface.items_tree
    ):
        group = _build_node_group(name, coefficients)
    return group


class _Tree:
    """Adds nodes and links to a node tree, so the group reads as its maths."""

    def __init__(self, tree: bpy.types.NodeTree) -> None:
        self.tree = tree

    def node(self, idname: str, **settings) -> bpy.types.Node:
        node = self.tree.nodes.new(idname)
        for key, value in settings.items():
            setattr(node, key, value)
        return node

    def link(self, output: bpy.types.NodeSocket, node_input: bpy.types.NodeSocket) -> None:
        self.tree.links.new(output, node_input)

    def named(self, data_type: str, name: str) -> bpy.types.NodeSocket:
        """A point attribute of the splats, as a field."""
        node = self.node("GeometryNodeInputNamedAttribute", data_type=data_type)
        node.inputs["Name"].default_value = name
        return node.outputs["Attribute"]

    def vector_math(self, operation: str, *operands, scale=None) -> bpy.types.NodeSocket:
        """Vector Math `operation` on vector sockets (its three inputs share one name: by index)."""
        node = self.node("ShaderNodeVectorMath", operation=operation)
        for index, operand in enumerate(operands):
            self.link(operand, node.inputs[index])
        if scale is not None:
            self.link(scale, node.inputs["Scale"])
        return node.outputs["Value" if operation == "LENGTH" else "Vector"]

    def math(self, operation: str, *operands, clamp: bool = False) -> bpy.types.NodeSocket:
        """Math `operation` on operands that are sockets or constants (clamped to [0, 1] if asked)."""
        node = self.node("ShaderNodeMath", operation=operation, use_clamp=clamp)
        for index, operand in enumerate(operands):
            if isinstance(operand, bpy.types.NodeSocket):
                self.link(operand, node.inputs[index])
            else:
                node.inputs[index].default_value = operand
        return node.outputs["Value"]

    def switch(self, input_type: str, condition, if_false, if_true) -> bpy.types.NodeSocket:
        """`if_true` where `condition` holds, else `if_false` (sockets; None leaves an input empty)."""
        node = self.node("GeometryNodeSwitch", input_type=input_type)
        self.link(condition, node.inputs["Switch"])
        for name, operand in (("False", if_false), ("True", if_true)):
            if operand is not None:
                self.link(operand, node.inputs[name])
        return node.outputs[0]

    def combine_xyz(self, *components: bpy.types.NodeSocket) -> bpy.types.NodeSocket:
        node = self.node("ShaderNodeCombineXYZ")
        for axis, component in zip("XYZ", components, strict=True):
            self.link(component, node.inputs[axis])
        return node.outputs["Vector"]

    def capture(
        self,
        geometry: bpy.types.NodeSocket,
        values: dict[str, tuple[str, bpy.types.NodeSocket]],
        domain: str = "POINT",
    ) -> tuple[bpy.types.NodeSocket, dict[str, bpy.types.NodeSocket]]:
        """The geometry and each field of `values` (name: (socket type, field)) captured on its
        `domain` in one evaluation, where the fields share their inputs' work."""
        node = self.node("GeometryNodeCaptureAttribute", domain=domain)
        self.link(geometry, node.inputs["Geometry"])
        captured = {}
        for name, (socket_type, value) in values.items():
            node.capture_items.new(socket_type, name)
            self.link(value, node.inputs[name])
            captured[name] = node.outputs[name]
        return node.outputs["Geometry"], captured

    def store(
        self, geometry: bpy.types.NodeSocket, name: str, data_type: str, value: bpy.types.NodeSocket
    ) -> bpy.types.NodeSocket:
        node = self.node("GeometryNodeStoreNamedAttribute", data_type=data_type, domain="POINT")
        self.link(geometry, node.inputs["Geometry"])
        node.inputs["Name"].default_value = name
        self.link(value, node.inputs["Value"])
        return node.outputs["Geometry"]


def _build_node_group(name: str, coefficients: int) -> bpy.types.GeometryNodeTree:
    from ..lca_blender.addon.native_splats import (
        LOCAL_ROTATION,
        RADIANCE_BASE,
        RELIT_BASE,
        SCALE_FACTOR,
        sh_sources,
    )

    group = bpy.data.node_groups.new(name, "GeometryNodeTree")
    interface = group.interface
    interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    interface.new_socket(BODY_INPUT, in_out="INPUT", socket_type="NodeSocketObject")
    interface.new_socket(BODY_CORNERS_INPUT, in_out="INPUT", socket_type="NodeSocketInt")
    for socket_name, socket_type, default in (
        (SPLAT_SCALE_INPUT, "NodeSocketFloat", 1.0),
        (OPACITY_INPUT, "NodeSocketFloat", 1.0),
        (RELIT_INPUT, "NodeSocketBool", False),
    ):
        interface.new_socket(socket_name, in_out="INPUT", socket_type=socket_type).default_value = default
    interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    tree = _Tree(group)
    group_input = tree.node("NodeGroupInput")
    group_output = tree.node("NodeGroupOutput")
    relit = group_input.outputs[RELIT_INPUT]

    # The body's evaluated mesh in the splats object's space.
    body = tree.node("GeometryNodeObjectInfo", transform_space="RELATIVE")
    tree.link(group_input.outputs[BODY_INPUT], body.inputs["Object"])
    # Each triangle's frame is worked out once on the body's faces (face t has corners 3t..3t+2)
    # and looked up by every splat on it: there are several splats per triangle, and the frame's
    # rotation is the group's costliest node.
    position = tree.node("GeometryNodeInputPosition").outputs["Position"]
    face = tree.node("GeometryNodeInputIndex").outputs["Index"]
    corners = []
    for corner in range(3):
        index = tree.node("FunctionNodeIntegerMath", operation="MULTIPLY_ADD")
        tree.link(face, index.inputs[0])
        index.inputs[1].default_value = 3
        index.inputs[2].default_value = corner
        sample = tree.node("GeometryNodeSampleIndex", data_type="FLOAT_VECTOR", domain="CORNER")
        tree.link(body.outputs["Geometry"], sample.inputs["Geometry"])
        tree.link(position, sample.inputs["Value"])
        tree.link(index.outputs[0], sample.inputs["Index"])
        corners.append(sample.outputs["Value"])
    edge1 = tree.vector_math("SUBTRACT", corners[1], corners[0])
    edge2 = tree.vector_math("SUBTRACT", corners[2], corners[0])
    cross = tree.vector_math("CROSS_PRODUCT", edge1, edge2)
    normal = tree.vector_math("NORMALIZE", cross)
    # Degenerate triangles keep a tiny positive size, as in deform, so scales stay valid.
    size = tree.math("SQRT", tree.math("MAXIMUM", tree.vector_math("LENGTH", cross), 1e-12))
    frame = tree.node("FunctionNodeAxesToRotation", primary_axis="Z", secondary_axis="X")
    tree.link(normal, frame.inputs["Primary Axis"])
    tree.link(tree.vector_math("NORMALIZE", edge1), frame.inputs["Secondary Axis"])
    per_triangle = {
        "corner": ("VECTOR", corners[0]),
        "edge1": ("VECTOR", edge1),
        "edge2": ("VECTOR", edge2),
        "normal": ("VECTOR", normal),
        "size": ("FLOAT", size),
        "frame": ("ROTATION", frame.outputs["Rotation"]),
    }
    triangles, on_face = tree.capture(body.outputs["Geometry"], per_triangle, domain="FACE")
    triangle = tree.named("INT", "triangle_id")
    sample_types = {"VECTOR": "FLOAT_VECTOR", "FLOAT": "FLOAT", "ROTATION": "QUATERNION"}
    of_triangle = {}
    for name, (socket_type, _) in per_triangle.items():
        sample = tree.node("GeometryNodeSampleIndex", data_type=sample_types[socket_type], domain="FACE")
        tree.link(triangles, sample.inputs["Geometry"])
        tree.link(on_face[name], sample.inputs["Value"])
        tree.link(triangle, sample.inputs["Index"])
        of_triangle[name] = sample.outputs["Value"]

    mean = of_triangle["corner"]
    for weight, axis in (("bary_1", "edge1"), ("bary_2", "edge2"), ("normal_offset", "normal")):
        step = tree.vector_math("SCALE", of_triangle[axis], scale=tree.named("FLOAT", weight))
        mean = tree.vector_math("ADD", mean, step)
    rotation = tree.node("FunctionNodeRotateRotation", rotation_space="LOCAL")
    tree.link(of_triangle["frame"], rotation.inputs["Rotation"])
    tree.link(tree.named("QUATERNION", LOCAL_ROTATION), rotation.inputs["Rotate By"])
    scaled_size = tree.math("MULTIPLY", of_triangle["size"], group_input.outputs[SPLAT_SCALE_INPUT])
    scale = tree.vector_math("SCALE", tree.named("FLOAT_VECTOR", SCALE_FACTOR), scale=scaled_size)

    # Radiance: the captured degree-0 SH (f_dc) or the relit colours' coefficients, and the linear
    # opacity (the mesh keeps 3DGS's logit) times the slider.
    captured = tree.combine_xyz(*(tree.named("FLOAT", f"f_dc_{channel}") for channel in range(3)))
    base = tree.node("ShaderNodeSeparateXYZ")
    tree.link(tree.switch("VECTOR", relit, captured, tree.named("FLOAT_VECTOR", RELIT_BASE)), base.inputs[0])
    exp_minus_logit = tree.math("EXPONENT", tree.math("MULTIPLY", tree.named("FLOAT", "opacity"), -1.0))
    sigmoid = tree.math("DIVIDE", 1.0, tree.math("ADD", exp_minus_logit, 1.0))
    radiance = tree.node("FunctionNodeCombineColor")
    for channel, axis in zip(("Red", "Green", "Blue"), "XYZ", strict=True):
        tree.link(base.outputs[axis], radiance.inputs[channel])
    tree.link(
        tree.math("MULTIPLY", sigmoid, group_input.outputs[OPACITY_INPUT], clamp=True),
        radiance.inputs["Alpha"],
    )

    points = tree.node("GeometryNodeMeshToPoints", mode="VERTICES")
    tree.link(group_input.outputs["Geometry"], points.inputs["Mesh"])
    # Evaluated separately, each output would sample the body's triangles again (half the time).
    geometry, captured = tree.capture(
        points.outputs["Points"],
        {
            "mean": ("VECTOR", mean),
            "rotation": ("ROTATION", rotation.outputs["Rotation"]),
            "scale": ("VECTOR", scale),
            "radiance": ("RGBA", radiance.outputs["Color"]),
        },
    )
    posed = tree.node("GeometryNodeSetPosition")
    tree.link(geometry, posed.inputs["Geometry"])
    tree.link(captured["mean"], posed.inputs["Position"])
    geometry = posed.outputs["Geometry"]
    geometry = tree.store(geometry, "rotation", "QUATERNION", captured["rotation"])
    geometry = tree.store(geometry, "scale", "FLOAT_VECTOR", captured["scale"])
    geometry = tree.store(geometry, RADIANCE_BASE, "FLOAT_COLOR", captured["radiance"])
    no_sh = tree.node("ShaderNodeCombineXYZ").outputs["Vector"]  # (0, 0, 0): relit is view-independent
    for attribute, channels in sh_sources(coefficients):
        captured_sh = tree.combine_xyz(*(tree.named("FLOAT", channel) for channel in channels))
        geometry = tree.store(
            geometry, attribute, "FLOAT_VECTOR", tree.switch("VECTOR", relit, captured_sh, no_sh)
        )
    splat_type = tree.node("GeometryNodePointsSetType")
    splat_type.inputs["Type"].default_value = "3D Gaussian Splat"
    tree.link(geometry, splat_type.inputs["Points"])

    # A body whose topology changed (Subdivision, Remesh, Decimate) gives no splats, not wrong ones.
    corner_count = tree.node("GeometryNodeAttributeDomainSize", component="MESH")
    tree.link(body.outputs["Geometry"], corner_count.inputs["Geometry"])
    same_topology = tree.node("FunctionNodeCompare", data_type="INT", operation="EQUAL")
    tree.link(corner_count.outputs["Face Corner Count"], same_topology.inputs[0])
    tree.link(group_input.outputs[BODY_CORNERS_INPUT], same_topology.inputs[1])
    output = tree.switch("GEOMETRY", same_topology.outputs["Result"], None, splat_type.outputs[0])
    tree.link(output, group_output.inputs["Geometry"])
    return group
