"""File > Import > Face capture: a Live Link Face CSV keys the avatar's shape keys and head and eye bones.

The CSV is written here as the Live Link Face app writes it (60 fps, 3 s, its column order); the
expected keys are its values resampled to the scene's frame rate with np.interp, and the expected
bone rotations are built from yaw, pitch and roll with Blender's own mathutils.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from mathutils import Matrix, Vector

CAPTURE_FPS, SECONDS, SCENE_FPS, START = 60, 3.0, 24, 10
SHAPES = (
    "EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,EyeLookUpLeft,EyeSquintLeft,EyeWideLeft,"
    "EyeBlinkRight,EyeLookDownRight,EyeLookInRight,EyeLookOutRight,EyeLookUpRight,EyeSquintRight,EyeWideRight,"
    "JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,MouthRight,MouthLeft,MouthSmileLeft,"
    "MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,MouthDimpleRight,MouthStretchLeft,"
    "MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,MouthShrugUpper,MouthPressLeft,"
    "MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,MouthUpperUpLeft,MouthUpperUpRight,BrowDownLeft,"
    "BrowDownRight,BrowInnerUp,BrowOuterUpLeft,BrowOuterUpRight,CheekPuff,CheekSquintLeft,CheekSquintRight,"
    "NoseSneerLeft,NoseSneerRight,TongueOut"
).split(",")
ROTATIONS = (
    "HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll"
)
ROTATIONS = ROTATIONS.split(",")


def _write_live_link_csv(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    count = int(CAPTURE_FPS * SECONDS)
    times = np.arange(count) / CAPTURE_FPS
    columns = {}
    for index, name in enumerate(SHAPES + ROTATIONS):
        curve = np.sin(2 * np.pi * (0.4 + 0.07 * index) * times + 0.9 * index)
        columns[name] = 0.5 + 0.5 * curve if name in SHAPES else 0.12 * curve
    lines = [",".join(["Timecode", "BlendShapeCount", *SHAPES, *ROTATIONS])]
    for row in range(count):
        second = 41 + row // CAPTURE_FPS
        values = [f"{columns[name][row]:.6f}" for name in SHAPES + ROTATIONS]
        lines.append(",".join([f"09:12:{second:02d}:{row % CAPTURE_FPS:02d}.000", "61", *values]))
    path.write_text("\n".join(lines) + "\n")
    return times, columns


def _rotation(yaw: float, pitch: float, roll: float) -> Matrix:
    """The capture's convention in the avatar's axes (+Z up, facing -Y, its left at +X)."""
    return (
        Matrix.Rotation(yaw, 3, "Z")
        @ Matrix.Rotation(pitch, 3, "X")
        @ Matrix.Rotation(roll, 3, Vector((0, -1, 0)))
    )


def _keys(curve: bpy.types.FCurve) -> np.ndarray:
    values = np.empty(2 * len(curve.keyframe_points), np.float32)
    curve.keyframe_points.foreach_get("co", values)
    return values.reshape(-1, 2)


def _curves(datablock: bpy.types.ID) -> dict[tuple[str, int], bpy.types.FCurve]:
    """Every F-curve of the datablock's action (Blender 5.x keeps them in the action's layers)."""
    action = datablock.animation_data.action
    if hasattr(action, "fcurves") and len(action.fcurves):
        curves = list(action.fcurves)
    else:
        curves = [
            curve
            for layer in action.layers
            for strip in layer.strips
            for bag in strip.channelbags
            for curve in bag.fcurves
        ]
    return {(curve.data_path, curve.array_index): curve for curve in curves}


def _import_avatar(path: Path) -> tuple[bpy.types.Object, bpy.types.Object]:
    assert bpy.ops.lca.import_avatar(filepath=str(path)) == {"FINISHED"}
    return bpy.data.objects[f"{path.stem}_rig"], bpy.data.objects[f"{path.stem}_body"]


def test_live_link_csv_keys_shape_keys_and_head_and_eyes_at_the_scene_rate(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    rig, body = _import_avatar(sample_lca)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = SCENE_FPS, 1.0
    scene.frame_set(START)
    capture = tmp_path / "take.csv"
    times, columns = _write_live_link_csv(capture)
    assert bpy.ops.lca.import_face_capture(filepath=str(capture)) == {"FINISHED"}

    frames = np.arange(int(math.floor(times[-1] * SCENE_FPS + 1e-6)) + 1)
    sample_times = frames / SCENE_FPS
    curves = _curves(body.data.shape_keys)
    key_blocks = body.data.shape_keys.key_blocks
    for name in SHAPES:
        expression = name[0].lower() + name[1:]
        assert expression in key_blocks
        keys = _keys(curves[(f'key_blocks["{expression}"].value', 0)])
        np.testing.assert_array_equal(keys[:, 0], START + frames)
        np.testing.assert_allclose(keys[:, 1], np.interp(sample_times, times, columns[name]), atol=1e-3)
    # Between keys Blender interpolates linearly: the shape key's value at a frame is the key.
    for frame in (START, START + 17, START + frames[-1]):
        scene.frame_set(int(frame))
        expected = np.interp((frame - START) / SCENE_FPS, times, columns["JawOpen"])
        assert key_blocks["jawOpen"].value == pytest.approx(expected, abs=1e-3)

    head_rest = rig.data.bones["head"].matrix_local.to_3x3()
    for frame in (START + 5, START + 40, START + frames[-1]):
        scene.frame_set(int(frame))
        t = (frame - START) / SCENE_FPS
        angles = {name: float(np.interp(t, times, columns[name])) * math.pi for name in ROTATIONS}
        head_turn = _rotation(angles["HeadYaw"], angles["HeadPitch"], angles["HeadRoll"])
        posed_head = rig.pose.bones["head"].matrix.to_3x3()
        np.testing.assert_allclose(np.array(posed_head), np.array(head_turn @ head_rest), atol=1e-4)
        for bone, side in (("eye.L", "Left"), ("eye.R", "Right")):
            eye_turn = _rotation(angles[f"{side}EyeYaw"], angles[f"{side}EyePitch"], angles[f"{side}EyeRoll"])
            expected = head_turn @ eye_turn @ rig.data.bones[bone].matrix_local.to_3x3()
            np.testing.assert_allclose(
                np.array(rig.pose.bones[bone].matrix.to_3x3()), np.array(expected), atol=1e-4
            )


def test_json_lines_and_a_second_take_replace_keys_in_their_range(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    _, body = _import_avatar(sample_lca)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 30, 1.0
    scene.frame_set(1)
    stream = tmp_path / "stream.jsonl"
    stream.write_text(
        "\n".join(json.dumps({"time": t / 30, "jawOpen": 0.5, "eyeBlinkLeft": 1.0}) for t in range(31))
    )
    assert bpy.ops.lca.import_face_capture(filepath=str(stream), strength=0.5) == {"FINISHED"}
    assert bpy.ops.lca.import_face_capture(filepath=str(stream)) == {"FINISHED"}
    curves = _curves(body.data.shape_keys)
    jaw = _keys(curves[('key_blocks["jawOpen"].value', 0)])
    np.testing.assert_array_equal(jaw[:, 0], np.arange(1, 32))
    np.testing.assert_allclose(jaw[:, 1], 0.5)
    assert ('key_blocks["mouthSmileLeft"].value', 0) not in curves  # not in the stream: not keyed


def test_a_file_that_is_not_a_capture_is_reported(
    enabled_extension: ModuleType, core: ModuleType, sample_lca: Path, tmp_path: Path
) -> None:
    _import_avatar(sample_lca)
    bad = tmp_path / "notes.csv"
    bad.write_text("Name,Age\nAda,36\n")
    with pytest.raises(RuntimeError, match="no 'Timecode' column"):
        bpy.ops.lca.import_face_capture(filepath=str(bad))
