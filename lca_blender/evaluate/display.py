"""Showing linear renders as Blender shows them: the view transform of a subject's photos.

Cycles renders linear light; Blender turns it into the picture one sees with the scene's view
transform. "Standard" is the sRGB transfer function (`maths/colour.py`), exact in numpy. Others
(Blender's default "AgX") are chains of OpenColorIO steps, among them 3D look-up tables shipped
with Blender (AgX_Base_sRGB.cube and a luminance compensation cube), so a numpy rewrite of the
published AgX formula would only approximate them. Instead Blender itself samples its transform
once per subject: `lut_inputs` is a grid of linear colours, equally spaced in log2 per channel,
that Blender's Python pushes through the scene's colour management (`Image.save_render`, 16-bit,
no dither); the result is a [N, N, N, 3] table that `DisplayTransform.encode` interpolates
trilinearly in the same log2 coordinates. The same table shows the truth and the avatar, so both
go through one transform, and tests check it against Blender's own PNG of a Cycles render.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..maths.colour import linear_to_srgb

VIEW_TRANSFORMS = ("Standard", "AgX")
LUT_SIZE = 65  # grid points per channel: 5/16 stop apart over the range below, 1.0 among them
LUT_LOG2_MIN = -15.0  # 3e-5: darker inputs show as this (AgX maps everything below ~2e-4 to black)
LUT_LOG2_MAX = 5.0  # 32: brighter inputs show as this (Standard clips at 1, AgX is ~0.99 there)


def lut_inputs(size: int = LUT_SIZE) -> np.ndarray:
    """[N^3, 3] float32 linear Rec.709 colours on the table's grid: red varies fastest, then green,
    then blue (the order of `DisplayTransform.table`'s flattened [B, G, R] axes)."""
    levels = np.exp2(np.linspace(LUT_LOG2_MIN, LUT_LOG2_MAX, size))
    blue, green, red = np.meshgrid(levels, levels, levels, indexing="ij")
    return np.stack([red, green, blue], axis=-1).reshape(-1, 3).astype(np.float32)


@dataclass(frozen=True)
class DisplayTransform:
    """A view transform: "Standard" (exact sRGB) or a table Blender sampled (module docstring)."""

    name: str = "Standard"
    table: np.ndarray | None = None  # [N, N, N, 3] float32 display values, axes (blue, green, red)

    def encode(self, linear: np.ndarray) -> np.ndarray:
        """Display values in [0, 1] of linear Rec.709 colours [..., 3] (float64 through a table)."""
        if self.table is None:
            return linear_to_srgb(np.clip(linear, 0.0, 1.0))
        linear = np.asarray(linear, np.float64)
        size = self.table.shape[0]
        stops = np.log2(np.clip(linear, 2.0**LUT_LOG2_MIN, 2.0**LUT_LOG2_MAX))
        position = (stops - LUT_LOG2_MIN) / (LUT_LOG2_MAX - LUT_LOG2_MIN) * (size - 1)
        lower = np.minimum(np.floor(position).astype(np.intp), size - 2)
        fraction = position - lower
        result = np.zeros(linear.shape, np.float64)
        for corner in range(8):
            step = [(corner >> axis) & 1 for axis in range(3)]  # red, green, blue
            weight = np.ones(linear.shape[:-1])
            for axis in range(3):
                weight = weight * (fraction[..., axis] if step[axis] else 1 - fraction[..., axis])
            red, green, blue = (lower[..., axis] + step[axis] for axis in range(3))
            result += weight[..., None] * self.table[blue, green, red]
        return np.clip(result, 0.0, 1.0)


def display_table(values: np.ndarray, size: int = LUT_SIZE) -> np.ndarray:
    """[N, N, N, 3] float32 table from the display values Blender gave for `lut_inputs(size)`."""
    values = np.asarray(values, np.float32)
    if values.shape != (size**3, 3):
        raise ValueError(f"Expected {size**3} display colours for a {size}^3 table, found {values.shape}.")
    return values.reshape(size, size, size, 3)
