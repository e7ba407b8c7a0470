"""The rasterizer against references: closed forms, the dense per-pixel twin, and finite differences."""

from __future__ import annotations

import logging
import math
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from lca_blender.errors import AvatarError  # noqa: E402
from lca_blender.maths.sh import SH_C0, SH_C1  # noqa: E402
from lca_blender.maths.sh_torch import sh_to_color  # noqa: E402
from lca_blender.render import render, render_dense_reference  # noqa: E402
from lca_blender.render import tiles as tiles_module  # noqa: E402
from lca_blender.render.projection import LOW_PASS, MIN_ALPHA  # noqa: E402


def look_at(eye, target, up=(0.0, 0.0, 1.0), dtype=torch.float32) -> torch.Tensor:
    """[4, 4] world-to-camera matrix (OpenCV axes: x right, y down, z forward) of a camera at `eye`."""
    eye, target, up = (torch.tensor(v, dtype=torch.float64) for v in (eye, target, up))
    forward = (target - eye) / (target - eye).norm()
    right = torch.linalg.cross(forward, up)
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    view = torch.eye(4, dtype=torch.float64)
    view[:3, :3] = torch.stack([right, down, forward])
    view[:3, 3] = -view[:3, :3] @ eye
    return view.to(dtype)


def intrinsics(focal: float, cx: float, cy: float, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def random_gaussians(count: int, seed: int, dtype=torch.float32, spread=1.0, sizes=(0.02, 0.15)):
    """Means in a cube of half-side `spread`, random rotations, anisotropic log-uniform scales."""
    generator = torch.Generator().manual_seed(seed)
    means = (torch.rand(count, 3, generator=generator, dtype=torch.float64) - 0.5) * 2 * spread
    quats = torch.randn(count, 4, generator=generator, dtype=torch.float64)
    quats = quats / quats.norm(dim=1, keepdim=True)
    log_low, log_high = math.log(sizes[0]), math.log(sizes[1])
    scales = torch.exp(
        log_low + (log_high - log_low) * torch.rand(count, 3, generator=generator, dtype=torch.float64)
    )
    opacities = 0.05 + 0.93 * torch.rand(count, generator=generator, dtype=torch.float64)
    colors = torch.rand(count, 3, generator=generator, dtype=torch.float64)
    return [tensor.to(dtype) for tensor in (means, quats, scales, opacities, colors)]


def awkward_scene(dtype=torch.float32):
    """~200 Gaussians seen by two cameras: random ones, some behind a camera, big ones straddling the
    image border, an opaque stack that stops pixels early, all anisotropic and rotated."""
    means, quats, scales, opacities, colors = random_gaussians(160, seed=1, dtype=dtype)
    extra_means = torch.tensor(
        [[0.0, -4.0, 0.0], [0.3, -3.5, 0.1], [-0.2, -3.05, 0.0], [0.0, -3.0, 0.0]]  # behind / at camera 0
        + [[1.3, 0.0, 0.0], [-1.4, 0.5, 0.9], [0.0, 0.0, -1.1], [1.2, 0.2, 1.0]]  # across the image border
        + [[0.1, -0.5 + 0.02 * k, 0.05] for k in range(32)],  # an opaque stack: T falls under 1e-4
        dtype=dtype,
    )
    extra = len(extra_means)
    generator = torch.Generator().manual_seed(2)
    extra_quats = torch.randn(extra, 4, generator=generator).to(dtype)
    extra_quats = extra_quats / extra_quats.norm(dim=1, keepdim=True)
    extra_scales = torch.cat([torch.full((8, 3), 0.3), torch.tensor([[0.15, 0.08, 0.02]]).expand(32, 3)]).to(
        dtype
    )
    extra_opacities = torch.cat([torch.full((8,), 0.7), torch.full((32,), 0.97)]).to(dtype)
    extra_colors = torch.rand(extra, 3, generator=generator).to(dtype)
    viewmats = torch.stack([look_at((0, -3, 0.2), (0, 0, 0)), look_at((2.5, -1.5, 1.0), (0.3, 0, 0))]).to(
        dtype
    )
    Ks = torch.stack([intrinsics(60.0, 33.0, 27.0), intrinsics(45.0, 30.0, 25.0)]).to(dtype)
    gaussians = [
        torch.cat([means, extra_means]),
        torch.cat([quats, extra_quats]),
        torch.cat([scales, extra_scales]),
        torch.cat([opacities, extra_opacities]),
        torch.cat([colors, extra_colors]),
    ]
    return gaussians, viewmats, Ks, 70, 53  # 70 x 53: partial tiles on the right and bottom


def scalar_loss(result) -> torch.Tensor:
    """Weights every output differently, so that a wrong gradient of any of them shows."""
    weights = torch.linspace(0.2, 1.0, 3, dtype=result.color.dtype)
    return (
        (result.color * weights).sum()
        + (result.alpha**2).sum()
        + 0.1 * result.depth.sum()
        + (result.normal * weights.flip(0)).sum()
    )


# --- spherical harmonics (the bases themselves: test_sh.py) ----------------------------------------


def test_sh_degree_zero_gives_the_colour_back_and_clamps_at_zero():
    colours = torch.tensor([[0.2, 0.5, 0.9], [0.0, 1.0, 0.3]], dtype=torch.float64)
    sh = ((colours - 0.5) / SH_C0)[:, None, :]
    directions = torch.nn.functional.normalize(torch.randn(2, 3, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(sh_to_color(sh, directions, 0), colours)
    assert sh_to_color(torch.full((1, 1, 3), -10.0), directions[:1], 0).eq(0).all()


def test_sh_degree_one_view_dependence_has_the_3dgs_sign():
    """Coefficient 3 multiplies -C1 x, x along the ray from the camera to the Gaussian (3DGS)."""
    sh = torch.zeros(1, 4, 3)
    sh[0, 3] = -0.5  # brighter when seen looking along +x
    viewmats = torch.stack([look_at((-3, 0, 0), (0, 0, 0)), look_at((3, 0, 0), (0, 0, 0))])
    Ks = intrinsics(100.0, 8.0, 8.0).expand(2, 3, 3)
    result = render(
        torch.zeros(1, 3), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.05), torch.tensor([0.9]),
        sh, viewmats, Ks, 16, 16, sh_degree=1,
    )  # fmt: skip
    seen = result.color[:, 7:9, 7:9].mean((1, 2)) / result.alpha[:, 7:9, 7:9].mean((1, 2))
    torch.testing.assert_close(seen[0], torch.full((3,), 0.5 + 0.5 * SH_C1))
    torch.testing.assert_close(seen[1], torch.full((3,), 0.5 - 0.5 * SH_C1))


# --- closed forms --------------------------------------------------------------------------------


@pytest.mark.parametrize("antialiased", [False, True], ids=["classic", "antialiased"])
@pytest.mark.parametrize("sigma", [0.12, 0.02], ids=["3.0px", "0.5px"])
@pytest.mark.parametrize("backend", ["torch", "dense"])
def test_single_isotropic_gaussian_matches_the_closed_form(backend, sigma, antialiased):
    """Head-on, an isotropic Gaussian is o exp(-r^2 / 2 s^2) with s^2 = v + 0.3, v = (f sigma / z)^2;
    antialiased, o is the opacity times sqrt(det(v I) / det(s^2 I)) = v / s^2."""
    focal, depth, size = 100.0, 4.0, 64
    v = (focal * sigma / depth) ** 2
    s2 = v + LOW_PASS
    opacity = 0.8 * (v / s2 if antialiased else 1.0)
    args = (
        torch.tensor([[0.0, 0.0, depth]]), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), sigma),
        torch.tensor([0.8]), torch.ones(1, 3), torch.eye(4)[None], intrinsics(focal, 32.0, 32.0)[None],
        size, size,
    )  # fmt: skip
    if backend == "torch":
        result = render(*args, backend="torch", antialiased=antialiased)
    else:
        result = render_dense_reference(*args, antialiased=antialiased)

    centres = torch.arange(size, dtype=torch.float64) + 0.5 - 32.0
    r2 = centres[None, :] ** 2 + centres[:, None] ** 2
    expected = opacity * torch.exp(-r2 / (2 * s2))
    expected = torch.where(expected < MIN_ALPHA, 0.0, expected)
    alpha = result.alpha[0, ..., 0].double()
    # float32 exp and the per-pixel arithmetic: a few ulps of alpha <= 0.8.
    torch.testing.assert_close(alpha, expected, atol=2e-6, rtol=0)
    torch.testing.assert_close(result.depth[0][alpha > 0], torch.full_like(result.depth[0][alpha > 0], depth))

    # The integral of the Gaussian, less the part under 1/255 that 3DGS skips, is 2 pi s^2 (o - 1/255).
    # A sum over pixel centres of a function with a 1/255 step on a circle of ~4 px radius differs from
    # its integral by about (step x perimeter) / sqrt(perimeter), ~0.3 % of the total here: 1 % bound.
    integral = 2 * math.pi * s2 * (opacity - MIN_ALPHA)
    assert alpha.sum().item() == pytest.approx(integral, rel=1e-2)
    assert alpha.sum().item() == pytest.approx(2 * math.pi * s2 * opacity, rel=1e-2 + 1 / (255 * opacity))
    if antialiased:  # the filter spreads the Gaussian without adding to it: 2 pi v 0.8, as unfiltered
        assert alpha.sum().item() == pytest.approx(2 * math.pi * v * 0.8, rel=1e-2 + 1 / (255 * opacity))


def test_flat_gaussian_normal_faces_each_camera_and_depth_is_camera_z():
    quats = torch.tensor([[1.0, 0, 0, 0]])  # thinnest along world y
    scales = torch.tensor([[0.2, 0.01, 0.2]])
    viewmats = torch.stack([look_at((0, -2, 0), (0, 0, 0)), look_at((0, 3, 0), (0, 0, 0))])
    Ks = intrinsics(40.0, 16.0, 16.0).expand(2, 3, 3)
    result = render(
        torch.zeros(1, 3), quats, scales, torch.tensor([0.9]), torch.ones(1, 3), viewmats, Ks, 32, 32
    )
    normal = result.normal[:, 15:17, 15:17].mean((1, 2)) / result.alpha[:, 15:17, 15:17].mean((1, 2))
    torch.testing.assert_close(normal, torch.tensor([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]]))
    torch.testing.assert_close(result.depth[:, 16, 16, 0], torch.tensor([2.0, 3.0]))


# --- the tiled backend against the dense reference -----------------------------------------------


@pytest.mark.parametrize("antialiased", [False, True], ids=["classic", "antialiased"])
@pytest.mark.parametrize("segment", [128, 8], ids=["one-round", "many-rounds-and-chunks"])
def test_tiled_backend_matches_dense_reference_forward_and_backward(segment, antialiased, monkeypatch):
    monkeypatch.setattr(tiles_module, "DEFAULT_SEGMENT", segment)
    if segment == 8:
        monkeypatch.setattr(tiles_module, "DEFAULT_CHUNK_ELEMENTS", 3 * 8 * 256)  # 3 tiles per step
    gaussians, viewmats, Ks, width, height = awkward_scene()
    background = torch.tensor([0.1, 0.2, 0.3])
    outputs = {}
    for name in ("torch", "dense"):
        leaves = [tensor.clone().requires_grad_() for tensor in gaussians]
        if name == "torch":
            result = render(
                *leaves, viewmats, Ks, width, height,
                background=background, backend="torch", antialiased=antialiased,
            )  # fmt: skip
        else:
            result = render_dense_reference(
                *leaves, viewmats, Ks, width, height, background=background, antialiased=antialiased
            )
        scalar_loss(result).backward()
        outputs[name] = result, [leaf.grad for leaf in leaves]
    (tiled, tiled_grads), (dense, dense_grads) = outputs["torch"], outputs["dense"]

    assert tiled.backend == "torch" and dense.backend == "dense"
    assert 0.05 < dense.alpha.mean() < 0.95 and (dense.alpha > 0.999).any()  # pixels stop early
    # Same maths in float32, summed in a different order: a few ulps of values of order 1 (depth ~3).
    # Measured over 6 scenes, both settings, 1 and 2 threads: 3e-7 (depth 1.4e-6).
    for field, tolerance in (("color", 1e-5), ("alpha", 1e-5), ("depth", 1e-5 * 4), ("normal", 1e-5)):
        torch.testing.assert_close(getattr(tiled, field), getattr(dense, field), atol=tolerance, rtol=0)
    # A gradient sums up to 2 x 70 x 53 = 7,420 float32 pixel terms in another order: a random walk
    # of sqrt(7420) x 6e-8 = 5e-6 of the largest (measured as above: 3.2e-6), so compared relative
    # to each attribute's largest entry with six times that.
    for name, tiled_grad, dense_grad in zip(
        ("means", "quats", "scales", "opacities", "colors"), tiled_grads, dense_grads, strict=True
    ):
        scale = dense_grad.abs().max()
        assert scale > 0, name
        torch.testing.assert_close(tiled_grad, dense_grad, atol=3e-5 * scale, rtol=0, msg=name)


@pytest.mark.parametrize("antialiased", [False, True], ids=["classic", "antialiased"])
def test_tiled_backend_gradients_match_finite_differences(antialiased):
    """torch.autograd.gradcheck in float64 on 4 Gaussians over 4 tiles, for every Gaussian attribute
    (antialiased: through the opacities' compensation too)."""
    dtype = torch.float64
    means = torch.tensor(
        [[0.0, 0.0, 0.0], [0.15, 0.1, -0.2], [-0.2, -0.1, 0.3], [0.05, -0.2, 0.1]], dtype=dtype
    )
    generator = torch.Generator().manual_seed(3)
    quats = torch.nn.functional.normalize(torch.randn(4, 4, generator=generator, dtype=dtype), dim=1)
    scales = torch.tensor(
        [[0.2, 0.1, 0.05], [0.1, 0.15, 0.08], [0.12, 0.05, 0.2], [0.1, 0.13, 0.08]], dtype=dtype
    )
    opacities = torch.tensor([0.7, 0.5, 0.8, 0.3], dtype=dtype)
    sh = torch.randn(4, 4, 3, generator=generator, dtype=dtype) * 0.3
    viewmats = look_at((0.2, -2.0, 0.3), (0, 0, 0), dtype=dtype)[None]
    Ks = intrinsics(30.0, 10.0, 9.0, dtype=dtype)[None]

    def outputs(means, quats, scales, opacities, sh):
        result = render(
            means, quats, scales, opacities, sh, viewmats, Ks, 20, 18, sh_degree=1, backend="torch",
            antialiased=antialiased,
        )  # fmt: skip
        return result.color, result.alpha, result.depth, result.normal

    leaves = [tensor.clone().requires_grad_() for tensor in (means, quats, scales, opacities, sh)]
    # fast_mode compares random projections of the Jacobians (one backward per output, not per pixel).
    assert torch.autograd.gradcheck(outputs, leaves, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_several_cameras_in_one_call_equal_one_call_per_camera():
    gaussians, viewmats, Ks, width, height = awkward_scene()
    together = render(*gaussians, viewmats, Ks, width, height)
    for camera in range(len(viewmats)):
        alone = render(*gaussians, viewmats[camera : camera + 1], Ks[camera : camera + 1], width, height)
        for field in ("color", "alpha", "depth", "normal"):
            torch.testing.assert_close(getattr(together, field)[camera], getattr(alone, field)[0])


def test_background_is_composited_under_the_gaussians():
    gaussians, viewmats, Ks, width, height = awkward_scene()
    backgrounds = torch.tensor([[0.2, 0.4, 0.9], [1.0, 0.0, 0.5]])
    plain = render(*gaussians, viewmats, Ks, width, height)
    over = render(*gaussians, viewmats, Ks, width, height, background=backgrounds)
    torch.testing.assert_close(over.color, plain.color + (1 - plain.alpha) * backgrounds[:, None, None, :])
    shared = render(*gaussians, viewmats, Ks, width, height, background=backgrounds[0])
    torch.testing.assert_close(shared.color[0], over.color[0])


def test_per_camera_and_many_channel_colours():
    gaussians, viewmats, Ks, width, height = awkward_scene()
    means, quats, scales, opacities, colors = gaussians
    features = torch.cat([colors, colors[:, :2] * 0.5], dim=1)  # D = 5
    per_camera = torch.stack([features, features.flip(1)])
    result = render(means, quats, scales, opacities, per_camera, viewmats, Ks, width, height)
    reference = render_dense_reference(
        means, quats, scales, opacities, per_camera, viewmats, Ks, width, height
    )
    assert result.color.shape == (2, height, width, 5)
    torch.testing.assert_close(result.color, reference.color, atol=1e-5, rtol=0)


# --- backends ------------------------------------------------------------------------------------


def test_auto_backend_is_torch_without_cuda_and_is_logged_once(caplog):
    from lca_blender.render import rendering

    gaussians, viewmats, Ks, width, height = awkward_scene()
    rendering._logged_choices.clear()
    with caplog.at_level(logging.INFO, logger=rendering.__name__):
        first = render(*gaussians, viewmats, Ks, width, height)
        render(*gaussians, viewmats, Ks, width, height)
    assert first.backend == "torch"
    assert [record.getMessage() for record in caplog.records] == ["Rendering with the torch backend on cpu."]


def test_gsplat_backend_on_cpu_is_refused_with_a_message():
    gaussians, viewmats, Ks, width, height = awkward_scene()
    with pytest.raises(AvatarError, match="CUDA"):
        render(*gaussians, viewmats, Ks, width, height, backend="gsplat")
    with pytest.raises(ValueError, match="backend"):
        render(*gaussians, viewmats, Ks, width, height, backend="vulkan")


def test_wrong_shapes_are_reported():
    gaussians, viewmats, Ks, width, height = awkward_scene()
    means, quats, scales, opacities, colors = gaussians
    with pytest.raises(ValueError, match="quats"):
        render(means, quats[:, :3], scales, opacities, colors, viewmats, Ks, width, height)
    with pytest.raises(ValueError, match="SH"):
        render(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree=1)


def test_importing_the_renderer_loads_neither_gsplat_nor_cuda():
    code = (
        "import sys, torch, lca_blender.render as r; "
        "assert 'gsplat' not in sys.modules; assert not torch.cuda.is_initialized()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
