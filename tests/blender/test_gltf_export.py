"""File > Export > LCA Gaussian avatar (.glb): the avatar read back from the scene, posed at the current
frame, written as glTF 2.0 + KHR_gaussian_splatting.

References: Blender's own pose-bone matrices and shape-key values, the add-on's posed preview of
the splats, the .lca file the avatar came from, and the Khronos glTF-Validator.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
from conftest import REPO_ROOT, core_module


def _load_validator() -> ModuleType:
    """tests/core/gltf_validator.py (npm's glTF-Validator), loaded by path: the core tests' folder is
    not on this folder's import path, and its conftest must not shadow this one."""
    spec = importlib.util.spec_from_file_location(
        "lca_gltf_validator", REPO_ROOT / "tests/core/gltf_validator.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_validator = _load_validator()
unexpected_issues, validate = _validator.unexpected_issues, _validator.validate

ARM, FINGER = "upperarm01.R", "finger2-1.L"


def _import(path: Path) -> tuple[bpy.types.Object, bpy.types.Object, bpy.types.Object]:
    assert bpy.ops.lca.import_avatar(filepath=str(path)) == {"FINISHED"}
    name = path.stem
    return (
        bpy.data.objects[f"{name}_rig"],
        bpy.data.objects[f"{name}_body"],
        bpy.data.objects[f"{name}_splats"],
    )


def _node_matrix(node: dict, quaternion_to_matrix) -> np.ndarray:
    matrix = np.eye(4)
    x, y, z, w = node.get("rotation", [0, 0, 0, 1])
    matrix[:3, :3] = quaternion_to_matrix(np.array([w, x, y, z], np.float64))
    matrix[:3, 3] = node.get("translation", [0, 0, 0])
    return matrix


def _joint_globals(document, quaternion_to_matrix) -> dict[str, np.ndarray]:
    nodes = document.json["nodes"]
    parents = {child: index for index, node in enumerate(nodes) for child in node.get("children", [])}
    result = {}
    for joint in document.json["skins"][0]["joints"]:
        matrix, index = _node_matrix(nodes[joint], quaternion_to_matrix), joint
        while index in parents:
            index = parents[index]
            matrix = _node_matrix(nodes[index], quaternion_to_matrix) @ matrix
        result[nodes[joint]["name"]] = matrix
    return result


def _pose(rig: bpy.types.Object, body: bpy.types.Object) -> None:
    rig.pose.bones[ARM].rotation_quaternion = (np.cos(0.5), 0.0, np.sin(0.5), 0.0)
    rig.pose.bones[FINGER].rotation_quaternion = (np.cos(0.6), np.sin(0.6), 0.0, 0.0)
    rig.pose.bones[0].location = (0.0, 0.05, 0.0)  # the root bone, moved along its own axes
    body.data.shape_keys.key_blocks["jawOpen"].value = 0.6
    body.data.shape_keys.key_blocks["mouthSmileLeft"].value = 0.3


def test_rigged_export_holds_the_scene_pose_the_expressions_and_skins_to_the_preview(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    gltf = core_module(core, "formats.gltf")
    rotations = core_module(core, "maths.rotations")
    rig, body, splats = _import(sample_lca)
    _pose(rig, body)
    bpy.context.scene.frame_set(3)
    output = tmp_path / "avatar.glb"
    assert bpy.ops.lca.export_gltf(filepath=str(output), content="RIGGED") == {"FINISHED"}

    report = validate(output)
    assert unexpected_issues(report) == []
    assert report["info"]["hasSkins"] and report["info"]["hasMorphTargets"]
    document = gltf.read_glb(output)

    # The skeleton: every joint's global frame is the pose bone's, in glTF's Y-up frame.
    globals_ = _joint_globals(document, rotations.quaternion_to_matrix)
    assert list(globals_) == [bone.name for bone in rig.data.bones]
    for bone in rig.pose.bones:
        expected = np.eye(4)
        expected[:3] = gltf.Y_UP @ np.array(rig.matrix_world @ bone.matrix, np.float64)[:3]
        np.testing.assert_allclose(globals_[bone.name], expected, atol=2e-5, err_msg=bone.name)

    # The expressions: morph weights are the shape keys' values, in their order, named.
    keys = [key for key in body.data.shape_keys.key_blocks if key != body.data.shape_keys.reference_key]
    for mesh in document.json["meshes"]:
        assert mesh["extras"]["targetNames"] == [key.name for key in keys]
        np.testing.assert_allclose(mesh["weights"], [key.value for key in keys], atol=1e-7)

    # The splats at rest are the .lca file's; skinned with the exported skin they land on the
    # add-on's posed preview (linear blend skinning of points: within millimetres).
    avatar = core_module(core, "formats.lca").read_avatar(sample_lca)
    (node,) = [n for n in document.json["nodes"] if n.get("name", "").endswith("_splats")]
    mesh = document.json["meshes"][node["mesh"]]
    primitive = mesh["primitives"][0]
    rest = document.accessor(primitive["attributes"]["POSITION"]).astype(np.float64)
    at_rest = core_module(core, "maths.deform").pose_avatar(avatar).means.astype(np.float64) @ gltf.Y_UP.T
    np.testing.assert_allclose(rest, at_rest, atol=1e-5)

    skin = document.json["skins"][node["skin"]]
    inverse_binds = document.accessor(skin["inverseBindMatrices"]).astype(np.float64).reshape(-1, 4, 4)
    names = [document.json["nodes"][joint]["name"] for joint in skin["joints"]]
    joint_matrices = np.array([globals_[name] for name in names]) @ inverse_binds.transpose(0, 2, 1)
    positions = rest + sum(
        weight * document.accessor(target["POSITION"])
        for weight, target in zip(mesh["weights"], primitive["targets"], strict=True)
    )
    joints = document.accessor(primitive["attributes"]["JOINTS_0"]).astype(np.int64)
    weights = document.accessor(primitive["attributes"]["WEIGHTS_0"]).astype(np.float64)
    blended = np.einsum("pk,pkij->pij", weights, joint_matrices[joints])
    skinned = np.einsum("pij,pj->pi", blended[:, :3, :3], positions) + blended[:, :3, 3]
    posing = __import__(f"{enabled_extension.__name__}.viewport.posing", fromlist=["pose_splats"])
    preview = posing.pose_splats(splats, bpy.context.evaluated_depsgraph_get())
    errors = np.linalg.norm(skinned - preview.means.astype(np.float64) @ gltf.Y_UP.T, axis=1)
    assert np.median(errors) < 1e-5 and np.percentile(errors, 99) < 5e-3 and errors.max() < 3e-2


def test_posed_export_is_the_preview_with_the_sliders(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    gltf = core_module(core, "formats.gltf")
    rig, body, splats = _import(sample_lca)
    _pose(rig, body)
    splats.lca.splat_scale, splats.lca.opacity = 1.5, 0.5
    bpy.context.scene.frame_set(2)
    output = tmp_path / "posed.glb"
    assert bpy.ops.lca.export_gltf(filepath=str(output), content="POSED") == {"FINISHED"}
    assert unexpected_issues(validate(output)) == []
    written = gltf.read_splats_glb(output)
    posing = __import__(f"{enabled_extension.__name__}.viewport.posing", fromlist=["pose_splats"])
    preview = posing.pose_splats(splats, bpy.context.evaluated_depsgraph_get())
    np.testing.assert_allclose(written.means, preview.means, atol=1e-5)
    np.testing.assert_allclose(written.scales, 1.5 * preview.scales, rtol=1e-5)
    np.testing.assert_allclose(written.opacities, 0.5 * preview.opacities, atol=1e-6)
    np.testing.assert_allclose(written.sh, preview.sh, atol=1e-5)


def test_the_scene_frame_range_becomes_the_files_animation(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    gltf = core_module(core, "formats.gltf")
    rotations = core_module(core, "maths.rotations")
    rig, body, _ = _import(sample_lca)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 5
    bone = rig.pose.bones[ARM]
    jaw = body.data.shape_keys.key_blocks["jawOpen"]
    for frame, angle, value in ((1, 0.0, 0.0), (5, 0.8, 1.0)):
        bone.rotation_quaternion = (np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2))
        bone.keyframe_insert("rotation_quaternion", frame=frame)
        jaw.value = value
        jaw.keyframe_insert("value", frame=frame)
    scene.frame_set(3)
    output = tmp_path / "animated.glb"
    assert bpy.ops.lca.export_gltf(filepath=str(output), include_animation=True) == {"FINISHED"}
    assert scene.frame_current == 3
    report = validate(output)
    assert unexpected_issues(report) == [] and report["info"]["animationCount"] == 1
    document = gltf.read_glb(output)
    animation = document.json["animations"][0]
    targets = {
        (channel["target"]["node"], channel["target"]["path"]): channel for channel in animation["channels"]
    }
    nodes = document.json["nodes"]
    arm = next(index for index, node in enumerate(nodes) if node.get("name") == ARM)
    sampler = animation["samplers"][targets[(arm, "rotation")]["sampler"]]
    np.testing.assert_allclose(
        document.accessor(sampler["input"]),
        np.arange(5) / (scene.render.fps / scene.render.fps_base),
        atol=1e-6,
    )
    keys = document.accessor(sampler["output"]).astype(np.float64)
    jaw_values = []
    for row, frame in enumerate(range(1, 6)):
        scene.frame_set(frame)
        jaw_values.append(jaw.value)
        node = dict(nodes[arm], rotation=list(keys[row]))
        # The arm's node rotation is its rest rotation relative to its parent, then the pose.
        parent_bone = rig.data.bones[ARM].parent
        rest_local = np.array(parent_bone.matrix_local.inverted() @ rig.data.bones[ARM].matrix_local)[:3, :3]
        expected = rest_local @ np.array(bone.matrix_basis)[:3, :3]
        np.testing.assert_allclose(
            _node_matrix(node, rotations.quaternion_to_matrix)[:3, :3], expected, atol=1e-5
        )
    (body_node,) = [index for index, node in enumerate(nodes) if node.get("name", "").endswith("_body")]
    weights = document.accessor(animation["samplers"][targets[(body_node, "weights")]["sampler"]]["output"])
    jaw_index = [key.name for key in body.data.shape_keys.key_blocks][1:].index("jawOpen")
    np.testing.assert_allclose(weights.reshape(5, -1)[:, jaw_index], jaw_values, atol=1e-6)
    assert jaw_values[0] == 0.0 and jaw_values[-1] == 1.0 and 0 < jaw_values[2] < 1
