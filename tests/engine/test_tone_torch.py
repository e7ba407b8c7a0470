"""The torch encode of the tone curves against the numpy one, forward and its gradients."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lca_blender.maths.tone import AGX, STANDARD  # noqa: E402
from lca_blender.maths.tone_torch import encode  # noqa: E402


def _linear_colours() -> np.ndarray:
    """[N, 3] linear colours from below AgX's black to above its white, greys and edge cases too."""
    rng = np.random.default_rng(0)
    colours = np.exp2(rng.uniform(-15, 5, (3000, 3)))
    greys = np.repeat(np.exp2(np.linspace(-15, 5, 81))[:, None], 3, axis=1)
    edges = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.5, 2.0], [-0.1, 0.2, 0.3]])
    return np.concatenate([colours, greys, edges])


@pytest.mark.parametrize("curve", [STANDARD, AGX], ids=lambda curve: curve.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_encode_equals_numpy(curve, dtype) -> None:
    linear = _linear_colours()
    display = encode(curve, torch.tensor(linear, dtype=dtype))
    assert display.dtype == dtype and display.shape == linear.shape
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(display.double().numpy(), curve.encode(linear), atol=tolerance)


@pytest.mark.parametrize("curve", [STANDARD, AGX], ids=lambda curve: curve.name)
def test_torch_encode_gradients_are_finite_and_match_finite_differences(curve) -> None:
    linear = torch.tensor(_linear_colours(), dtype=torch.float64, requires_grad=True)
    encode(curve, linear).sum().backward()
    assert torch.isfinite(linear.grad).all()
    # Where nothing clips, the gradient is the slope of the numpy encode (central differences).
    colours = np.exp2(np.random.default_rng(1).uniform(-8, 0, (200, 3)))
    colours = colours[np.all((curve.encode(colours) > 0.01) & (curve.encode(colours) < 0.99), axis=1)]
    tensor = torch.tensor(colours, requires_grad=True)
    encode(curve, tensor)[:, 1].sum().backward()
    step = 1e-7 * colours
    for channel in range(3):
        shift = np.zeros_like(colours)
        shift[:, channel] = step[:, channel]
        rise = curve.encode(colours + shift)[:, 1] - curve.encode(colours - shift)[:, 1]
        slope = rise / (2 * step[:, channel])
        # Piecewise-linear S has kinks at its knots: allow for a difference straddling one.
        close = np.isclose(tensor.grad[:, channel].numpy(), slope, rtol=1e-4, atol=1e-6)
        assert close.mean() > 0.97
