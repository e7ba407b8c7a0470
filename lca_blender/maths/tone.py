"""Tone curves of photos in numpy: scene-linear Rec.709 light <-> the display values a photo holds.

The avatar's albedo is estimated in scene-linear light, so the engine must undo the picture's tone
curve (decode) and apply it to what it renders (encode). Two curves:

- `STANDARD`: the sRGB transfer function (`colour.py`) on values clipped to [0, 1], Blender's
  "Standard" view transform.
- `AGX`: Blender's default "AgX" view transform (sRGB display). Blender builds it from OpenColorIO
  steps and 3D look-up tables, and the analytic AgX formula of the three.js/GLSL ports differs from
  it by up to 0.23 in display values (mean 0.048), so it is not used. `AGX` is instead our own
  model, of the same shape as AgX (inset, log2 encoding, sigmoid, outset), fitted to Blender::

      n = clip((log2(M_in @ linear) - lo) / (hi - lo), 0, 1)
      display = srgb(clip(M_out @ odd_power(M_outset @ S(n), power), 0, 1))

  S is a piecewise-linear, strictly increasing curve shared by the channels (its values at 64
  equally spaced knots); odd_power(v, p) = sign(v) |v|^p; every matrix row sums to 1, so greys stay
  neutral. M_in, S, M_outset, power and M_out were fitted (`scripts/fit_tone_curve.py`) to a 65^3
  table of Blender 4.5's AgX display values sampled through its colour management
  (`evaluate/display.py`: linear Rec.709 inputs 2^-15 .. 2^5 per channel, equally spaced in log2,
  saved by `Image.save_render`), weighting inputs 2^-10 .. 2^3 and near-grey colours most.
  Against that table, interpolated at 20,000 held-out random colours with channels log2-uniform in
  2^-10 .. 2^3, the absolute display error is: greys max 0.0096, mean 0.0034; muted colours
  (channels within 2 stops) max 0.018, mean 0.0031; all colours max 0.070, mean 0.0076; saturated
  ones (4 stops or more between channels) max 0.060, mean 0.0085. The rest is Blender's own 3D
  look-up tables, which no per-channel curve between matrices follows exactly.

`decode` is the exact inverse of `encode` wherever encode is invertible: every channel of M_in @
linear inside [2^lo, 2^hi] and of M_out @ odd_power(...) inside (0, 1). Display values at 0 or 1 (clipped
shadows and highlights) decode to the ends of that range. The differentiable encode is
`tone_torch.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import AvatarError
from .colour import linear_to_srgb, srgb_to_linear


def _odd_power(values: np.ndarray, exponent: float) -> np.ndarray:
    return np.sign(values) * np.abs(values) ** exponent


@dataclass(frozen=True)
class LogSigmoid:
    """The parameters of the log2-sigmoid model in the module docstring (plain numbers)."""

    input_matrix: tuple[tuple[float, float, float], ...]  # M_in [3, 3], applied to linear Rec.709
    log2_range: tuple[float, float]  # (lo, hi): the stops mapped to 0 and 1
    curve: tuple[float, ...]  # S at K equally spaced points of [0, 1], strictly increasing
    outset_matrix: tuple[tuple[float, float, float], ...]  # M_outset [3, 3], on the curve's values
    power: float  # gamma: linearises the outset values (odd extension below 0)
    output_matrix: tuple[tuple[float, float, float], ...]  # M_out [3, 3], to linear Rec.709 display

    def encode(self, linear: np.ndarray) -> np.ndarray:
        mixed = np.asarray(linear, np.float64) @ np.asarray(self.input_matrix).T
        lo, hi = self.log2_range
        stops = np.log2(np.clip(mixed, 2.0**lo, 2.0**hi))
        curve = np.asarray(self.curve)
        shaped = np.interp((stops - lo) / (hi - lo), np.linspace(0.0, 1.0, curve.size), curve)
        outset = _odd_power(shaped @ np.asarray(self.outset_matrix).T, self.power)
        return linear_to_srgb(np.clip(outset @ np.asarray(self.output_matrix).T, 0.0, 1.0))

    def decode(self, display: np.ndarray) -> np.ndarray:
        outset = srgb_to_linear(np.clip(np.asarray(display, np.float64), 0.0, 1.0))
        outset = outset @ np.linalg.inv(np.asarray(self.output_matrix)).T
        shaped = _odd_power(outset, 1.0 / self.power) @ np.linalg.inv(np.asarray(self.outset_matrix)).T
        curve = np.asarray(self.curve)
        # np.interp clamps to the curve's ends: clipped display values go to the ends of the range.
        normalised = np.interp(shaped, curve, np.linspace(0.0, 1.0, curve.size))
        lo, hi = self.log2_range
        mixed = np.exp2(lo + normalised * (hi - lo))
        return mixed @ np.linalg.inv(np.asarray(self.input_matrix)).T


@dataclass(frozen=True)
class ToneCurve:
    """A named tone curve: the sRGB transfer function (no model) or a fitted `LogSigmoid`."""

    name: str
    model: LogSigmoid | None = None  # None: the sRGB transfer function on clipped values

    def encode(self, linear: np.ndarray) -> np.ndarray:
        """Display values in [0, 1] of linear Rec.709 colours `linear` [..., 3]."""
        if self.model is None:
            return linear_to_srgb(np.clip(linear, 0.0, 1.0))
        return self.model.encode(linear)

    def decode(self, display: np.ndarray) -> np.ndarray:
        """Linear Rec.709 colours [..., 3] of display values `display` [..., 3] (module docstring)."""
        if self.model is None:
            return srgb_to_linear(np.clip(display, 0.0, 1.0))
        return self.model.decode(display)


STANDARD = ToneCurve("standard")
AGX = ToneCurve(
    "agx",
    LogSigmoid(
        input_matrix=(
            (0.6086395, 0.301509, 0.08985149),
            (0.1150666, 0.7714645, 0.1134689),
            (0.0927671, 0.1896229, 0.71761),
        ),
        log2_range=(-12.47393, 4.026069),
        curve=(
            0.001541414, 0.003206429, 0.004708296, 0.006590819, 0.008586386, 0.01102848, 0.01368218,
            0.01642259, 0.0193639, 0.02258838, 0.0260352, 0.02982029, 0.03382341, 0.03823099,
            0.04291765, 0.04802044, 0.05361786, 0.05959394, 0.06624184, 0.07331547, 0.08109506,
            0.0896298, 0.09886374, 0.1092314, 0.1203091, 0.1327806, 0.146131, 0.160843, 0.1775143,
            0.1955553, 0.2153146, 0.2361011, 0.2579593, 0.2818383, 0.3085763, 0.3404311, 0.3743542,
            0.4103836, 0.4473237, 0.4854444, 0.5234189, 0.5607299, 0.5960206, 0.6298341, 0.6620129,
            0.6919095, 0.7202942, 0.7464342, 0.7717657, 0.7949795, 0.8164062, 0.8369701, 0.8558367,
            0.8742093, 0.8910307, 0.9068094, 0.92143, 0.9349574, 0.947699, 0.9593843, 0.9704813,
            0.9806758, 0.9900635, 0.9984013
        ),
        outset_matrix=(
            (1.145787, -0.09169873, -0.05408809),
            (-0.01344846, 1.09286, -0.07941177),
            (-0.02672983, -0.02714588, 1.053876),
        ),
        power=2.225458,
        output_matrix=(
            (1.478924, -0.3831939, -0.09573052),
            (-0.1481023, 1.130429, 0.01767287),
            (-0.1207012, -0.2227104, 1.343412),
        ),
    ),
)  # fmt: skip
TONE_CURVES = {"standard": STANDARD, "agx": AGX}


def tone_curve(name: str) -> ToneCurve:
    """The tone curve called `name` (case-insensitive): one of `TONE_CURVES`."""
    try:
        return TONE_CURVES[name.lower()]
    except KeyError:
        known = ", ".join(sorted(TONE_CURVES))
        raise AvatarError(f"Unknown tone curve {name!r}: use one of {known}.") from None
