"""Native Gaussian splats (Blender 5.3+): a Geometry Nodes modifier turns an avatar's splats mesh
into a posed splat point cloud that Cycles and EEVEE render, in F12 and on render nodes.

The node group reads the body's evaluated mesh (the armature, shape keys and anything else that
deforms it) and the binding stored on the splats mesh as point attributes, and poses every
Gaussian as `deform.pose_gaussians` does: the triangle of corners 3t, 3t+1, 3t+2 (the import
makes one polygon per triangle, in order) gives the frame (tangent = unit first edge, normal =
unit e1 x e2) and size sqrt(|e1 x e2|); mean = corner 0 + b1 e1 + b2 e2 + offset * normal,
rotation = frame * local rotation, scale = scale factor * size. The group and its inputs live in
the .blend, so the avatar renders posed where the extension is not installed.

Before 5.3 Blender has no splat primitive: the draw handler (`draw.py`) and `lca.render_frames`
show the splats instead.
"""

from __future__ import annotations

import bpy

NATIVE_SPLATS_MIN_VERSION = (5, 3, 0)
MODIFIER_NAME = "LCA Native Splats"
NODE_GROUP_NAME = "LCA Splats on Body"
BODY_INPUT = "Body"


def has_native_splats() -> bool:
    """Whether this Blender renders Gaussian splats itself (a PointCloud of type 'GAUSSIAN_SPLAT')."""
    return bpy.app.version >= NATIVE_SPLATS_MIN_VERSION


def renders_natively(splats: bpy.types.Object) -> bool:
    """Whether Blender renders this splats object itself (its posing modifier is on for renders)."""
    modifier = splats.modifiers.get(MODIFIER_NAME)
    return modifier is not None and modifier.show_render


def add_native_splats(splats: bpy.types.Object, body: bpy.types.Object, avatar) -> bpy.types.Modifier:
    """Give the splats mesh (built by the import) the native attributes and the posing modifier."""
    from ..lca_blender.addon.native_splats import (
        LOCAL_ROTATION,
        RADIANCE_BASE,
        SCALE_FACTOR,
        binding_attributes,
        radiance_base,
    )

    attributes = splats.data.attributes
    base = radiance_base(avatar.sh, avatar.opacities)
    attributes.new(RADIANCE_BASE, "FLOAT4", "POINT").data.foreach_set("vector", base.reshape(-1))
    types_and_fields = {LOCAL_ROTATION: ("QUATERNION", "value"), SCALE_FACTOR: ("FLOAT_VECTOR", "vector")}
    for name, values in binding_attributes(avatar).items():
        data_type, field = types_and_fields[name]
        attributes.new(name, data_type, "POINT").data.foreach_set(field, values.reshape(-1))
    splats.data.update()

    group = splats_node_group(avatar.sh.shape[1])
    modifier = splats.modifiers.new(MODIFIER_NAME, "NODES")
    modifier.node_group = group
    # Blender 5.2 moved the modifier's inputs from ID properties to RNA (`properties.inputs`).
    body_input = getattr(modifier.properties.inputs, group.interface.items_tree[BODY_INPUT].identifier)
    body_input.value = body
    return modifier


def splats_node_group(coefficients: int) -> bpy.types.GeometryNodeTree:
    """The posing node group for avatars with `coefficients` SH coefficients per channel, shared by
    every such avatar of the file (made on first use)."""
    name = f"{NODE_GROUP_NAME} (SH {coefficients})"
    group = bpy.data.node_groups.get(name)
    if group is None or group.bl_idname != "GeometryNodeTree":
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

    def math(self, operation: str, value: bpy.types.NodeSocket, constant: float) -> bpy.types.NodeSocket:
        node = self.node("ShaderNodeMath", operation=operation)
        self.link(value, node.inputs[0])
        node.inputs[1].default_value = constant
        return node.outputs["Value"]

    def store(
        self, geometry: bpy.types.NodeSocket, name: str, data_type: str, value: bpy.types.NodeSocket
    ) -> bpy.types.NodeSocket:
        node = self.node("GeometryNodeStoreNamedAttribute", data_type=data_type, domain="POINT")
        self.link(geometry, node.inputs["Geometry"])
        node.inputs["Name"].default_value = name
        self.link(value, node.inputs["Value"])
        return node.outputs["Geometry"]


def _build_node_group(name: str, coefficients: int) -> bpy.types.GeometryNodeTree:
    from ..lca_blender.addon.native_splats import LOCAL_ROTATION, SCALE_FACTOR, sh_sources

    group = bpy.data.node_groups.new(name, "GeometryNodeTree")
    interface = group.interface
    interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    interface.new_socket(BODY_INPUT, in_out="INPUT", socket_type="NodeSocketObject")
    interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    tree = _Tree(group)
    group_input = tree.node("NodeGroupInput")
    group_output = tree.node("NodeGroupOutput")

    # The body's evaluated mesh in the splats object's space.
    body = tree.node("GeometryNodeObjectInfo", transform_space="RELATIVE")
    tree.link(group_input.outputs[BODY_INPUT], body.inputs["Object"])
    position = tree.node("GeometryNodeInputPosition").outputs["Position"]
    triangle = tree.named("INT", "triangle_id")
    corners = []
    for corner in range(3):
        index = tree.node("FunctionNodeIntegerMath", operation="MULTIPLY_ADD")
        tree.link(triangle, index.inputs[0])
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
    tangent = tree.vector_math("NORMALIZE", edge1)
    # Degenerate triangles keep a tiny positive size, as in deform, so scales stay valid.
    size = tree.math("SQRT", tree.math("MAXIMUM", tree.vector_math("LENGTH", cross), 1e-12), 0.0)

    mean = corners[0]
    for weight, axis in (("bary_1", edge1), ("bary_2", edge2), ("normal_offset", normal)):
        step = tree.vector_math("SCALE", axis, scale=tree.named("FLOAT", weight))
        mean = tree.vector_math("ADD", mean, step)
    frame = tree.node("FunctionNodeAxesToRotation", primary_axis="Z", secondary_axis="X")
    tree.link(normal, frame.inputs["Primary Axis"])
    tree.link(tangent, frame.inputs["Secondary Axis"])
    rotation = tree.node("FunctionNodeRotateRotation", rotation_space="LOCAL")
    tree.link(frame.outputs["Rotation"], rotation.inputs["Rotation"])
    tree.link(tree.named("QUATERNION", LOCAL_ROTATION), rotation.inputs["Rotate By"])
    scale = tree.vector_math("SCALE", tree.named("FLOAT_VECTOR", SCALE_FACTOR), scale=size)

    points = tree.node("GeometryNodeMeshToPoints", mode="VERTICES")
    tree.link(group_input.outputs["Geometry"], points.inputs["Mesh"])
    posed = tree.node("GeometryNodeSetPosition")
    tree.link(points.outputs["Points"], posed.inputs["Geometry"])
    tree.link(mean, posed.inputs["Position"])
    geometry = posed.outputs["Geometry"]
    geometry = tree.store(geometry, "rotation", "QUATERNION", rotation.outputs["Rotation"])
    geometry = tree.store(geometry, "scale", "FLOAT_VECTOR", scale)
    for attribute, channels in sh_sources(coefficients):
        combined = tree.node("ShaderNodeCombineXYZ")
        for axis, channel in zip("XYZ", channels, strict=True):
            tree.link(tree.named("FLOAT", channel), combined.inputs[axis])
        geometry = tree.store(geometry, attribute, "FLOAT_VECTOR", combined.outputs["Vector"])
    splat_type = tree.node("GeometryNodePointsSetType")
    splat_type.inputs["Type"].default_value = "3D Gaussian Splat"
    tree.link(geometry, splat_type.inputs["Points"])
    tree.link(splat_type.outputs[0], group_output.inputs["Geometry"])
    return group
