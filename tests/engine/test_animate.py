"""`lca-avatar animate` and motion onto avatars: SMPL-X / AMASS onto Anny and SMPL-X rigs, BVH to .mp4.

The AMASS motion is made here from known SMPL-X rotations on an SMPL-X skeleton standing at the
avatar's own joints (T-posed), and the expected joint positions come from SMPL-X's forward
kinematics written in `motion_builders.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))  # the shared motion builders
from motion_builders import (  # noqa: E402
    HUMANIK_NAMES,
    SMPLX_NAMES,
    amass_motion,
    bvh_motion,
    bvh_text,
    skeleton_at_rig,
    smplx_at_anny,
    smplx_joint_positions,
    smplx_rest_at_rig,
)

from lca_blender.cli import main  # noqa: E402
from lca_blender.formats.amass import read_amass  # noqa: E402
from lca_blender.formats.lca import read_avatar  # noqa: E402
from lca_blender.formats.motion import clip_from_amass  # noqa: E402
from lca_blender.maths.deform import forward_kinematics  # noqa: E402
from lca_blender.progress import Cancelled, Progress  # noqa: E402

EXIT_OK, EXIT_BAD_INPUT = 0, 2
FRAMES = 30


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("animate") / "sample.lca"
    assert main(["--progress", "none", "new", "-o", str(path), "--gaussians", "3000"]) == EXIT_OK
    return path


def _amass_file(path: Path, axis_angles: np.ndarray, trans: np.ndarray, frame_rate: float = 30.0) -> Path:
    np.savez(
        path,
        poses=axis_angles.reshape(len(axis_angles), -1),
        trans=trans,
        mocap_frame_rate=np.array(frame_rate),
        betas=np.zeros(16),
        gender=np.array("neutral"),
    )
    return path


def _joint_errors(rig, clip, expected: np.ndarray, joints: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per frame and joint, |rig joint - source joint| after aligning the roots (cm-scale numbers
    in metres), and the root's path error: how far the rig's root moved unlike the source's."""
    errors, root_errors = [], []
    for frame in range(clip.frame_count):
        posed = forward_kinematics(rig, clip.pose(frame)).world[:, :3, 3]
        for source, target in joints.items():
            errors.append(
                np.linalg.norm((posed[target] - posed[0]) - (expected[frame, source] - expected[frame, 0]))
            )
        root_errors.append(posed[0] - expected[frame, 0])
    root_errors = np.array(root_errors)
    return np.array(errors), np.linalg.norm(root_errors - root_errors[0], axis=1)


def test_amass_motion_drives_an_anny_avatar_to_the_smplx_joints(sample: Path, tmp_path: Path, capsys):
    rig = read_avatar(sample).rig
    rest_joints = smplx_rest_at_rig(rig)
    axis_angles, trans = amass_motion(FRAMES, seed=4, rest_joints=rest_joints)
    motion = read_amass(_amass_file(tmp_path / "take.npz", axis_angles, trans))
    expected = smplx_joint_positions(rest_joints, axis_angles, trans)
    joints = {
        index: rig.joint_index(smplx_at_anny(name))
        for index, name in enumerate(SMPLX_NAMES)
        if smplx_at_anny(name)
    }
    fingers = [source for source in joints if "_" in SMPLX_NAMES[source] and SMPLX_NAMES[source][-1] in "123"]

    clip = clip_from_amass(rig, motion, rest_joints, sole_height=float(rig.vertices[:, 2].min()))
    errors, root_path = _joint_errors(rig, clip, expected, joints)
    per_joint = errors.reshape(FRAMES, len(joints))
    finger_errors = per_joint[:, [list(joints).index(source) for source in fingers]]
    generic = clip_from_amass(rig, motion)  # without the subject's skeleton: the generic one
    generic_errors, _ = _joint_errors(rig, generic, expected, joints)
    with capsys.disabled():
        print(
            f"\nAMASS -> Anny over {FRAMES} frames (cm): median {100 * np.median(errors):.4f}, max "
            f"{100 * errors.max():.4f}, fingers median {100 * np.median(finger_errors):.4f}, root path max "
            f"{100 * root_path.max():.4f}; with the generic SMPL-X skeleton: median "
            f"{100 * np.median(generic_errors):.2f}, "
            f"90th percentile {100 * np.percentile(generic_errors, 90):.2f}"
        )
    assert np.median(errors) <= 0.03
    assert np.median(finger_errors) <= 0.03
    assert root_path.max() <= 0.01
    # The jaw's opening shows as the ARKit jawOpen expression (Anny has no jaw bone).
    jaw_open = clip.expression_weights[:, rig.expression_names.index("jawOpen")]
    assert jaw_open.max() > 0.2 and np.all((jaw_open >= 0) & (jaw_open <= 1))


def test_amass_motion_drives_an_smplx_avatar_exactly(tmp_path: Path):
    from test_smplx_body import synthetic_smplx_arrays

    from lca_blender.bodies.smplx_body import smplx_rig

    model = tmp_path / "SMPLX_TEST.npz"
    np.savez(model, **synthetic_smplx_arrays())
    rig = smplx_rig(model, tmp_path / "cache")
    rest_joints = rig.bone_heads.astype(np.float64) @ np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    axis_angles, trans = amass_motion(FRAMES, seed=8, rest_joints=rest_joints)
    motion = read_amass(_amass_file(tmp_path / "take.npz", axis_angles, trans))
    clip = clip_from_amass(rig, motion)  # an SMPL-X rig is its own source skeleton
    expected = smplx_joint_positions(rest_joints, axis_angles, trans)
    joints = {index: index for index, name in enumerate(SMPLX_NAMES) if name != "jaw"}
    errors, root_path = _joint_errors(rig, clip, expected, joints)
    assert errors.max() < 1e-4 and root_path.max() < 1e-4


def _walk_bvh(rig, path: Path, seconds: float = 2.0, fps: int = 30) -> Path:
    naming = {name: ours for name, ours in HUMANIK_NAMES.items() if ours in rig.joint_names}
    skeleton = skeleton_at_rig(rig, naming)
    skeleton.t_pose()
    frames = int(seconds * fps)
    angles, hips = bvh_motion(skeleton, frames, seed=11, amplitude_deg=25.0, walk_m=(0.0, -0.5))
    # Swing the arms down from the T-pose and back, so a viewer sees them move.
    swing = 60.0 + 20.0 * np.sin(np.linspace(0, 4 * np.pi, frames))
    angles["LeftArm"][:, 0] += -swing
    angles["RightArm"][:, 0] += swing
    path.write_text(bvh_text(skeleton, angles, hips, 100.0, frame_time=1 / fps))
    return path


def test_animate_renders_a_bvh_to_an_mp4(sample: Path, tmp_path: Path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    rig = read_avatar(sample).rig
    bvh = _walk_bvh(rig, tmp_path / "walk.bvh")
    output = tmp_path / "walk.mp4"
    arguments = ["--progress", "none", "animate", str(sample), "--bvh", str(bvh), "-o", str(output)]
    assert main([*arguments, "--size", "96x128", "--fps", "10"]) == EXIT_OK
    reader = imageio_ffmpeg.read_frames(str(output))
    meta = next(reader)
    frames = [np.frombuffer(frame, np.uint8).reshape(128, 96, 3) for frame in reader]
    assert tuple(meta["size"]) == (96, 128) and meta["fps"] == pytest.approx(10.0)
    assert len(frames) == 20  # 60 frames at 30 fps span 59/30 s: 20 frames at 10 fps
    first, last = frames[0].astype(float), frames[-1].astype(float)
    assert np.abs(first - last).mean() > 2.0  # the body moved
    background = np.array([0.15 * 255] * 3)
    for frame in (first, last):
        body = np.abs(frame - background).sum(-1) > 40
        assert body.mean() > 0.05  # the avatar is in the picture
        assert not body[:, :2].any() and not body[:, -2:].any()  # framed over the whole walk
    assert not list(tmp_path.glob("*.partial*"))


def test_animate_writes_frames_of_a_face_capture_and_a_slice_of_amass(sample: Path, tmp_path: Path):
    capture = tmp_path / "face.csv"
    rows = ["Timecode,BlendShapeCount,JawOpen,HeadYaw"]
    rows += [f"10:00:00:{frame:02d}.000,61,{frame / 29:.4f},{0.1 * frame / 29:.4f}" for frame in range(30)]
    capture.write_text("\n".join(rows) + "\n")
    frames = tmp_path / "face_frames"
    common = ["--progress", "none", "animate", str(sample)]
    assert (
        main([*common, "--face", str(capture), "-o", str(frames), "--size", "32", "--frames", "0:2"])
        == EXIT_OK
    )
    assert sorted(path.name for path in frames.iterdir()) == [
        "frame_0000.png",
        "frame_0001.png",
        "frame_0002.png",
    ]

    rig = read_avatar(sample).rig
    axis_angles, trans = amass_motion(12, seed=1, rest_joints=smplx_rest_at_rig(rig))
    npz = _amass_file(tmp_path / "dance.npz", axis_angles, trans, frame_rate=60.0)
    out = tmp_path / "dance"
    assert (
        main([*common, "--amass", str(npz), "-o", str(out), "--size", "32", "--frames", "4:", "--fps", "30"])
        == 0
    )
    assert len(list(out.iterdir())) == 4  # frames 4..11 at 60 fps: 7/60 s, at 30 fps 4 frames


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--bvh", "{truncated}", "-o", "{out}.mp4"], "ends after 1 of its 3 frames"),
        (["--bvh", "{truncated}", "-o", "{out}.gif"], "written as .mp4 or as a folder"),
        (["--animation", "{missing}", "-o", "{busy}"], "already holds files"),
        (["--face", "{missing}", "-o", "{out}.mp4", "--bone-map", "mixamo"], "--bone-map names"),
        (["--animation", "{animation}", "-o", "{out}.mp4", "--frames", "2-3"], "--frames takes A:B"),
        (
            ["--animation", "{animation}", "-o", "{out}.mp4", "--frames", "1:5"],
            "outside the motion's 2 frames",
        ),
    ],
)
def test_animate_refuses_what_it_cannot_use(sample, tmp_path, capsys, arguments, message):
    truncated = tmp_path / "short.bvh"
    truncated.write_text(
        "HIERARCHY\nROOT Hips\n{\n OFFSET 0 90 0\n CHANNELS 6 Xposition Yposition Zposition Zrotation "
        "Xrotation Yrotation\n End Site\n {\n  OFFSET 0 10 0\n }\n}\nMOTION\nFrames: 3\nFrame Time: 0.04\n"
        "0.0000 90.0000 0.0000 0.0000 0.0000 0.0000\n"
    )
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    animation = tmp_path / "two.json"
    animation.write_text('{"fps": 10, "frames": ["rest", "wave"]}')
    names = {
        "truncated": truncated,
        "out": tmp_path / "out",
        "missing": tmp_path / "none.json",
        "busy": busy,
        "animation": animation,
    }
    filled = [argument.format(**names) for argument in arguments]
    assert main(["--progress", "none", "animate", str(sample), *filled]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert (busy / "keep.txt").read_text() == "mine"
    assert not list(tmp_path.glob("out*"))


class _CancelAfterFirstFrame(Progress):
    def update(self, fraction: float, message: str = "") -> None:
        self.cancel_requested = self.stage_name == "render"
        super().update(fraction, message)


@pytest.mark.parametrize("name", ["clip.mp4", "clip_frames"])
def test_a_cancelled_animation_leaves_nothing(sample: Path, tmp_path: Path, name: str):
    from lca_blender.formats.animation import clip_from_spec
    from lca_blender.render.animate import render_animation

    avatar = read_avatar(sample)
    clip = clip_from_spec(avatar.rig, {"fps": 10, "frames": ["rest", "wave", "t-pose"]})
    with pytest.raises(Cancelled):
        render_animation(avatar, clip, tmp_path / name, size=(32, 32), progress=_CancelAfterFirstFrame())
    assert sorted(path.name for path in tmp_path.iterdir()) == []
