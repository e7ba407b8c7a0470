"""The differentiable Gaussian rasterizer: `render()` with gsplat on CUDA and a portable torch backend.

Engine only (imports torch); importing it loads nothing from CUDA: gsplat is imported only when
a CUDA device asks for it.
"""

from .rendering import RenderResult, render, render_dense_reference

__all__ = ["RenderResult", "render", "render_dense_reference"]
