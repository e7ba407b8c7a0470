"""`lca-avatar export --gltf`: rigged avatars, posed splats and animations as .glb, and its input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lca_blender.cli import main
from lca_blender.formats.gltf import Y_UP, read_glb, read_splats_glb
from lca_blender.formats.lca import read_avatar
from lca_blender.formats.poses import load_pose
from lca_blender.maths.deform import pose_avatar

EXIT_OK, EXIT_BAD_INPUT = 0, 2


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gltf") / "sample.lca"
    assert main(["--progress", "none", "new", "-o", str(path), "--gaussians", "3000"]) == EXIT_OK
    return path


def test_rigged_export_with_a_pose_and_an_animation(sample: Path, tmp_path: Path, capsys):
    animation = tmp_path / "wave.json"
    frames = [{"joints": {"upperarm01.R": {"euler_xyz_deg": [0, 0, -angle]}}} for angle in (0, 20, 40, 60)]
    animation.write_text(json.dumps({"fps": 8, "name": "wave", "frames": frames}))
    output = tmp_path / "avatar.glb"
    arguments = [
        "export",
        str(sample),
        "--gltf",
        str(output),
        "--pose",
        "wave",
        "--expression",
        "jawOpen=0.5",
    ]
    assert main(["--progress", "none", *arguments, "--animation", str(animation)]) == EXIT_OK
    assert "rigged avatar, 4-frame animation" in capsys.readouterr().out

    avatar = read_avatar(sample)
    document = read_glb(output)
    gltf = document.json
    assert [gltf["nodes"][joint]["name"] for joint in gltf["skins"][0]["joints"]] == avatar.rig.joint_names
    (clip,) = gltf["animations"]
    assert clip["name"] == "wave"
    times = document.accessor(clip["samplers"][0]["input"])
    np.testing.assert_allclose(times, np.arange(4) / 8)
    for mesh in gltf["meshes"]:
        weights = dict(zip(mesh["extras"]["targetNames"], mesh["weights"], strict=True))
        # The wave preset smiles; --expression adds the open jaw.
        nonzero = {name: weight for name, weight in weights.items() if weight}
        assert nonzero == pytest.approx({"jawOpen": 0.5, "mouthSmileLeft": 0.8, "mouthSmileRight": 0.8})
    # A skinned node's splats come back at the bind pose: the avatar at rest.
    rest = read_splats_glb(output)
    np.testing.assert_allclose(rest.means, pose_avatar(avatar).means, atol=1e-5)


def test_splats_only_export_is_the_posed_avatar(sample: Path, tmp_path: Path):
    output = tmp_path / "posed.glb"
    assert (
        main(
            [
                "--progress",
                "none",
                "export",
                str(sample),
                "--gltf",
                str(output),
                "--splats-only",
                "--pose",
                "wave",
            ]
        )
        == 0
    )
    avatar = read_avatar(sample)
    pose, expressions = load_pose(avatar.rig, "wave")
    expected = pose_avatar(avatar, pose, expressions)
    written = read_splats_glb(output)
    np.testing.assert_allclose(written.means, expected.means, atol=1e-5)
    np.testing.assert_allclose(written.scales, expected.scales, rtol=1e-6)
    document = read_glb(output)
    positions = document.accessor(document.json["meshes"][0]["primitives"][0]["attributes"]["POSITION"])
    np.testing.assert_allclose(positions, expected.means @ Y_UP.T.astype(np.float32), atol=1e-5)
    assert "skins" not in document.json


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--ply", "{tmp}/out.ply", "--animation", "{tmp}/a.json"], "go with --gltf"),
        (["--ply", "{tmp}/out.ply", "--splats-only"], "go with --gltf"),
        (["--gltf", "{tmp}/out.gltf"], "binary .glb"),
        (
            ["--gltf", "{tmp}/out.glb", "--splats-only", "--animation", "{tmp}/a.json"],
            "cannot hold --animation",
        ),
        (
            ["--gltf", "{tmp}/out.glb", "--animation", "{tmp}/a.json"],
            "Frame 1: The rig has no joint named 'tail'",
        ),
        (["--gltf", "{tmp}/out.glb", "--animation", "{tmp}/missing.json"], "does not exist"),
        (["--gltf", "{tmp}/nowhere/out.glb"], "nowhere"),
    ],
)
def test_export_gltf_input_errors(sample: Path, tmp_path: Path, capsys, options: list[str], words: str):
    (tmp_path / "a.json").write_text(
        json.dumps({"fps": 24, "frames": ["rest", {"joints": {"tail": {"euler_xyz_deg": [1, 0, 0]}}}]})
    )
    arguments = [option.replace("{tmp}", str(tmp_path)) for option in options]
    assert main(["--progress", "none", "export", str(sample), *arguments]) == EXIT_BAD_INPUT
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out.glb").exists()
