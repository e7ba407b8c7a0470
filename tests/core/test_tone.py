"""The tone curves: decode inverts encode, Standard is colour.py's sRGB, greys rise, names resolve."""

from __future__ import annotations

import numpy as np
import pytest

from lca_blender.errors import AvatarError
from lca_blender.maths.colour import linear_to_srgb, srgb_to_linear
from lca_blender.maths.tone import AGX, STANDARD, TONE_CURVES, tone_curve


def _random_linear(count: int, low_stops: float, high_stops: float, seed: int = 0) -> np.ndarray:
    """[count, 3] linear colours, each channel log2-uniform in [2^low_stops, 2^high_stops]."""
    return np.exp2(np.random.default_rng(seed).uniform(low_stops, high_stops, (count, 3)))


def test_standard_is_the_srgb_transfer_function_on_clipped_values() -> None:
    linear = np.concatenate([_random_linear(500, -14, 0.5), [[-0.2, 0.0, 1.0], [2.0, 0.5, 1e-5]]])
    np.testing.assert_array_equal(STANDARD.encode(linear), linear_to_srgb(np.clip(linear, 0, 1)))
    display = np.random.default_rng(1).uniform(-0.1, 1.1, (500, 3))
    np.testing.assert_array_equal(STANDARD.decode(display), srgb_to_linear(np.clip(display, 0, 1)))


@pytest.mark.parametrize("curve", [STANDARD, AGX], ids=lambda curve: curve.name)
def test_decode_inverts_encode_where_nothing_clips(curve) -> None:
    # Within 2^-9 .. 2^2.5 (2^-9 .. 1 for Standard, which clips above 1) only very saturated colours
    # clip a channel to 0 or 1; all the others must come back to rounding error (float64).
    linear = _random_linear(5000, -9, 2.5 if curve is AGX else 0)
    display = curve.encode(linear)
    unclipped = np.all((display > 1e-6) & (display < 1 - 1e-6), axis=1)
    assert unclipped.mean() > 0.9
    np.testing.assert_allclose(curve.decode(display[unclipped]), linear[unclipped], rtol=1e-9)


def test_agx_greys_stay_grey_rise_and_span_the_display_range() -> None:
    greys = np.repeat(np.exp2(np.linspace(-15, 5, 401))[:, None], 3, axis=1)
    display = AGX.encode(greys)
    np.testing.assert_allclose(display, display[:, :1].repeat(3, axis=1), atol=1e-5)  # rounded figures
    assert np.all(np.diff(display[:, 0]) >= 0)
    useful = (greys[:, 0] >= 2.0**-10) & (greys[:, 0] <= 2.0**3)
    assert np.all(np.diff(display[useful, 0]) > 0)
    # Blender's AgX: black below ~2^-12, 18 % grey near 0.45, far from white at 8x diffuse white.
    assert display[0, 0] == pytest.approx(0.0, abs=1e-3)
    assert float(AGX.encode(np.full(3, 0.18))[0]) == pytest.approx(0.45, abs=0.02)
    assert 0.9 < float(AGX.encode(np.full(3, 8.0))[0]) < 0.99


def test_display_extremes_decode_to_the_ends_of_the_range() -> None:
    lo, hi = AGX.model.log2_range
    np.testing.assert_allclose(AGX.decode(np.zeros(3)), np.full(3, 2.0**lo), rtol=1e-6)
    np.testing.assert_allclose(AGX.decode(np.ones(3)), np.full(3, 2.0**hi), rtol=1e-6)
    np.testing.assert_allclose(AGX.decode(np.array([-0.5, 1.5, 0.0])), AGX.decode(np.array([0.0, 1.0, 0.0])))


def test_agx_curve_is_strictly_increasing_and_the_matrices_invertible() -> None:
    assert np.all(np.diff(AGX.model.curve) > 0)
    for matrix in (AGX.model.input_matrix, AGX.model.outset_matrix, AGX.model.output_matrix):
        assert np.linalg.cond(np.asarray(matrix)) < 10
        np.testing.assert_allclose(np.sum(matrix, axis=1), 1.0, atol=1e-6)  # greys stay neutral


def test_tone_curves_by_name() -> None:
    assert TONE_CURVES == {"standard": STANDARD, "agx": AGX}
    assert tone_curve("agx") is AGX
    assert tone_curve("Standard") is STANDARD
    with pytest.raises(AvatarError, match="agx, standard"):
        tone_curve("filmic")
