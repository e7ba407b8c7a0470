"""Face capture in: Live Link Face CSV and JSON lines -> ARKit weights and head/eye rotations over time.

The CSVs are written here the way the Live Link Face app writes them (its column order, 61 in
BlendShapeCount, HH:MM:SS:FF.fff timecodes); the expected values come straight from what was
written, resampled with np.interp.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lca_blender.avatar import ARKIT_EXPRESSIONS
from lca_blender.errors import AvatarFileError
from lca_blender.formats.face_capture import (
    bone_rotations,
    read_face_capture,
    resample,
    yaw_pitch_roll_quaternions,
)
from lca_blender.maths.rotations import axis_angle_to_quaternion, quaternion_to_matrix

LIVE_LINK_HEADER = (
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,EyeLookUpLeft,"
    "EyeSquintLeft,EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,EyeLookOutRight,EyeLookUpRight,"
    "EyeSquintRight,EyeWideRight,JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,"
    "MouthRight,MouthLeft,MouthSmileLeft,MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,"
    "MouthDimpleRight,MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,"
    "MouthShrugUpper,MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,MouthUpperUpLeft,"
    "MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,BrowOuterUpRight,CheekPuff,"
    "CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,TongueOut,HeadYaw,HeadPitch,HeadRoll,"
    "LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll"
).split(",")


def live_link_csv(
    path: Path, fps: int = 60, seconds: float = 3.0, start: str = "17:21:58"
) -> dict[str, np.ndarray]:
    """Write a Live Link Face CSV with smooth, distinct curves per column; returns column -> values
    (and "time" -> seconds from the first row)."""
    count = int(round(fps * seconds))
    times = np.arange(count) / fps
    columns: dict[str, np.ndarray] = {"time": times}
    hours, minutes, seconds_start = (int(part) for part in start.split(":"))
    lines = [",".join(LIVE_LINK_HEADER)]
    for index, name in enumerate(LIVE_LINK_HEADER[2:]):
        phase, speed = 0.37 * index, 0.5 + 0.05 * index
        if index < 52:
            columns[name] = 0.5 + 0.5 * np.sin(2 * np.pi * speed * times + phase)
        else:  # rotations, as Live Link stores them: angle / 180 degrees
            columns[name] = 0.15 * np.sin(2 * np.pi * speed * times + phase)
    for row in range(count):
        second = seconds_start + row // fps
        # The part after the frame's dot is the sub-frame fraction a real recording has.
        frame = f"{row % fps:02d}.{(row * 7) % 1000:03d}"
        timecode = f"{hours:02d}:{minutes + second // 60:02d}:{second % 60:02d}:{frame}"
        values = [f"{columns[name][row]:.6f}" for name in LIVE_LINK_HEADER[2:]]
        lines.append(",".join([timecode, "61", *values]))
    path.write_text("\n".join(lines) + "\n")
    sub_frames = np.array([((row * 7) % 1000) / 1000 for row in range(count)])
    columns["time"] = times + sub_frames / fps - sub_frames[0] / fps
    return columns


def test_live_link_csv_reads_names_in_any_order_times_and_angles(tmp_path: Path):
    path = tmp_path / "take.csv"
    written = live_link_csv(path, fps=60, seconds=3.0)
    capture = read_face_capture(path)
    assert capture.frame_rate == 60
    assert capture.frame_count == 180 and capture.has_head and capture.has_eyes
    np.testing.assert_allclose(capture.times, written["time"], atol=1e-9)
    assert capture.expressions_present.all()
    for index, name in enumerate(ARKIT_EXPRESSIONS):
        pascal = name[0].upper() + name[1:]
        np.testing.assert_allclose(capture.weights[:, index], written[pascal], atol=1e-6)
    np.testing.assert_allclose(capture.head[:, 0], written["HeadYaw"] * math.pi, atol=1e-5)
    np.testing.assert_allclose(capture.head[:, 2], written["HeadRoll"] * math.pi, atol=1e-5)
    np.testing.assert_allclose(capture.left_eye[:, 1], written["LeftEyePitch"] * math.pi, atol=1e-5)
    np.testing.assert_allclose(capture.right_eye[:, 0], written["RightEyeYaw"] * math.pi, atol=1e-5)


@pytest.mark.parametrize("fps", [24, 25, 30, 50, 60])
def test_the_recordings_frame_rate_is_found_from_its_timecodes(tmp_path: Path, fps: int):
    path = tmp_path / f"take{fps}.csv"
    written = live_link_csv(path, fps=fps, seconds=2.5)
    capture = read_face_capture(path)
    assert capture.frame_rate == fps
    np.testing.assert_allclose(capture.times, written["time"], atol=1e-9)
    # Told the rate, the reader takes it; a rate the frame numbers exceed is refused.
    assert read_face_capture(path, frame_rate=fps).frame_rate == fps
    with pytest.raises(AvatarFileError, match="frames up to"):
        read_face_capture(path, frame_rate=fps / 2)


def test_resampling_to_the_scene_rate_interpolates_the_recording(tmp_path: Path):
    path = tmp_path / "take.csv"
    written = live_link_csv(path, fps=60, seconds=3.0)
    capture = read_face_capture(path)
    sampled = resample(capture, 24.0)
    expected_times = np.arange(int(np.floor(written["time"][-1] * 24 + 1e-6)) + 1) / 24
    np.testing.assert_allclose(sampled.times, expected_times)
    jaw = ARKIT_EXPRESSIONS.index("jawOpen")
    np.testing.assert_allclose(
        sampled.weights[:, jaw], np.interp(expected_times, written["time"], written["JawOpen"]), atol=1e-5
    )
    np.testing.assert_allclose(
        sampled.head[:, 1],
        np.interp(expected_times, written["time"], written["HeadPitch"]) * math.pi,
        atol=1e-5,
    )
    stronger = resample(capture, 24.0, strength=0.5, rotation_strength=2.0)
    np.testing.assert_allclose(stronger.weights, sampled.weights * 0.5, atol=1e-6)
    np.testing.assert_allclose(stronger.left_eye, sampled.left_eye * 2.0, atol=1e-6)


def test_smoothing_keeps_slow_motion_and_removes_jitter(tmp_path: Path):
    rng = np.random.default_rng(0)
    times = np.arange(300) / 60
    slow = 0.5 + 0.3 * np.sin(2 * np.pi * 0.3 * times)
    noisy = slow + 0.05 * rng.standard_normal(times.size)
    lines = [
        json.dumps({"time": float(t), "jawOpen": float(v), "mouthClose": 0.25})
        for t, v in zip(times, noisy, strict=True)
    ]
    path = tmp_path / "stream.jsonl"
    path.write_text("\n".join(lines))
    capture = read_face_capture(path)
    jaw, close = ARKIT_EXPRESSIONS.index("jawOpen"), ARKIT_EXPRESSIONS.index("mouthClose")
    smooth = resample(capture, 60.0, smoothing=0.05)
    inner = slice(20, -20)
    assert (
        np.abs(smooth.weights[inner, jaw] - slow[inner]).std()
        < 0.4 * np.abs(noisy[inner] - slow[inner]).std()
    )
    np.testing.assert_allclose(smooth.weights[:, close], 0.25, atol=1e-6)


def test_json_lines_carry_values_forward_and_accept_both_spellings(tmp_path: Path):
    path = tmp_path / "stream.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(
                    {"time": 10.0, "blendshapes": {"jawOpen": 0.2, "EyeBlinkLeft": 1.0}, "HeadYaw": 0.1}
                ),
                "",
                json.dumps({"t": 10.5, "weights": {"JawOpen": 0.6}}),
                json.dumps({"timestamp": 11.0, "eyeBlinkLeft": 0.0, "headPitch": -0.05, "extra": "ignored"}),
            ]
        )
    )
    capture = read_face_capture(path)
    np.testing.assert_allclose(capture.times, [0.0, 0.5, 1.0])
    jaw, blink = ARKIT_EXPRESSIONS.index("jawOpen"), ARKIT_EXPRESSIONS.index("eyeBlinkLeft")
    np.testing.assert_allclose(capture.weights[:, jaw], [0.2, 0.6, 0.6])
    np.testing.assert_allclose(capture.weights[:, blink], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(capture.head[:, 0], [0.1 * math.pi] * 3, atol=1e-6)
    np.testing.assert_allclose(capture.head[:, 1], [0, 0, -0.05 * math.pi], atol=1e-6)
    assert capture.present_names == ["eyeBlinkLeft", "jawOpen"]
    assert capture.has_head and not capture.has_eyes and capture.frame_rate is None


def test_mirrored_captures_swap_sides(tmp_path: Path):
    path = tmp_path / "take.csv"
    live_link_csv(path, fps=30, seconds=1.0)
    capture = read_face_capture(path)
    plain, mirrored = resample(capture, 30.0), resample(capture, 30.0, mirrored=True)
    for left, right in (
        ("eyeBlinkLeft", "eyeBlinkRight"),
        ("mouthLeft", "mouthRight"),
        ("jawLeft", "jawRight"),
    ):
        np.testing.assert_array_equal(
            mirrored.weights[:, ARKIT_EXPRESSIONS.index(left)],
            plain.weights[:, ARKIT_EXPRESSIONS.index(right)],
        )
    jaw = ARKIT_EXPRESSIONS.index("jawOpen")
    np.testing.assert_array_equal(mirrored.weights[:, jaw], plain.weights[:, jaw])
    np.testing.assert_allclose(mirrored.head, plain.head * [-1, 1, -1])
    np.testing.assert_allclose(mirrored.left_eye, plain.right_eye * [-1, 1, -1])


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nend_header\n\x00\x00\x80?", "binary"),
        ("\ufeffTime,JawOpen\n0,0.5\n".encode(), "no 'Timecode' column"),
        (b"Timecode,BlendShapeCount,Smile\n00:00:00:00.000,1,0.5\n", "none of its columns is an ARKit"),
        (b"Timecode,JawOpen\n", "no frames"),
        (b"Timecode,JawOpen\n00:00:00:01.000,0.5\nyesterday,0.4\n", "row 3: 'yesterday' is not a timecode"),
        (b"Timecode,JawOpen\n00:00:00:01.000,open\n", "row 2, column 'JawOpen': 'open' is not a number"),
        (b"Timecode,JawOpen\n00:00:00:01.000,nan\n", "not a finite number"),
        (b"Timecode,JawOpen,JawLeft\n00:00:00:01.000,0.5\n", "row 2 has 2 cells"),
        (b"Timecode,JawOpen\n00:00:01:00.000,0.5\n00:00:00:05.000,0.5\n", "go backwards"),
        (b"Timecode,JawOpen\n00:00:00:01.000,\xe9\xff\n", "not UTF-8"),
        (b'{"time": 0, "jawOpen": 0.1}\n{"time": 1, "jawOpen": ', "line 2 is not valid JSON"),
        (b'{"time": 0, "smile": 0.1}\n', "no line names an ARKit blendshape"),
        (b'{"jawOpen": 0.1}\n', "no 'time'"),
        (b'{"time": "noon", "jawOpen": 0.1}\n', "'time' must be a finite number"),
    ],
)
def test_files_that_are_not_face_captures_say_what_is_wrong(tmp_path: Path, content: bytes, words: str):
    path = tmp_path / "capture.csv"
    path.write_bytes(content)
    with pytest.raises(AvatarFileError, match=words) as raised:
        read_face_capture(path)
    assert "capture.csv" in str(raised.value)


def test_a_folder_or_a_missing_file_is_refused(tmp_path: Path):
    with pytest.raises(AvatarFileError, match="folder"):
        read_face_capture(tmp_path)
    with pytest.raises(AvatarFileError, match="missing.csv"):
        read_face_capture(tmp_path / "missing.csv")


def test_head_rotation_convention_and_bone_local_rotations():
    """Yaw turns the face (-Y) towards the subject's left (+X); pitch tips it down; roll tilts the
    top of the head towards the subject's right (-X). A bone turned by its local rotation ends up
    turned by the rotation in the avatar's axes, whatever its rest frame."""
    turn = np.radians(30)
    face, top = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0])
    yaw, pitch, roll = (quaternion_to_matrix(q) for q in yaw_pitch_roll_quaternions(np.diag([turn] * 3)))
    np.testing.assert_allclose(yaw @ face, [np.sin(turn), -np.cos(turn), 0], atol=1e-12)
    np.testing.assert_allclose(pitch @ face, [0, -np.cos(turn), -np.sin(turn)], atol=1e-12)
    np.testing.assert_allclose(roll @ top, [-np.sin(turn), 0, np.cos(turn)], atol=1e-12)
    combined = quaternion_to_matrix(yaw_pitch_roll_quaternions(np.array([[0.3, -0.2, 0.1]]))[0])
    separate = [quaternion_to_matrix(q) for q in yaw_pitch_roll_quaternions(np.diag([0.3, -0.2, 0.1]))]
    np.testing.assert_allclose(combined, separate[0] @ separate[1] @ separate[2], atol=1e-12)

    rng = np.random.default_rng(3)
    rest = quaternion_to_matrix(axis_angle_to_quaternion(rng.standard_normal(3)))
    world = yaw_pitch_roll_quaternions(rng.uniform(-0.5, 0.5, (5, 3)))
    local = bone_rotations(rest, world)
    for w, l in zip(world, local, strict=True):  # noqa: E741
        np.testing.assert_allclose(rest @ quaternion_to_matrix(l), quaternion_to_matrix(w) @ rest, atol=1e-12)
    assert (np.einsum("tc,tc->t", local[1:], local[:-1]) > 0).all()
