"""The harness shows linear renders as Blender does: its AgX table against Blender's own picture of a
Cycles render of a flat, evenly lit plane of colour patches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lca_blender.evaluate.display import DisplayTransform, display_table, lut_inputs
from lca_blender.evaluate.subjects import CyclesRenderer
from lca_blender.maths.cameras import look_at
from lca_blender.maths.colour import linear_to_srgb, srgb_to_linear
from lca_blender.maths.lights import AmbientSH, Lighting, lighting_to_json

REPO_ROOT = Path(__file__).resolve().parents[2]
CYCLES = CyclesRenderer(
    python=REPO_ROOT / ".venv-blender" / "bin" / "python",
    script=REPO_ROOT / "bench" / "eval_subject_blender.py",
)
# Linear albedos of the patches, left to right; the world's radiance is WORLD, so a patch renders
# at albedo x WORLD (a plane under a uniform sky sees all of it): from deep shadow to 2x white.
ALBEDOS = np.array(
    [
        [0.005] * 3,
        [0.03] * 3,
        [0.18] * 3,
        [0.5] * 3,
        [1.0] * 3,
        [0.8, 0.05, 0.02],
        [0.03, 0.5, 0.06],
        [0.02, 0.05, 0.7],
    ]
)
WORLD = 2.0
WIDTH, HEIGHT = 128, 32


def test_identity_table_encodes_like_srgb():
    """A table holding the sRGB encoding of its own grid interpolates it closely everywhere."""
    table = display_table(linear_to_srgb(np.clip(lut_inputs(), 0, 1)))
    colours = np.random.default_rng(0).uniform(0.0, 1.0, (2000, 3)) ** 2.2
    encoded = DisplayTransform("test", table).encode(colours)
    assert np.abs(encoded - linear_to_srgb(colours)).max() < 1.5 / 255


def _plane_scene(work: Path) -> Path:
    """A 2 m x 0.5 m plane of the patches facing a camera 3 m away, lit by the world alone, AgX."""
    vertices = np.array([[-1, 0, -0.25], [1, 0, -0.25], [1, 0, 0.25], [-1, 0, 0.25]], np.float32)
    triangles = np.array([[0, 1, 2], [0, 2, 3]], np.int32)  # facing -Y, the camera
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)[triangles]
    texture = np.repeat(linear_to_srgb(ALBEDOS)[None], 8, axis=0).repeat(8, axis=1)
    Image.fromarray((texture * 255 + 0.5).astype(np.uint8)).save(work / "texture.png")
    for name, array in (
        ("plane", vertices),
        ("triangles", triangles),
        ("uvs", uvs),
        ("inputs", lut_inputs()),
    ):
        np.save(work / f"{name}.npy", array, allow_pickle=False)
    focal = WIDTH / 2 / (1.0 / 3.0)  # the plane spans the frame exactly
    world = Lighting(ambient=AmbientSH.uniform((1.0, 1.0, 1.0), WORLD), lights=())
    render = {
        "name": "plane",
        "mesh": "capture",
        "lighting": "capture",
        "width": WIDTH,
        "height": HEIGHT,
        "K": [[focal, 0, WIDTH / 2], [0, focal, HEIGHT / 2], [0, 0, 1]],
        "viewmat": look_at(np.array([0.0, -3.0, 0.0]), np.zeros(3)).tolist(),
        "output": "plane_linear.npy",
        "display_png": "plane_blender.png",
    }
    scene = {
        "seed": 0,
        "samples": 16,
        "texture": "texture.png",
        "meshes": {"capture": "plane.npy"},
        "triangles": "triangles.npy",
        "corner_uvs": "uvs.npy",
        "lighting": {"capture": lighting_to_json(world)},
        "renders": [render],
        "view_transform": "AgX",
        "display": {"inputs": "inputs.npy", "output": "values.npy"},
    }
    (work / "scene.json").write_text(json.dumps(scene))
    return work / "scene.json"


def _patch_means(image: np.ndarray) -> np.ndarray:
    """[8, C] mean of the middle 6x6 pixels of each patch (16 px wide) on the middle rows."""
    centres = 8 + 16 * np.arange(len(ALBEDOS))
    return np.stack(
        [image[HEIGHT // 2 - 3 : HEIGHT // 2 + 3, c - 3 : c + 3].mean(axis=(0, 1)) for c in centres]
    )


def test_agx_table_matches_blenders_own_picture_of_a_cycles_render(tmp_path):
    if not CYCLES.python.is_file():
        pytest.skip("needs .venv-blender (bpy) to render")
    scene = _plane_scene(tmp_path)
    CYCLES.render(scene)
    linear = np.load(tmp_path / "plane_linear.npy", allow_pickle=False)
    # The linear render is what the shading promises: albedo (of the 8-bit texture) x world.
    albedo = srgb_to_linear(np.round(linear_to_srgb(ALBEDOS) * 255) / 255)
    np.testing.assert_allclose(_patch_means(linear)[:, :3], albedo * WORLD, rtol=0.03, atol=2e-4)
    import cv2

    picture = cv2.imread(str(tmp_path / "plane_blender.png"), cv2.IMREAD_UNCHANGED)  # 16-bit BGRA
    blender = picture[..., 2::-1].astype(np.float64) / 65535
    agx = DisplayTransform("AgX", display_table(np.load(tmp_path / "values.npy", allow_pickle=False)))
    ours = agx.encode(linear[..., :3])
    difference = np.abs(_patch_means(ours) - _patch_means(blender)) * 255
    assert difference.max() < 0.5, difference
    # AgX is not the sRGB curve: it keeps the 2x-white patch below full white and desaturates.
    assert _patch_means(ours)[4].max() < 0.95
    assert not np.allclose(
        _patch_means(ours), linear_to_srgb(np.clip(_patch_means(linear)[:, :3], 0, 1)), atol=0.05
    )
