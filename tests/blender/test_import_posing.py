"""Import an .lca avatar, pose it with Blender's armature and shape keys, and the splats follow the core.

The sample avatar is a real Anny rig (104 bones with every finger phalanx, 52 ARKit shape keys)
written by the engine; the expected positions come from the core's `deform.pose_avatar`.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from conftest import GAUSSIAN_COUNT, blender_pose, core_module, remove_all_data, sidebar_labels

REPO_ROOT = Path(__file__).resolve().parents[2]
FINGER = "finger2-1.L"  # the left index finger's first phalanx (MakeHuman's names)


def _import(path: Path) -> tuple[bpy.types.Object, bpy.types.Object, bpy.types.Object]:
    """Import `path` as the draw handler shows it. Blender 5.3+ draws and renders the imported splats
    natively (test_native_splats.py); here their modifier goes and the preview is switched on, as
    in a .blend made before 5.3, so these tests cover the draw handler's path on every Blender."""
    assert bpy.ops.lca.import_avatar(filepath=str(path)) == {"FINISHED"}
    name = path.stem
    splats = bpy.data.objects[f"{name}_splats"]
    native = splats.modifiers.get("LCA Native Splats")
    if native is not None:
        splats.modifiers.remove(native)
    splats.lca.preview = True
    return bpy.data.objects[f"{name}_rig"], bpy.data.objects[f"{name}_body"], splats


def _preview(splats: bpy.types.Object, enabled_extension: ModuleType):
    state = importlib.import_module(f"{enabled_extension.__name__}.viewport.state")
    preview = state.get_preview(splats.name)
    assert preview is not None, "no preview for the splats"
    return preview


def _expected_means(core, avatar, pose, expressions, matrix_world) -> np.ndarray:
    splats = core_module(core, "maths.deform").pose_avatar(avatar, pose, expressions)
    matrix = np.array(matrix_world, np.float64)
    return (splats.means @ matrix[:3, :3].T + matrix[:3, 3]).astype(np.float32)


def _bound_to(avatar, vertex_mask: np.ndarray) -> np.ndarray:
    """[N] bool: Gaussians whose triangle touches a vertex in `vertex_mask`."""
    return vertex_mask[avatar.rig.triangles[avatar.triangle_ids]].any(axis=1)


def test_import_makes_rig_body_and_splats(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path
) -> None:
    avatar = core_module(core, "formats.lca").read_avatar(sample_lca)
    rig_data = avatar.rig
    rig, body, splats = _import(sample_lca)

    assert rig.type == "ARMATURE" and [bone.name for bone in rig.data.bones] == rig_data.joint_names
    for phalanx in ("1", "2", "3"):
        for finger in ("1", "2", "3", "4", "5"):
            assert (
                f"finger{finger}-{phalanx}.L" in rig.data.bones
                and f"finger{finger}-{phalanx}.R" in rig.data.bones
            )
    matrices = np.array([np.array(bone.matrix_local) for bone in rig.data.bones])
    # Heads and tails are float32: a bone's axis is known to about eps * |head| / length, which
    # for the 18 mm eye bones 1.5 m up is above 1e-5. Every bone matches to that bound or 1e-5.
    lengths = np.linalg.norm(rig_data.bone_tails - rig_data.bone_heads, axis=1)
    bound = np.maximum(1e-5, 8 * np.finfo(np.float32).eps * np.abs(rig_data.bone_heads).max(1) / lengths)
    errors = np.abs(matrices - rig_data.rest_transforms).max(axis=(1, 2))
    assert (errors <= bound).all(), dict(zip(rig_data.joint_names, errors[errors > bound], strict=False))
    assert (errors <= 1e-5).mean() > 0.95
    parents = [rig.data.bones[name].parent for name in rig_data.joint_names]
    assert [
        rig_data.joint_names.index(p.name) if p else -1 for p in parents
    ] == rig_data.joint_parents.tolist()

    arkit = list(core_module(core, "avatar").ARKIT_EXPRESSIONS)
    keys = body.data.shape_keys.key_blocks
    assert [key.name for key in keys][1:] == rig_data.expression_names
    assert sorted(key.name for key in keys[1:]) == sorted(arkit) and len(keys) == 53
    assert [key.value for key in keys] == [0.0] * 53  # a neutral face (Blender 5.3 gives new keys 1.0)
    assert body.parent == rig and body.hide_render and body.display_type == "WIRE"
    assert [m.type for m in body.modifiers] == ["ARMATURE"] and body.modifiers[0].object == rig
    assert len(body.data.vertices) == rig_data.vertex_count and len(body.data.polygons) == len(
        rig_data.triangles
    )
    # The mesh data goes in through raw attribute arrays: read it back the slow, per-item way.
    mesh = body.data
    np.testing.assert_array_equal([v.co[:] for v in mesh.vertices], rig_data.vertices.astype(np.float32))
    np.testing.assert_array_equal([p.vertices[:] for p in mesh.polygons], rig_data.triangles)
    uv_layer = mesh.uv_layers["UVMap"]
    np.testing.assert_array_equal(
        [uv_layer.data[loop].uv[:] for loop in range(len(mesh.loops))],
        rig_data.uvs[rig_data.triangle_uvs.reshape(-1)].astype(np.float32),
    )
    jaw_open = rig_data.expression_names.index("jawOpen")
    np.testing.assert_allclose(
        [point.co[:] for point in keys["jawOpen"].data],
        rig_data.vertices + rig_data.expression_deltas[jaw_open],
        atol=1e-6,
    )
    assert mesh.validate() is False  # False: nothing needed fixing
    assert [group.name for group in body.vertex_groups] == rig_data.joint_names
    weights = core_module(core, "addon.blender_data").joint_weights(rig_data)
    for vertex in (0, 5000, rig_data.vertex_count - 1):
        found = {body.vertex_groups[g.group].name: g.weight for g in body.data.vertices[vertex].groups}
        expected = {rig_data.joint_names[j]: w for j, w in enumerate(weights[:, vertex]) if w > 0}
        assert found.keys() == expected.keys()
        np.testing.assert_allclose([found[n] for n in expected], list(expected.values()), atol=1e-7)

    assert len(splats.data.vertices) == avatar.gaussian_count == GAUSSIAN_COUNT
    assert splats.lca.is_splats and splats.parent == body and not splats.hide_render
    assert {"f_dc_0", "f_rest_8", "opacity", "scale_2", "rot_3", "triangle_id", "bary_2", "albedo"} <= set(
        splats.data.attributes.keys()
    )
    preview = _preview(splats, enabled_extension)
    at_rest = core_module(core, "maths.deform").pose_avatar(avatar).means
    np.testing.assert_allclose(preview.means, at_rest, atol=1e-5)


def test_bad_file_is_reported(core: ModuleType, tmp_path: Path) -> None:
    bad = tmp_path / "broken.lca"
    bad.write_bytes(b"not a zip")
    with pytest.raises(RuntimeError, match="broken.lca"):
        bpy.ops.lca.import_avatar(filepath=str(bad))
    assert "broken_rig" not in bpy.data.objects


def test_posing_the_armature_and_shape_keys_moves_the_splats_as_the_core(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    avatar = core_module(core, "formats.lca").read_avatar(sample_lca)
    rig_data = avatar.rig
    rig, body, splats = _import(sample_lca)
    rest_means = _preview(splats, enabled_extension).means.copy()
    # Lift and turn the whole avatar: the preview is in world space.
    rig.location = (0.4, -0.2, 0.1)
    rig.rotation_euler = (0.0, 0.0, 0.3)
    scene = bpy.context.scene
    scene.frame_set(1)
    lifted = _preview(splats, enabled_extension).means.copy()

    finger = rig.pose.bones[FINGER]
    finger.rotation_quaternion = (np.cos(0.4), np.sin(0.4), 0.0, 0.0)  # 46 degrees about the bone's X
    body.data.shape_keys.key_blocks["jawOpen"].value = 1.0
    scene.frame_set(1)
    posed = _preview(splats, enabled_extension).means

    pose = blender_pose(core, rig, rig_data)
    expected = _expected_means(core, avatar, pose, {"jawOpen": 1.0}, rig.matrix_world)
    np.testing.assert_allclose(posed, expected, atol=1e-4)

    finger_chain = [rig_data.joint_index(name) for name in (FINGER, "finger2-2.L", "finger2-3.L")]
    finger_weight = np.zeros(rig_data.vertex_count)
    for joint in finger_chain:
        finger_weight += (rig_data.skin_weights * (rig_data.skin_indices == joint)).sum(1)
    on_finger = _bound_to(avatar, finger_weight > 0.5)
    jaw = _bound_to(
        avatar,
        np.linalg.norm(rig_data.expression_deltas[rig_data.expression_names.index("jawOpen")], axis=1) > 1e-3,
    )
    moved = np.linalg.norm(posed - lifted, axis=1)
    assert on_finger.sum() > 20 and jaw.sum() > 20
    assert (moved[on_finger] > 1e-3).mean() > 0.9, "the finger's splats did not follow the bone"
    assert (moved[jaw] > 1e-4).mean() > 0.9, "the jaw's splats did not follow jawOpen"
    touched = _bound_to(
        avatar,
        (finger_weight > 0)
        | (
            np.linalg.norm(rig_data.expression_deltas[rig_data.expression_names.index("jawOpen")], axis=1) > 0
        ),
    )
    np.testing.assert_allclose(posed[~touched], lifted[~touched], atol=1e-6)
    assert not np.allclose(lifted, rest_means, atol=1e-3)


def test_updates_that_leave_the_body_as_it_was_do_not_re_pose(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path
) -> None:
    rig, body, splats = _import(sample_lca)
    scene = bpy.context.scene
    first = _preview(splats, enabled_extension)
    rig.select_set(True)
    rig.data.display_type = "STICK"  # a depsgraph update of the rig that moves nothing
    scene.frame_set(scene.frame_current)
    assert _preview(splats, enabled_extension) is first  # no re-posing, re-upload or re-sort

    rig.location = (0.0, 0.0, 0.25)
    scene.frame_set(scene.frame_current)
    lifted = _preview(splats, enabled_extension)
    assert lifted.version == first.version + 1
    np.testing.assert_allclose(lifted.means, first.means + [0.0, 0.0, 0.25], atol=1e-5)


def test_keyframes_animate_the_splats(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path
) -> None:
    avatar = core_module(core, "formats.lca").read_avatar(sample_lca)
    rig, body, splats = _import(sample_lca)
    finger = rig.pose.bones[FINGER]
    finger.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
    finger.keyframe_insert("rotation_quaternion", frame=1)
    finger.rotation_quaternion = (np.cos(0.6), np.sin(0.6), 0.0, 0.0)
    finger.keyframe_insert("rotation_quaternion", frame=10)
    jaw = body.data.shape_keys.key_blocks["jawOpen"]
    jaw.value = 0.0
    jaw.keyframe_insert("value", frame=1)
    jaw.value = 1.0
    jaw.keyframe_insert("value", frame=10)

    scene = bpy.context.scene
    means = {}
    for frame in (1, 10, 5):
        scene.frame_set(frame)
        means[frame] = _preview(splats, enabled_extension).means.copy()
        pose = blender_pose(core, rig, avatar.rig)
        expected = _expected_means(core, avatar, pose, {"jawOpen": jaw.value}, rig.matrix_world)
        np.testing.assert_allclose(means[frame], expected, atol=1e-4, err_msg=f"frame {frame}")
    assert 0.0 < jaw.value < 1.0 and 0.0 < finger.rotation_quaternion[1] < np.sin(0.6)
    assert not np.allclose(means[5], means[1], atol=1e-4) and not np.allclose(means[5], means[10], atol=1e-4)


def test_saved_file_reloads_posed_without_the_lca(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "actor.lca"
    shutil.copy(sample_lca, copy)
    rig, body, splats = _import(copy)
    rig.pose.bones[FINGER].rotation_quaternion = (np.cos(0.4), 0.0, 0.0, np.sin(0.4))
    body.data.shape_keys.key_blocks["jawOpen"].value = 0.7
    bpy.context.scene.frame_set(3)
    before = _preview(splats, enabled_extension).means.copy()
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    copy.unlink()  # the .blend must be self-contained

    posing = importlib.import_module(f"{enabled_extension.__name__}.viewport.posing")
    state = importlib.import_module(f"{enabled_extension.__name__}.viewport.state")
    state.clear()
    posing._BOUND.clear()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    reloaded = state.get_preview("actor_splats")
    assert reloaded is not None, "load_post did not restore the preview"
    np.testing.assert_allclose(reloaded.means, before, atol=1e-6)
    assert bpy.data.objects["actor_body"].data.shape_keys.key_blocks["jawOpen"].value == pytest.approx(0.7)


def test_depsgraph_update_reposes_and_settings_apply(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path
) -> None:
    rig, body, splats = _import(sample_lca)
    posing = importlib.import_module(f"{enabled_extension.__name__}.viewport.posing")
    state = importlib.import_module(f"{enabled_extension.__name__}.viewport.state")
    rest = state.get_preview(splats.name)
    body.data.shape_keys.key_blocks["jawOpen"].value = 1.0
    splats.lca.splat_scale = 2.0
    splats.lca.opacity = 0.5
    depsgraph = bpy.context.evaluated_depsgraph_get()
    posing.on_depsgraph_update(bpy.context.scene, depsgraph)
    posed = state.get_preview(splats.name)
    assert posed.version > rest.version
    assert not np.allclose(posed.means, rest.means, atol=1e-4)
    moved = np.linalg.norm(posed.means - rest.means, axis=1) > 1e-6
    # The sliders are applied by the drawer (a push constant), not baked into the posed preview.
    np.testing.assert_allclose(posed.scales[~moved], rest.scales[~moved], rtol=1e-5)
    np.testing.assert_allclose(posed.opacities, rest.opacities, rtol=1e-6)
    draw = importlib.import_module(f"{enabled_extension.__name__}.viewport.draw")
    settings = draw.object_settings(splats.name)
    assert (settings.splat_scale, settings.opacity) == (2.0, 0.5)
    splats.lca.preview = False
    posing.update_previews(bpy.context.scene, depsgraph)
    assert state.get_preview(splats.name) is None


def test_a_posing_failure_shows_in_the_sidebar_until_posing_works_again(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path
) -> None:
    avatar = core_module(core, "formats.lca").read_avatar(sample_lca)
    rig, body, splats = _import(sample_lca)
    state = importlib.import_module(f"{enabled_extension.__name__}.viewport.state")
    scene = bpy.context.scene
    posed = _preview(splats, enabled_extension)
    assert state.posing_error(splats.name) is None
    assert not [icon for _, icon in sidebar_labels(enabled_extension, rig) if icon == "ERROR"]

    # A Subdivision modifier gives the body more vertices than the splats are bound to.
    subdivision = body.modifiers.new("Subdivision", "SUBSURF")
    rig.location = (0.0, 0.0, 0.5)
    scene.frame_set(2)
    message = state.posing_error(splats.name)
    assert message is not None and f"'{body.name}' has" in message and "subdivision" in message
    assert _preview(splats, enabled_extension) is posed  # the last pose that worked stays drawn
    labels = sidebar_labels(enabled_extension, rig)
    errors = [index for index, (_, icon) in enumerate(labels) if icon == "ERROR"]
    assert len(errors) == 1, labels
    shown = " ".join(text for text, _ in labels[errors[0] + 1 :])
    assert shown.startswith(message[:40]) and " ".join(message.split()) in shown

    body.modifiers.remove(subdivision)
    scene.frame_set(3)
    assert state.posing_error(splats.name) is None
    assert not [icon for _, icon in sidebar_labels(enabled_extension, rig) if icon == "ERROR"]
    expected = _expected_means(core, avatar, blender_pose(core, rig, avatar.rig), {}, rig.matrix_world)
    np.testing.assert_allclose(_preview(splats, enabled_extension).means, expected, atol=1e-4)

    # Splats that lost their body (deleted, or unparented) say so too.
    splats.parent = None
    scene.frame_set(4)
    assert "parent it to its avatar's body mesh again" in state.posing_error(splats.name)
    splats.parent = body
    scene.frame_set(5)
    assert state.posing_error(splats.name) is None


def test_render_frames_stops_at_a_frame_whose_splats_cannot_be_posed(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    rig, body, splats = _import(sample_lca)
    scene = bpy.context.scene
    camera = bpy.data.objects.new("frames camera", bpy.data.cameras.new("frames camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.filepath = str(tmp_path / "frame_")
    scene.frame_start, scene.frame_end = 1, 2
    body.modifiers.new("Subdivision", "SUBSURF")
    # The preview would still hold the last pose that worked: no frame is drawn from it.
    with pytest.raises(RuntimeError, match=f"Stopped after 0 of 2 frames: '{splats.name}' cannot follow"):
        bpy.ops.lca.render_frames()
    assert list(tmp_path.iterdir()) == []


def test_export_writes_the_posed_splats(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    rig, body, splats = _import(sample_lca)
    rig.pose.bones[FINGER].rotation_quaternion = (np.cos(0.4), np.sin(0.4), 0.0, 0.0)
    splats.lca.splat_scale, splats.lca.opacity = 1.5, 0.5  # exported as the viewport shows them
    bpy.context.scene.frame_set(2)
    output = tmp_path / "posed.ply"
    assert bpy.ops.lca.export_posed_ply(filepath=str(output)) == {"FINISHED"}
    written = core_module(core, "formats.ply").read_ply(output)
    preview = _preview(splats, enabled_extension)
    np.testing.assert_allclose(written.means, preview.means, atol=1e-6)
    np.testing.assert_allclose(written.scales, 1.5 * preview.scales, rtol=1e-5)
    np.testing.assert_allclose(written.opacities, 0.5 * preview.opacities, rtol=1e-5, atol=1e-6)


def test_disabling_after_use_leaves_nothing_behind(installed_extension, sample_lca: Path) -> None:
    root = installed_extension.enable()
    try:
        _import(sample_lca)
        bpy.context.scene.frame_set(4)
        state = importlib.import_module(f"{root.__name__}.viewport.state")
        posing = importlib.import_module(f"{root.__name__}.viewport.posing")
        assert state.previews() and posing._BOUND
    finally:
        installed_extension.disable()
        remove_all_data()
    assert not state.previews() and not posing._BOUND
    module = installed_extension.module
    for name in ("frame_change_post", "depsgraph_update_post", "load_post"):
        assert not [h for h in getattr(bpy.app.handlers, name) if h.__module__.startswith(module)]
    assert not hasattr(bpy.types.Object, "lca")
    for menu in (bpy.types.TOPBAR_MT_file_import, bpy.types.TOPBAR_MT_file_export):
        assert not [f for f in getattr(menu.draw, "_draw_funcs", ()) if f.__module__.startswith(module)]


def _with_outer_layer(core: ModuleType, avatar):
    """`avatar` with an outer layer: a copy of its torso's and thighs' skin 5 cm out along the normals
    (a loose garment), weighted as the skin under it, and every third Gaussian moved onto it."""
    import dataclasses

    rig = avatar.rig
    weights = core_module(core, "addon.blender_data").joint_weights(rig)  # [J, V]
    hips = [rig.joint_index(name) for name in ("root", "upperleg01.L", "upperleg01.R", "spine05")]
    chosen = weights[hips].sum(axis=0) > 0.5
    inside = chosen[rig.triangles].all(axis=1)
    triangles = rig.triangles[inside]
    used, compact = np.unique(triangles, return_inverse=True)
    corners = rig.vertices[rig.triangles]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(rig.vertices)
    np.add.at(normals, rig.triangles.ravel(), np.repeat(face_normals, 3, axis=0))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    outer_vertices = (rig.vertices[used] + 0.05 * normals[used]).astype(np.float32)
    count = len(used)
    layered = dataclasses.replace(
        rig,
        vertices=np.concatenate([rig.vertices, outer_vertices]),
        triangles=np.concatenate([rig.triangles, compact.reshape(-1, 3).astype(np.int32) + rig.vertex_count]),
        skin_indices=np.concatenate([rig.skin_indices, rig.skin_indices[used]]),
        skin_weights=np.concatenate([rig.skin_weights, rig.skin_weights[used]]),
        expression_deltas=np.concatenate(
            [rig.expression_deltas, np.zeros((len(rig.expression_names), count, 3), np.float32)], axis=1
        ),
        uvs=None,
        triangle_uvs=None,
        vertex_layers=np.r_[np.zeros(rig.vertex_count, np.int32), np.ones(count, np.int32)],
    )
    triangle_ids = avatar.triangle_ids.copy()
    triangle_ids[::3] = rig.triangles.shape[0] + np.arange(len(triangle_ids[::3])) % len(triangles)
    return dataclasses.replace(avatar, rig=layered, triangle_ids=triangle_ids)


def test_an_outer_layer_poses_with_the_armature_and_has_its_vertex_group(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    lca = core_module(core, "formats.lca")
    avatar = _with_outer_layer(core, lca.read_avatar(sample_lca))
    path = tmp_path / "layered.lca"
    lca.write_avatar(path, avatar)
    rig, body, splats = _import(path)
    group = body.vertex_groups["LCA Outer Layer"]
    in_group = np.zeros(len(body.data.vertices), bool)
    for vertex in body.data.vertices:
        in_group[vertex.index] = any(g.group == group.index for g in vertex.groups)
    np.testing.assert_array_equal(in_group, avatar.rig.vertex_layers == 1)
    thigh = rig.pose.bones["upperleg01.L"]
    thigh.rotation_quaternion = (np.cos(0.35), np.sin(0.35), 0.0, 0.0)  # the leg forward, a stride
    bpy.context.scene.frame_set(1)
    posed = _preview(splats, enabled_extension).means
    expected = _expected_means(core, avatar, blender_pose(core, rig, avatar.rig), None, rig.matrix_world)
    np.testing.assert_allclose(posed, expected, atol=1e-4)
    on_outer = (avatar.rig.vertex_layers == 1)[avatar.rig.triangles[avatar.triangle_ids]].all(axis=1)
    assert on_outer.sum() > 100


def _written_ply(core: ModuleType, path: Path, count: int = 500) -> object:
    """Random degree-3 splats written as a 3DGS .ply at `path`; returns them as read back."""
    rng = np.random.default_rng(11)
    rotations = rng.normal(size=(count, 4))
    rotations /= np.linalg.norm(rotations, axis=1, keepdims=True)
    splats = core_module(core, "avatar").Splats(
        means=rng.uniform(-1, 1, size=(count, 3)).astype(np.float32),
        rotations=rotations.astype(np.float32),
        scales=rng.uniform(0.005, 0.05, size=(count, 3)).astype(np.float32),
        opacities=rng.uniform(0.05, 0.95, count).astype(np.float32),
        sh=rng.normal(0, 0.3, size=(count, 16, 3)).astype(np.float32),
    )
    ply = core_module(core, "formats.ply")
    ply.write_ply(path, splats)
    return ply.read_ply(path)


def test_a_splat_ply_becomes_a_mesh_the_preview_draws_where_its_object_is(
    enabled_extension: ModuleType, core: ModuleType, tmp_path: Path
) -> None:
    # Before 5.3 the import operator makes this mesh (from 5.3 Blender's own importer makes a native
    # splat object instead, test_native_splats.py); the function is the same on every Blender.
    import_export = core_module(enabled_extension, "operators.import_export")
    written = _written_ply(core, tmp_path / "statue.ply")
    statue = import_export.create_static_splats(bpy.context, str(tmp_path / "statue.ply"))
    assert statue.type == "MESH" and statue.lca.is_splats and bpy.context.view_layer.objects.active == statue
    preview = _preview(statue, enabled_extension)
    np.testing.assert_array_equal(preview.means, written.means)
    np.testing.assert_allclose(preview.rotations, written.rotations, atol=1e-7)
    np.testing.assert_allclose(preview.scales, written.scales, rtol=1e-6)
    np.testing.assert_allclose(preview.opacities, written.opacities, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(preview.sh, written.sh)
    assert not [icon for _, icon in sidebar_labels(enabled_extension, statue) if icon == "ERROR"]

    # Moved, turned and scaled: the preview follows the object.
    statue.location, statue.rotation_euler, statue.scale = (1.0, 2.0, 0.5), (0.3, 0.0, 1.2), (2.0, 2.0, 2.0)
    bpy.context.scene.frame_set(2)
    matrix = np.array(statue.matrix_world, np.float64)
    turn = np.array(statue.matrix_world.to_quaternion(), np.float64)
    rotations = core_module(core, "maths.rotations").quaternion_multiply(
        turn, written.rotations.astype(np.float64)
    )
    moved = _preview(statue, enabled_extension)
    np.testing.assert_allclose(moved.means, written.means @ matrix[:3, :3].T + matrix[:3, 3], atol=1e-5)
    same_sign = np.sign(np.sum(moved.rotations * rotations, axis=1, keepdims=True))
    np.testing.assert_allclose(moved.rotations * same_sign, rotations, atol=1e-6)
    np.testing.assert_allclose(moved.scales, written.scales * 2.0, rtol=1e-6)

    # The posed-splats export writes them as they are shown.
    exported = tmp_path / "moved.ply"
    assert bpy.ops.lca.export_posed_ply(filepath=str(exported)) == {"FINISHED"}
    np.testing.assert_allclose(
        core_module(core, "formats.ply").read_ply(exported).means, moved.means, atol=1e-6
    )


@pytest.mark.skipif(bpy.app.version >= (5, 3, 0), reason="from 5.3 Blender's own importer reads the .ply")
def test_the_ply_import_operator_makes_the_previewed_mesh_before_5_3(
    enabled_extension: ModuleType, core: ModuleType, tmp_path: Path
) -> None:
    written = _written_ply(core, tmp_path / "scan.ply", count=50)
    assert bpy.ops.lca.import_splats_ply(filepath=str(tmp_path / "scan.ply")) == {"FINISHED"}
    np.testing.assert_array_equal(_preview(bpy.data.objects["scan"], enabled_extension).means, written.means)

    mesh_ply = tmp_path / "triangle.ply"
    mesh_ply.write_text(
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n"
    )
    before = set(bpy.data.objects)
    with pytest.raises(RuntimeError, match="triangle.ply"):
        bpy.ops.lca.import_splats_ply(filepath=str(mesh_ply))
    assert set(bpy.data.objects) == before
