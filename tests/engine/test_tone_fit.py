"""The AgX tone curve against Blender's own AgX: 2,000 random samples of the 65^3 table Blender made
(`evaluate/display.py`), kept in tests/data by `scripts/fit_tone_curve.py --samples`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lca_blender.maths.tone import AGX

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "agx_blender_samples.npz"
# What the fit measured on these samples (max 0.066, mean 0.0066; over inputs 2^-10 .. 2^3 max
# 0.055, mean 0.0075), with a little room. A broken model is off by 0.1 or more.
MAX_ERROR, MEAN_ERROR = 0.075, 0.008
USEFUL_MAX_ERROR, USEFUL_MEAN_ERROR = 0.06, 0.009


def test_agx_follows_blenders_agx() -> None:
    with np.load(SAMPLES, allow_pickle=False) as samples:
        linear, blender = samples["linear"].astype(np.float64), samples["display"].astype(np.float64)
    assert linear.shape == blender.shape == (2000, 3)
    error = np.abs(AGX.encode(linear) - blender)
    assert error.max() < MAX_ERROR and error.mean() < MEAN_ERROR
    stops = np.log2(linear)
    useful = np.all((stops >= -10) & (stops <= 3), axis=1)
    assert useful.sum() > 400
    assert error[useful].max() < USEFUL_MAX_ERROR and error[useful].mean() < USEFUL_MEAN_ERROR
    greyish = useful & (np.ptp(stops, axis=1) <= 1)
    assert error[greyish].max() < 0.03
