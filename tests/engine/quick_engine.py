"""The real engine with a smaller preview preset, for tests that run whole builds as subprocesses.

Every stage runs for real (photos decoded, MediaPipe, the body and Gaussian fits, the .lca
written); only the fits take fewer steps and Gaussians, so a build takes seconds rather than
minutes. Run as `python quick_engine.py ARGS` where `python -m lca_blender.cli ARGS` would be.
"""

import dataclasses

from lca_blender.cli import run
from lca_blender.reconstruct import views

QUICK_GAUSSIANS = 2_000
views.PRESETS["preview"] = dataclasses.replace(
    views.PRESETS["preview"], gaussians=QUICK_GAUSSIANS, body_steps=20, gaussian_steps=10
)

if __name__ == "__main__":
    run()
