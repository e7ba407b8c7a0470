"""The fitting losses (torch) against the scoring metrics (numpy), whose conventions they share.

How the two relate: both SSIMs use Wang et al.'s 11 x 11 Gaussian window (sigma 1.5) and constants
(0.01 L)^2, (0.03 L)^2 with L = 1. The torch map keeps only the pixels whose window lies inside the
image ([C, H - 10, W - 10, D], per channel); the numpy map pads by reflection ([H, W], averaged over
channels). So inside a 5-pixel border they are the same map, and the torch mean SSIM is the numpy
map's mean over that interior. PSNR is 10 log10(1 / MSE) over the masked pixels and all channels in
both; equal images give numpy's inf and torch's 120 dB (its MSE floor of 1e-12).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lca_blender.evaluate.metrics import masked_psnr, masked_ssim  # noqa: E402
from lca_blender.evaluate.metrics import ssim_map as numpy_ssim_map  # noqa: E402
from lca_blender.reconstruct.losses import psnr, ssim, ssim_map  # noqa: E402

BORDER = 5  # half the window: the torch map starts this far inside the image


def _image_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """[H, W, 3] float64 pairs in [0, 1]: random, structured, and degraded copies of one another."""
    rng = np.random.default_rng(0)
    height, width = 40, 52
    rows, columns = np.mgrid[0:height, 0:width]
    gradient = np.stack([columns / width, rows / height, 0.5 + 0 * rows], -1)
    checker = (((rows // 6) + (columns // 6)) % 2)[..., None] * np.array([0.9, 0.6, 0.2]) + 0.05
    edge = np.where(columns[..., None] < width // 2, 0.2, 0.8) * np.ones(3)
    noisy = np.clip(checker + rng.normal(0, 0.1, checker.shape), 0, 1)
    random_a, random_b = rng.random((height, width, 3)), rng.random((height, width, 3))
    return {
        "random": (random_a, random_b),
        "checker-vs-noisy": (checker, noisy),
        "gradient-vs-edge": (gradient, edge),
        "edge-vs-shifted": (edge, np.roll(edge, 3, axis=1)),
        "offset": (gradient, np.clip(gradient + 0.1, 0, 1)),
        "contrast": (checker, 0.5 + 0.3 * (checker - 0.5)),
        "identical": (random_a, random_a.copy()),
    }


PAIRS = _image_pairs()


def _tensor(image: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(image, dtype=dtype)[None]  # [1, H, W, 3]: one camera


@pytest.mark.parametrize("name", PAIRS)
def test_ssim_map_is_the_metrics_map_inside_the_border(name: str) -> None:
    first, second = PAIRS[name]
    expected = numpy_ssim_map(first, second)[BORDER:-BORDER, BORDER:-BORDER]
    found = ssim_map(_tensor(first), _tensor(second))
    assert found.shape == (1, first.shape[0] - 2 * BORDER, first.shape[1] - 2 * BORDER, 3)
    # Both float64, the same separable blur summed in a different order: ~1e-16 on the moments,
    # ~1e-13 on the SSIM after the division by C2 = 9e-4 (the same argument as the float32 test
    # below, with float64's 1.1e-16; measured 1.6e-13). 1e-10 leaves a wide margin.
    np.testing.assert_allclose(found[0].mean(-1).numpy(), expected, rtol=0, atol=1e-10)
    interior = np.zeros(first.shape[:2], bool)
    interior[BORDER:-BORDER, BORDER:-BORDER] = True
    assert ssim(_tensor(first), _tensor(second)).item() == pytest.approx(
        masked_ssim(first, second, interior), abs=1e-10
    )


def test_ssim_values_that_are_known() -> None:
    identical = PAIRS["identical"]
    assert ssim(_tensor(identical[0]), _tensor(identical[1])).item() == pytest.approx(1.0, abs=1e-12)
    # Two flat images: only the luminance term, (2 a b + C1) / (a^2 + b^2 + C1).
    flat_a, flat_b = np.full((24, 24, 3), 0.3), np.full((24, 24, 3), 0.7)
    expected = (2 * 0.3 * 0.7 + 0.01**2) / (0.3**2 + 0.7**2 + 0.01**2)
    assert ssim(_tensor(flat_a), _tensor(flat_b)).item() == pytest.approx(expected, abs=1e-12)
    # An image against its negative about its mean has covariance -variance: SSIM well below 0.
    checker = PAIRS["checker-vs-noisy"][0]
    assert ssim(_tensor(checker), _tensor(1 - checker)).item() < -0.5


def test_ssim_of_several_cameras_is_their_mean() -> None:
    names = ["random", "checker-vs-noisy", "offset"]
    firsts = torch.stack([_tensor(PAIRS[name][0])[0] for name in names])
    seconds = torch.stack([_tensor(PAIRS[name][1])[0] for name in names])
    each = [ssim(_tensor(PAIRS[name][0]), _tensor(PAIRS[name][1])).item() for name in names]
    assert ssim(firsts, seconds).item() == pytest.approx(np.mean(each), abs=1e-12)


def test_float32_ssim_stays_close_to_the_float64_metric() -> None:
    # In float32 each blurred moment of values <= 1 carries at most ~22 roundings (two 11-tap
    # passes) of 6e-8: 1.3e-6, and so do the variances E[x^2] - E[x]^2. The SSIM's contrast term
    # divides by at least C2 = 9e-4, which scales that to ~1.5e-3 at worst (measured: 7e-5 here).
    # The float64 test above is the tight one; this checks the float32 path keeps its meaning.
    for first, second in PAIRS.values():
        expected = numpy_ssim_map(first, second)[BORDER:-BORDER, BORDER:-BORDER]
        found = ssim_map(_tensor(first, torch.float32), _tensor(second, torch.float32))
        np.testing.assert_allclose(found[0].mean(-1).numpy(), expected, rtol=0, atol=2e-3)


@pytest.mark.parametrize("name", [name for name in PAIRS if name != "identical"])
def test_psnr_is_the_metrics_psnr_with_and_without_a_mask(name: str) -> None:
    first, second = PAIRS[name]
    mask = np.zeros(first.shape[:2], bool)
    mask[5:30, 10:40] = True
    assert psnr(_tensor(first), _tensor(second)) == pytest.approx(masked_psnr(first, second), abs=1e-10)
    found = psnr(_tensor(first), _tensor(second), torch.as_tensor(mask)[None])
    assert found == pytest.approx(masked_psnr(first, second, mask), abs=1e-10)


def test_psnr_of_a_known_error_and_of_equal_images() -> None:
    image = PAIRS["random"][0]
    assert psnr(_tensor(image), _tensor(image + 0.1)) == pytest.approx(20.0, abs=1e-9)
    assert psnr(_tensor(image), _tensor(image)) == pytest.approx(120.0)  # the floor, where numpy says inf
    assert masked_psnr(image, image) == math.inf


def test_ssim_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(5)
    target = torch.as_tensor(rng.random((1, 14, 15, 2)))
    prediction = torch.as_tensor(rng.random((1, 14, 15, 2)), dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda image: ssim(image, target), (prediction,), eps=1e-6, atol=1e-8)
