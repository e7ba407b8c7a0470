"""Fit the AgX model of `lca_blender/maths/tone.py` to a table of Blender's display values.

The table is the one `lca_blender/evaluate/display.py` has Blender sample ([65, 65, 65, 3] float32,
axes blue, green, red, over `lut_inputs`). Prints the fitted parameters, rounded as tone.py stores
them, and the rounded model's display errors against the table (interpolated by
`DisplayTransform.encode`) on held-out random colours, as JSON. With --samples it also writes the
random table samples that tests/engine/test_tone_fit.py checks the stored model against.

    .venv/bin/python scripts/fit_tone_curve.py out/subjects/<subject>/gt/display_lut.npy
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lca_blender.evaluate.display import DisplayTransform, lut_inputs  # noqa: E402
from lca_blender.maths.colour import srgb_to_linear  # noqa: E402
from lca_blender.maths.colour_torch import linear_to_srgb  # noqa: E402
from lca_blender.maths.tone import LogSigmoid  # noqa: E402

LOG2_RANGE = (-12.47393, 4.026069)  # AgX's log2 encoding range, kept fixed: M_in's scale shifts it
USEFUL_STOPS = (-10.0, 3.0)  # inputs weighted most in the fit and drawn for the held-out errors
OUTSIDE_WEIGHT = 0.05  # weight of table samples with a channel outside the useful stops
NEAR_GREY_WEIGHT = 10.0  # extra weight of colours whose channels lie within ~1.5 stops of each other
MIN_STEP = 1e-8  # least rise of S between knots, so that it stays strictly increasing
DIGITS = 7  # significant digits the parameters are stored with
# A start near AgX: its inset matrix on Rec.2020, its outset matrix, Rec.2020 -> Rec.709 (rows of
# each sum to 1, as the fitted matrices' rows do: greys stay neutral all the way through).
REC709_TO_REC2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])
AGX_INSET = np.array(
    [[0.856627, 0.095121, 0.048252], [0.137319, 0.761242, 0.101439], [0.111898, 0.076799, 0.811303]]
)
AGX_OUTSET = np.array(
    [[1.127101, -0.110607, -0.016494], [-0.141330, 1.157824, -0.016494], [-0.141330, -0.110607, 1.251936]]
)


def _significant(values: np.ndarray) -> list:
    return [float(f"{value:.{DIGITS}g}") for value in np.ravel(values)]


def _matrix_literal(matrix: torch.Tensor) -> tuple:
    return tuple(tuple(_significant(row)) for row in matrix.detach().numpy())


def _neutral(matrix: torch.Tensor) -> torch.Tensor:
    """`matrix` with each row shifted to sum to 1, so that it maps greys to the same greys."""
    return matrix - (matrix.sum(1, keepdim=True) - 1) / 3


class _Model(torch.nn.Module):
    """tone.py's model with free matrices (rows summing to 1), power and S (softplus steps)."""

    def __init__(self, grey_display: np.ndarray) -> None:
        super().__init__()
        self.input_matrix = torch.nn.Parameter(torch.tensor(AGX_INSET @ REC709_TO_REC2020))
        self.outset_matrix = torch.nn.Parameter(torch.tensor(AGX_OUTSET))
        self.output_matrix = torch.nn.Parameter(torch.tensor(np.linalg.inv(REC709_TO_REC2020)))
        self.log_power = torch.nn.Parameter(torch.tensor(np.log(2.2)))
        # With neutral matrices a grey's curve value is its linear display value ** (1 / power).
        curve = np.maximum.accumulate(srgb_to_linear(grey_display) ** (1 / 2.2))
        steps = np.maximum(np.diff(curve), 1e-6)
        self.curve_start = torch.nn.Parameter(torch.tensor(curve[0]))
        self.curve_steps = torch.nn.Parameter(torch.tensor(steps + np.log(-np.expm1(-steps))))

    def curve(self) -> torch.Tensor:
        steps = torch.nn.functional.softplus(self.curve_steps) + MIN_STEP
        return torch.cat([self.curve_start[None], self.curve_start + torch.cumsum(steps, 0)])

    def forward(self, linear: torch.Tensor) -> torch.Tensor:
        """The model's display values, unclipped (sRGB's odd extension outside [0, 1])."""
        lo, hi = LOG2_RANGE
        mixed = linear @ _neutral(self.input_matrix).T
        normalised = ((torch.log2(mixed.clamp(2.0**lo, 2.0**hi)) - lo) / (hi - lo)).clamp(0.0, 1.0)
        curve = self.curve()
        position = normalised * (curve.numel() - 1)
        lower = position.floor().clamp(max=curve.numel() - 2).long()
        fraction = position - lower
        shaped = curve[lower] * (1 - fraction) + curve[lower + 1] * fraction
        outset = shaped @ _neutral(self.outset_matrix).T
        outset = outset.sign() * outset.abs().clamp_min(1e-12).pow(self.log_power.exp())
        return linear_to_srgb(outset @ _neutral(self.output_matrix).T)

    def parameters_as_literal(self) -> LogSigmoid:
        curve = _significant(self.curve().detach().numpy())
        if np.any(np.diff(curve) <= 0):
            raise ValueError("The rounded curve is not strictly increasing: store more digits.")
        return LogSigmoid(
            input_matrix=_matrix_literal(_neutral(self.input_matrix)),
            log2_range=LOG2_RANGE,
            curve=tuple(curve),
            outset_matrix=_matrix_literal(_neutral(self.outset_matrix)),
            power=_significant(self.log_power.detach().exp().numpy())[0],
            output_matrix=_matrix_literal(_neutral(self.output_matrix)),
        )


def fit(table: np.ndarray, knots: int, seconds: float, seed: int = 0) -> LogSigmoid:
    """The model fitted to `table` by weighted least squares (L-BFGS on a random subset)."""
    inputs = lut_inputs(table.shape[0]).astype(np.float64)
    targets = table.reshape(-1, 3).astype(np.float64)
    stops = np.log2(inputs)
    useful = np.all((stops >= USEFUL_STOPS[0] - 1e-6) & (stops <= USEFUL_STOPS[1] + 1e-6), axis=1)
    # 40 % of the useful samples and 3 % of the others: enough to pin the model, quick to fit.
    rng = np.random.default_rng(seed)
    chosen = np.where(useful, rng.random(len(inputs)) < 0.4, rng.random(len(inputs)) < 0.03)
    spread = np.ptp(stops[chosen], axis=1)
    weights = np.where(useful[chosen], 1.0, OUTSIDE_WEIGHT) * (
        1 + NEAR_GREY_WEIGHT * np.exp(-((spread / 1.5) ** 2))
    )
    weights = torch.tensor(weights)[:, None]
    inputs, targets = torch.tensor(inputs[chosen]), torch.tensor(targets[chosen])

    stops_of_knots = LOG2_RANGE[0] + np.linspace(0, 1, knots) * (LOG2_RANGE[1] - LOG2_RANGE[0])
    grey = DisplayTransform("AgX", table).encode(np.repeat(np.exp2(stops_of_knots)[:, None], 3, 1))[:, 0]
    model = _Model(grey)
    optimiser = torch.optim.LBFGS(
        model.parameters(), max_iter=50, history_size=50, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        # The residuals of the clipped model, but with gradients where it clips: a display value
        # Blender gave as 0 (1) only asks the model for 0 or less (1 or more).
        optimiser.zero_grad()
        residuals = model(inputs) - targets
        residuals = torch.where(targets <= 0, residuals.clamp_min(0), residuals)
        residuals = torch.where(targets >= 1, residuals.clamp_max(0), residuals)
        loss = (weights * residuals**2).sum() / weights.sum()
        loss.backward()
        return loss

    start, previous = time.monotonic(), math.inf
    while time.monotonic() - start < seconds:
        loss = float(optimiser.step(closure).detach())
        if loss > previous * (1 - 1e-6):
            break
        previous = loss
    return model.parameters_as_literal()


def held_out_colours(count: int, seed: int) -> dict[str, np.ndarray]:
    """Random linear colours, log2 uniform over the useful stops: any, grey, muted and saturated."""
    rng = np.random.default_rng(seed)
    colours = np.exp2(rng.uniform(*USEFUL_STOPS, (count, 3)))
    greys = np.repeat(np.exp2(rng.uniform(*USEFUL_STOPS, (count, 1))), 3, 1)
    # Skin, hair and most cloth: channels within 2 stops of a random level.
    muted = np.exp2(rng.uniform(*USEFUL_STOPS, (count, 1)) + rng.uniform(-1.0, 1.0, (count, 3)))
    saturated = colours[colours.max(1) >= 16 * colours.min(1)]  # 4 stops or more between channels
    return {"colours": colours, "greys": greys, "muted": muted, "saturated": saturated}


def display_errors(model: LogSigmoid, table: np.ndarray, seed: int = 1) -> dict[str, dict[str, float]]:
    """Max and mean absolute display error of `model` against the table, per held-out set."""
    blender = DisplayTransform("AgX", table)
    errors = {}
    for name, linear in held_out_colours(20_000, seed).items():
        error = np.abs(model.encode(linear) - blender.encode(linear))
        errors[name] = {"max": float(error.max()), "mean": float(error.mean()), "count": len(linear)}
    return errors


def table_samples(table: np.ndarray, count: int, seed: int) -> dict[str, np.ndarray]:
    """`count` random grid points of the table: linear inputs [count, 3] and Blender's display values."""
    index = np.random.default_rng(seed).choice(table.shape[0] ** 3, count, replace=False)
    return {"linear": lut_inputs(table.shape[0])[index], "display": table.reshape(-1, 3)[index]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path, help="[65, 65, 65, 3] .npy table of Blender's AgX display values")
    parser.add_argument("--knots", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=100.0, help="most time for L-BFGS")
    parser.add_argument("--samples", type=Path, help="also write 2,000 table samples here (.npz)")
    args = parser.parse_args()

    table = np.load(args.table, allow_pickle=False)
    if table.shape[:3] != (table.shape[0],) * 3 or table.shape[3] != 3:
        parser.error(f"expected an [N, N, N, 3] table, found {table.shape}")
    torch.manual_seed(0)
    model = fit(table, args.knots, args.seconds)
    report = {"parameters": model.__dict__, "errors": display_errors(model, table)}
    if args.samples:
        samples = table_samples(table, 2000, seed=2)
        np.savez_compressed(args.samples, **samples)
        error = np.abs(model.encode(samples["linear"]) - samples["display"])
        report["errors"]["table_samples"] = {"max": float(error.max()), "mean": float(error.mean())}
        stops = np.log2(samples["linear"])
        useful = np.all((stops >= USEFUL_STOPS[0]) & (stops <= USEFUL_STOPS[1]), axis=1)
        report["errors"]["table_samples_useful"] = {
            "max": float(error[useful].max()),
            "mean": float(error[useful].mean()),
            "count": int(useful.sum()),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
