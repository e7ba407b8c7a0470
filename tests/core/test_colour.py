"""The sRGB transfer functions against IEC 61966-2-1's values, their round trip and the torch twin."""

from __future__ import annotations

import numpy as np
import pytest

from lca_blender.maths.colour import linear_to_srgb, srgb_to_linear

# Where the straight segment meets the power curve, and its slope (IEC 61966-2-1, typed out here
# rather than imported, so that a wrong constant in the module shows).
LINEAR_KNEE, ENCODED_KNEE, SLOPE = 0.0031308, 0.04045, 12.92

# (linear, display) pairs. 0 and 1 are fixed points; 18 % grey encodes to 46.1 %, 50 % linear to
# 73.5 % and 50 % display is 21.4 % linear light (the values colour references quote); on the
# straight segment display = 12.92 x linear. Each pair is 1.055 L^(1/2.4) - 0.055 = V to 17 digits.
KNOWN_VALUES = [
    (0.0, 0.0),
    (1.0, 1.0),
    (0.18, 0.46135612950044164),
    (0.5, 0.7353569830524495),
    (0.21404114048223255, 0.5),
    (0.001, 0.01292),
    (0.003, 0.03876),
]


@pytest.mark.parametrize(("linear", "display"), KNOWN_VALUES)
def test_known_values_of_the_standard(linear: float, display: float) -> None:
    # float64, a pow and three roundings on values <= 1: a few ulps (2.2e-16 each).
    assert float(linear_to_srgb(np.array(linear))) == pytest.approx(display, abs=4e-16)
    assert float(srgb_to_linear(np.array(display))) == pytest.approx(linear, abs=4e-16)


def test_the_straight_segment_and_the_power_curve_meet_at_the_knee() -> None:
    # The standard's rounded constants leave a small step where the pieces meet: 12.92 x 0.0031308
    # = 0.040449936 against 1.055 x 0.0031308^(1/2.4) - 0.055 = 0.040449907 (2.9e-8 lower).
    below, above = np.nextafter(LINEAR_KNEE, 0.0), np.nextafter(LINEAR_KNEE, 1.0)
    assert float(linear_to_srgb(np.array(LINEAR_KNEE))) == pytest.approx(SLOPE * LINEAR_KNEE, abs=1e-17)
    step = float(linear_to_srgb(np.array(above)) - linear_to_srgb(np.array(below)))
    expected = (1.055 * LINEAR_KNEE ** (1 / 2.4) - 0.055) - SLOPE * LINEAR_KNEE  # -2.9e-8
    assert step == pytest.approx(expected, abs=1e-15)  # the pieces an ulp either side of the knee
    below, above = np.nextafter(ENCODED_KNEE, 0.0), np.nextafter(ENCODED_KNEE, 1.0)
    step = float(srgb_to_linear(np.array(above)) - srgb_to_linear(np.array(below)))
    assert step == pytest.approx(((ENCODED_KNEE + 0.055) / 1.055) ** 2.4 - ENCODED_KNEE / SLOPE, abs=1e-16)


def test_both_functions_are_odd_and_follow_the_power_law_above_one() -> None:
    values = np.array([1e-4, 0.002, 0.01, 0.3, 1.0, 1.5, 4.0, 20.0])
    np.testing.assert_array_equal(linear_to_srgb(-values), -linear_to_srgb(values))
    np.testing.assert_array_equal(srgb_to_linear(-values), -srgb_to_linear(values))
    # Past 1 the curve goes on (3DGS colours can leave [0, 1]); no clipping.
    assert float(linear_to_srgb(np.array(4.0))) == pytest.approx(1.055 * 4.0 ** (1 / 2.4) - 0.055, rel=1e-15)
    assert float(srgb_to_linear(np.array(2.0))) == pytest.approx((2.055 / 1.055) ** 2.4, rel=1e-15)
    # Increasing (but for the standard's tiny step down at the knee, which this grid steps over).
    assert np.all(np.diff(linear_to_srgb(np.linspace(-5, 5, 10001))) > 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_and_shape_are_kept(dtype) -> None:
    values = np.linspace(-1, 2, 24, dtype=dtype).reshape(2, 3, 4)
    for function in (linear_to_srgb, srgb_to_linear):
        result = function(values)
        assert result.dtype == dtype and result.shape == values.shape


def test_round_trip_is_exact_away_from_the_knee_and_within_its_step_at_it() -> None:
    values = np.concatenate([np.linspace(-3, 3, 20001), np.geomspace(1e-9, 3, 2001)])
    # One pow each way; the inverse's power 2.4 multiplies a relative error by at most 2.4:
    # a few ulps of each value (measured: <= 7e-16 relative).
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(values)), values, rtol=4e-15, atol=1e-300)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(values)), values, rtol=4e-15, atol=1e-300)
    # Linear values just above the knee encode (by the power curve) just below the display knee and
    # decode by the straight line: the round trip is off by the decoder's step at its knee.
    near_knee = LINEAR_KNEE + np.linspace(0, 1e-8, 101)
    step = ((ENCODED_KNEE + 0.055) / 1.055) ** 2.4 - ENCODED_KNEE / SLOPE  # 2.3e-9
    error = np.abs(srgb_to_linear(linear_to_srgb(near_knee)) - near_knee)
    assert error.max() <= step * 1.01 and error.max() > 0  # the step is there, and no larger


def test_torch_twin_matches_numpy_in_values() -> None:
    torch = pytest.importorskip("torch")
    from lca_blender.maths import colour_torch

    values = np.concatenate([np.linspace(-3, 3, 6001), [LINEAR_KNEE, -LINEAR_KNEE, 0.0]])
    expected = linear_to_srgb(values)
    found = colour_torch.linear_to_srgb(torch.as_tensor(values)).numpy()
    np.testing.assert_allclose(found, expected, rtol=2e-15, atol=1e-300)  # same float64 formula
    single = colour_torch.linear_to_srgb(torch.as_tensor(values, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(single, expected, rtol=2e-6, atol=1e-12)  # a few float32 ulps


def test_torch_gradient_is_finite_at_zero_and_the_analytic_derivative() -> None:
    torch = pytest.importorskip("torch")
    from lca_blender.maths import colour_torch

    values = torch.tensor(
        [0.0, -0.0, 1e-6, -1e-6, LINEAR_KNEE, 0.01, -0.01, 0.18, 0.5, -0.5, 1.0, 2.5, -2.5],
        dtype=torch.float64,
        requires_grad=True,
    )
    colour_torch.linear_to_srgb(values).sum().backward()
    magnitude = values.detach().abs().numpy()
    # The derivative of an odd function is even: d/dx of 1.055 |x|^(1/2.4) - 0.055, or 12.92.
    curve = 1.055 / 2.4 * np.power(np.maximum(magnitude, LINEAR_KNEE), 1 / 2.4 - 1)
    expected = np.where(magnitude <= LINEAR_KNEE, SLOPE, curve)
    assert torch.isfinite(values.grad).all()
    np.testing.assert_allclose(values.grad.numpy(), expected, rtol=1e-14)
    assert torch.autograd.gradcheck(
        colour_torch.linear_to_srgb,
        torch.tensor([0.02, 0.3, -0.7, 1.8], dtype=torch.float64, requires_grad=True),
    )
