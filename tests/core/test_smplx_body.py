"""SMPL-X -> Rig: checked against the `smplx` package on a small synthetic SMPL-X model file."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lca_blender.avatar import Pose
from lca_blender.bodies import smplx_body
from lca_blender.bodies.smplx_body import (
    SMPLX_JOINT_NAMES,
    SMPLX_TO_BLENDER,
    convert_smplx_model,
    smplx_pose_to_pose,
    smplx_rig,
)
from lca_blender.errors import BodyModelError, PoseError
from lca_blender.maths.deform import forward_kinematics, pose_vertices

SMPLX_PARENTS = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)  # fmt: skip

# A crude T-pose in SMPL-X's frame (metres, Y up, facing +Z, the body's left on +X); the right
# side mirrors the left.
_CENTRE_JOINTS = {
    "pelvis": (0.0, 0.0, 0.0),
    "spine1": (0.0, 0.11, -0.02),
    "spine2": (0.0, 0.24, 0.0),
    "spine3": (0.0, 0.30, 0.02),
    "neck": (0.0, 0.51, -0.02),
    "head": (0.0, 0.60, 0.01),
    "jaw": (0.0, 0.58, 0.05),
}
_LEFT_JOINTS = {
    "hip": (0.06, -0.09, -0.01),
    "knee": (0.11, -0.46, 0.0),
    "ankle": (0.09, -0.86, -0.04),
    "foot": (0.12, -0.92, 0.08),
    "collar": (0.07, 0.42, 0.0),
    "shoulder": (0.17, 0.45, -0.02),
    "elbow": (0.43, 0.43, -0.04),
    "wrist": (0.68, 0.44, -0.04),
    "eye_smplhf": (0.03, 0.66, 0.09),
    "index1": (0.77, 0.43, 0.03), "index2": (0.81, 0.43, 0.03), "index3": (0.84, 0.43, 0.03),
    "middle1": (0.78, 0.43, 0.0), "middle2": (0.82, 0.43, 0.0), "middle3": (0.85, 0.43, 0.0),
    "pinky1": (0.75, 0.43, -0.05), "pinky2": (0.78, 0.43, -0.05), "pinky3": (0.80, 0.43, -0.05),
    "ring1": (0.77, 0.43, -0.025), "ring2": (0.80, 0.43, -0.025), "ring3": (0.83, 0.43, -0.025),
    "thumb1": (0.71, 0.42, 0.03), "thumb2": (0.73, 0.41, 0.06), "thumb3": (0.75, 0.40, 0.08),
}  # fmt: skip
VERTICES_PER_JOINT = 6
REGRESSED_PER_JOINT = 4  # the rest of each cluster is "face": moved by expressions, not regressed
INFLUENCES_PER_VERTEX = 4


def _joint_positions() -> np.ndarray:
    positions = []
    for name in SMPLX_JOINT_NAMES:
        side, _, part = name.partition("_")
        if name in _CENTRE_JOINTS:
            positions.append(_CENTRE_JOINTS[name])
        else:
            x, y, z = _LEFT_JOINTS[part]
            positions.append((x if side == "left" else -x, y, z))
    return np.array(positions)


def synthetic_smplx_arrays(shape_components: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays of a small SMPL-X .npz, with every key the `smplx` package reads.

    55 joints, a cluster of vertices around each joint, random skin weights of a few joints per
    vertex, random shape and expression blendshapes, and zero pose correctives (the Rig has none).
    `shape_components` is 20 (10 + 10, the v1.0 layout) or 400 (300 + 100).

    SMPL-X regresses its joints from the mesh with the expression applied, so an expression that
    moves regressed vertices moves joints, which a Rig (fixed joints, like Blender shape keys)
    cannot follow. Here, as on the real face, the expression blendshapes move only vertices the
    joint regressor does not use.
    """
    rng = np.random.default_rng(seed)
    joint_count = len(SMPLX_JOINT_NAMES)
    joints = _joint_positions() + rng.normal(0.0, 0.003, (joint_count, 3))
    vertex_count = joint_count * VERTICES_PER_JOINT
    owner = np.repeat(np.arange(joint_count), VERTICES_PER_JOINT)
    template = joints[owner] + rng.uniform(-0.015, 0.015, (vertex_count, 3))

    regressed = np.arange(vertex_count) % VERTICES_PER_JOINT < REGRESSED_PER_JOINT
    regressor = np.zeros((joint_count, vertex_count))
    regressor[owner, np.arange(vertex_count)] = rng.uniform(0.5, 1.0, vertex_count) * regressed
    regressor /= regressor.sum(axis=1, keepdims=True)

    shapedirs = rng.normal(0.0, 0.004, (vertex_count, 3, shape_components))
    expression_start = 10 if shape_components < 400 else 300
    shapedirs[regressed, :, expression_start:] = 0.0

    weights = np.zeros((vertex_count, joint_count))
    for vertex, joint in enumerate(owner):
        others = rng.choice(joint_count, INFLUENCES_PER_VERTEX - 1, replace=False)
        weights[vertex, others] = rng.uniform(0.0, 0.5, others.size)
        weights[vertex, joint] = rng.uniform(1.0, 2.0)
    weights /= weights.sum(axis=1, keepdims=True)

    kintree = np.stack([np.array(SMPLX_PARENTS), np.arange(joint_count)])
    kintree[0, 0] = 2**32 - 1  # as in the official files: the root's parent as an unsigned -1
    clusters = np.arange(vertex_count).reshape(joint_count, VERTICES_PER_JOINT)
    triangles = np.concatenate([clusters[:, [0, 1, 2]], clusters[:, [3, 4, 5]]]).astype(np.uint32)
    landmark_count = 51
    return {
        "v_template": template,
        "shapedirs": shapedirs,
        "posedirs": np.zeros((vertex_count, 3, 9 * (joint_count - 1))),
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": kintree,
        "f": triangles,
        "hands_componentsl": np.eye(45),
        "hands_componentsr": np.eye(45),
        "hands_meanl": rng.normal(0.0, 0.1, 45),
        "hands_meanr": rng.normal(0.0, 0.1, 45),
        "lmk_faces_idx": rng.integers(0, triangles.shape[0], landmark_count),
        "lmk_bary_coords": rng.dirichlet(np.ones(3), landmark_count),
        "dynamic_lmk_faces_idx": rng.integers(0, triangles.shape[0], (79, 17)),
        "dynamic_lmk_bary_coords": rng.dirichlet(np.ones(3), (79, 17)),
        # The official files also hold pickled dictionaries; the converter must never touch them.
        "joint2num": np.array({"pelvis": 0}, dtype=object),
    }


def write_model(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.fixture(params=[20, 400], ids=["10+10 components", "300+100 components"])
def model_file(request, tmp_path: Path) -> Path:
    return write_model(tmp_path / "SMPLX_NEUTRAL.npz", synthetic_smplx_arrays(request.param))


@pytest.fixture
def reference_model(model_file: Path, monkeypatch):
    """The `smplx` package's SMPLX on the synthetic file (pose correctives are zero in it)."""
    pytest.importorskip("torch")
    body_models = pytest.importorskip("smplx.body_models")

    # Extra keypoints are read at fixed indices of the real 10,475-vertex mesh; point them at
    # vertices the small model has (they do not affect the vertices compared here).
    small_ids = {key: index for index, key in enumerate(body_models.VERTEX_IDS["smplx"])}
    monkeypatch.setitem(body_models.VERTEX_IDS, "smplx", small_ids)
    return body_models.SMPLX(
        model_path=str(model_file),
        ext="npz",
        num_betas=10,
        num_expression_coeffs=10,
        use_pca=False,
        flat_hand_mean=True,
    )


def _to_blender(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ SMPLX_TO_BLENDER.T


def _run_reference(model, **parameters: np.ndarray):
    import torch

    tensors = {
        name: torch.tensor(np.asarray(value).reshape(1, -1), dtype=torch.float32)
        for name, value in parameters.items()
    }
    with torch.no_grad():
        return model(**tensors)


def test_posed_rig_reproduces_smplx(model_file: Path, reference_model, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    parameters = {
        "betas": rng.normal(0.0, 1.0, 10),
        "expression": rng.normal(0.0, 1.0, 10),
        "global_orient": rng.normal(0.0, 0.6, 3),
        "body_pose": rng.normal(0.0, 0.4, (21, 3)),
        "jaw_pose": rng.normal(0.0, 0.3, 3),
        "leye_pose": rng.normal(0.0, 0.3, 3),
        "reye_pose": rng.normal(0.0, 0.3, 3),
        "left_hand_pose": rng.normal(0.0, 0.4, (15, 3)),
        "right_hand_pose": rng.normal(0.0, 0.4, (15, 3)),
        "transl": rng.normal(0.0, 0.5, 3),
    }
    reference = _run_reference(reference_model, **parameters)

    rig = smplx_rig(model_file, tmp_path / "cache", betas=parameters["betas"])
    pose = smplx_pose_to_pose(
        rig,
        global_orient=parameters["global_orient"],
        body_pose=parameters["body_pose"],
        jaw_pose=parameters["jaw_pose"],
        left_hand_pose=parameters["left_hand_pose"].reshape(-1),
        right_hand_pose=parameters["right_hand_pose"],
        transl=parameters["transl"],
        leye_pose=parameters["leye_pose"],
        reye_pose=parameters["reye_pose"],
    )
    vertices = pose_vertices(rig, pose, parameters["expression"].astype(np.float32))
    # Two float32 chains of 55 joints on a body within 1 m: tens of ulps (6e-8) at most
    # (measured over 48 models and poses: 3.6e-7).
    np.testing.assert_allclose(vertices, _to_blender(reference.vertices[0]), rtol=0, atol=1e-5)
    posed_heads = forward_kinematics(rig, pose).world[:, :3, 3]
    np.testing.assert_allclose(
        posed_heads, _to_blender(reference.joints[0, : rig.joint_count]), rtol=0, atol=1e-5
    )


def test_rest_rig_is_the_shaped_template(model_file: Path, reference_model, tmp_path: Path) -> None:
    betas = np.random.default_rng(3).normal(0.0, 1.5, 10)
    reference = _run_reference(reference_model, betas=betas)

    rig = smplx_rig(model_file, tmp_path / "cache", betas=betas, expression_count=4)
    shaped = _to_blender(reference.v_shaped[0])
    # float32 vertices within 1 m: a few half-ulps of 6e-8 (measured over 48 shapes: 1.8e-7).
    np.testing.assert_allclose(rig.vertices, shaped, rtol=0, atol=1e-6)
    np.testing.assert_allclose(pose_vertices(rig, Pose.rest(rig.joint_count)), shaped, atol=1e-6)
    np.testing.assert_allclose(rig.bone_heads, _to_blender(reference.joints[0, : rig.joint_count]), atol=1e-6)
    assert rig.joint_names == list(SMPLX_JOINT_NAMES)
    assert rig.joint_parents.tolist() == list(SMPLX_PARENTS)
    assert rig.expression_names == [f"smplx_expression_{index:02d}" for index in range(4)]
    assert rig.body_model == "smplx"
    assert rig.body_parameters["betas"] == pytest.approx(betas.tolist())


def test_smplx_joint_names_match_the_package() -> None:
    joint_names = pytest.importorskip("smplx.joint_names")
    assert list(SMPLX_JOINT_NAMES) == joint_names.JOINT_NAMES[: len(SMPLX_JOINT_NAMES)]


def _break_pkl(arrays: dict, path: Path) -> Path:
    pickle_path = path.with_suffix(".pkl")
    pickle_path.write_bytes(b"\x80\x04\x95")
    return pickle_path


def _break_missing_key(arrays: dict, path: Path) -> Path:
    del arrays["weights"]
    return write_model(path, arrays)


def _break_shape(arrays: dict, path: Path) -> Path:
    arrays["weights"] = arrays["weights"][:, :54]
    return write_model(path, arrays)


def _break_nan(arrays: dict, path: Path) -> Path:
    arrays["v_template"][5, 1] = np.nan
    return write_model(path, arrays)


def _break_object_array(arrays: dict, path: Path) -> Path:
    arrays["J_regressor"] = np.array(list(arrays["J_regressor"]) + [None], dtype=object)
    return write_model(path, arrays)


def _break_joint_count(arrays: dict, path: Path) -> Path:
    arrays["J_regressor"] = arrays["J_regressor"][:52]
    return write_model(path, arrays)


def _break_shape_components(arrays: dict, path: Path) -> Path:
    arrays["shapedirs"] = arrays["shapedirs"][:, :, :12]
    return write_model(path, arrays)


def _break_kinematic_tree(arrays: dict, path: Path) -> Path:
    arrays["kintree_table"][0, 5] = 30
    return write_model(path, arrays)


def _break_archive(arrays: dict, path: Path) -> Path:
    path.write_bytes(b"this is not a zip archive")
    return path


def _break_missing_file(arrays: dict, path: Path) -> Path:
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_break_pkl, "Download the .npz version"),
        (_break_missing_key, "no 'weights' array"),
        (_break_shape, "'weights' must have shape"),
        (_break_nan, "'v_template' contains NaN"),
        (_break_object_array, "'J_regressor' holds Python objects"),
        (_break_joint_count, "52 joints"),
        (_break_shape_components, "'shapedirs' has 12 components"),
        (_break_kinematic_tree, "'kintree_table'"),
        (_break_archive, "not a readable"),
        (_break_missing_file, "does not exist"),
    ],
    ids=lambda value: getattr(value, "__name__", "")[len("_break_") :] or None,
)
def test_unusable_model_files_raise_body_model_error(damage, message: str, tmp_path: Path) -> None:
    path = damage(synthetic_smplx_arrays(), tmp_path / "SMPLX_NEUTRAL.npz")
    with pytest.raises(BodyModelError, match="SMPLX_NEUTRAL") as raised:
        smplx_rig(path, tmp_path / "cache")
    assert message in str(raised.value)
    assert not any((tmp_path / "cache").glob("*"))  # nothing converted, nothing partial


def test_conversion_is_cached_by_sha256(model_file: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    converted = convert_smplx_model(model_file, cache)
    stamp = converted.stat().st_mtime_ns

    def read_again(path):
        raise AssertionError("the model file was read again")

    monkeypatch.setattr(smplx_body, "_read_model_file", read_again)
    assert convert_smplx_model(model_file, cache) == converted
    assert converted.stat().st_mtime_ns == stamp
    rig = smplx_rig(model_file, cache)
    assert converted.stat().st_mtime_ns == stamp

    sha256 = hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert rig.body_parameters["source_sha256"] == sha256
    with np.load(converted, allow_pickle=False) as archive:
        metadata = json.loads(archive["metadata"].tobytes().decode("utf-8"))
        assert all(archive[key].dtype.kind in "fiu" for key in archive.files)  # no pickles
    assert metadata["source_sha256"] == sha256
    assert list(cache.iterdir()) == [converted]  # nothing partial left behind


def test_changed_or_damaged_conversion_is_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    model_file = write_model(tmp_path / "SMPLX_MALE.npz", synthetic_smplx_arrays(seed=1))
    converted = convert_smplx_model(model_file, cache)
    converted.write_bytes(b"truncated")
    assert convert_smplx_model(model_file, cache) == converted
    assert smplx_rig(model_file, cache).vertex_count == len(SMPLX_JOINT_NAMES) * VERTICES_PER_JOINT

    write_model(model_file, synthetic_smplx_arrays(seed=2))
    other = convert_smplx_model(model_file, cache)
    assert other != converted
    with np.load(other, allow_pickle=False) as archive:
        metadata = json.loads(archive["metadata"].tobytes().decode("utf-8"))
    assert metadata["source_sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()


def test_rest_frames_follow_the_bones(model_file: Path, tmp_path: Path) -> None:
    rig = smplx_rig(model_file, tmp_path / "cache", betas=np.full(10, 0.5))
    rotations = rig.rest_transforms[:, :3, :3].astype(np.float64)
    bones = rig.bone_tails - rig.bone_heads
    lengths = np.linalg.norm(bones, axis=1)
    # float32 heads and tails ~1 m out, bones ~3 cm long: directions good to ~1e-5.
    np.testing.assert_allclose(rotations[:, :, 1], bones / lengths[:, None], atol=1e-5)
    orthonormality = rotations.transpose(0, 2, 1) @ rotations
    np.testing.assert_allclose(orthonormality, np.broadcast_to(np.eye(3), orthonormality.shape), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-6)
    np.testing.assert_array_equal(rig.rest_transforms[:, 3], [[0, 0, 0, 1]] * rig.joint_count)
    assert lengths.min() >= 0.01 - 1e-6

    def y_axis(name: str) -> np.ndarray:
        return rotations[rig.joint_index(name), :, 1]

    def x_axis(name: str) -> np.ndarray:
        return rotations[rig.joint_index(name), :, 0]

    def direction(start: str, end: str) -> np.ndarray:
        step = rig.bone_heads[rig.joint_index(end)] - rig.bone_heads[rig.joint_index(start)]
        return step / np.linalg.norm(step)

    # The directions come from float32 heads as well: 2 x 6e-8 over the 3 cm between finger joints
    # is 4e-6 (measured over 48 models and shapes: 1.0e-6).
    np.testing.assert_allclose(y_axis("pelvis"), direction("pelvis", "spine1"), atol=1e-5)
    np.testing.assert_allclose(y_axis("left_wrist"), direction("left_wrist", "left_middle1"), atol=1e-5)
    np.testing.assert_allclose(y_axis("left_index3"), direction("left_index2", "left_index3"), atol=1e-5)
    np.testing.assert_allclose(y_axis("head"), direction("neck", "head"), atol=1e-5)
    # Z up, facing -Y: the head is above the pelvis, the eyes in front of the head.
    assert y_axis("head")[2] > 0.9 and y_axis("left_knee")[2] < -0.9
    assert rig.bone_heads[rig.joint_index("left_eye_smplhf"), 1] < rig.bone_heads[15, 1]
    assert rig.bone_heads[rig.joint_index("left_hip"), 0] > 0
    # Rolls: X as close to world X as it can be; to +Y (left) or -Y (right) for bones along X.
    assert x_axis("left_knee")[0] > 0.95 and x_axis("spine2")[0] > 0.95
    assert x_axis("left_index2")[1] > 0.95 and x_axis("right_index2")[1] < -0.95
    assert x_axis("left_elbow")[1] > 0.95 and x_axis("right_elbow")[1] < -0.95
    y_axes = rotations[:, :, 1]
    along_x = np.abs(y_axes[:, 0]) > np.cos(np.pi / 4)
    wished = np.where(along_x[:, None], np.sign(y_axes[:, :1]) * [0.0, 1.0, 0.0], [1.0, 0.0, 0.0])
    closest = wished - np.sum(wished * y_axes, axis=1, keepdims=True) * y_axes
    closest /= np.linalg.norm(closest, axis=1, keepdims=True)
    np.testing.assert_allclose(rotations[:, :, 0], closest, atol=1e-5)


def test_pose_conversion_of_a_single_turn(model_file: Path, tmp_path: Path) -> None:
    rig = smplx_rig(model_file, tmp_path / "cache")
    # A quarter turn about SMPL-X's up axis (Y) is a quarter turn about ours (Z).
    pose = smplx_pose_to_pose(rig, global_orient=[0.0, np.pi / 2, 0.0], body_pose=np.zeros(63))
    world = forward_kinematics(rig, pose).skinning[0]
    np.testing.assert_allclose(world[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)
    rest = smplx_pose_to_pose(rig, np.zeros(3), np.zeros((21, 3)), transl=[0.0, 1.0, 2.0])
    np.testing.assert_allclose(rest.rotations, Pose.rest(rig.joint_count).rotations)
    np.testing.assert_allclose(rest.translation, [0.0, -2.0, 1.0])


def test_bad_parameters_raise(model_file: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(BodyModelError, match="betas"):
        smplx_rig(model_file, cache, betas=np.zeros(301))
    with pytest.raises(BodyModelError, match="expression components"):
        smplx_rig(model_file, cache, expression_count=101)
    rig = smplx_rig(model_file, cache)
    with pytest.raises(PoseError, match="body_pose"):
        smplx_pose_to_pose(rig, np.zeros(3), np.zeros(60))
    with pytest.raises(PoseError, match="left_hand_pose"):
        smplx_pose_to_pose(rig, np.zeros(3), np.zeros(63), left_hand_pose=np.full(45, np.nan))


def test_skin_weights_keep_the_largest_influences() -> None:
    weights = np.zeros((2, 55), np.float32)
    weights[0, :10] = np.arange(1, 11)
    weights[1, 7] = 1.0
    indices, kept = smplx_body._sparse_skin_weights(weights)
    assert indices.shape == (2, smplx_body.MAX_INFLUENCES)
    assert indices[0].tolist() == [9, 8, 7, 6, 5, 4, 3, 2]
    np.testing.assert_allclose(kept[0], np.arange(10, 2, -1) / 52, rtol=1e-6)
    assert indices[1, 0] == 7 and kept[1].tolist() == [1.0] + [0.0] * 7


def test_module_needs_neither_torch_nor_smplx() -> None:
    code = (
        "import sys, lca_blender.bodies.smplx_body; "
        "assert not {'torch', 'smplx'} & set(sys.modules), sorted(sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_cli_makes_a_sample_avatar_on_smplx(tmp_path: Path, monkeypatch, capsys) -> None:
    """`lca-avatar new --smplx MODEL.npz --betas ...` builds the sample on the converted body."""
    from lca_blender.cli import main
    from lca_blender.formats.lca import read_avatar

    monkeypatch.setenv("LCA_CACHE_DIR", str(tmp_path / "cache"))
    model = write_model(tmp_path / "SMPLX_NEUTRAL.npz", synthetic_smplx_arrays())
    output = tmp_path / "smplx.lca"
    arguments = [
        "new",
        "-o",
        str(output),
        "--gaussians",
        "3000",
        "--smplx",
        str(model),
        "--betas",
        "0.5,-0.2",
    ]
    status = main(["--progress", "none", *arguments])
    assert status == 0
    avatar = read_avatar(output)
    assert avatar.rig.body_model == "smplx" and avatar.rig.joint_names == list(SMPLX_JOINT_NAMES)
    assert avatar.rig.body_parameters["betas"][:2] == pytest.approx([0.5, -0.2])
    assert avatar.gaussian_count == 3000
    # Anny's parameters do not apply to SMPL-X and say so.
    capsys.readouterr()
    assert (
        main(["new", "-o", str(tmp_path / "x.lca"), "--smplx", str(model), "--phenotype", "height=0.2"]) == 2
    )
    assert "--betas" in capsys.readouterr().err  # and says what to use instead
    assert not (tmp_path / "x.lca").exists()
