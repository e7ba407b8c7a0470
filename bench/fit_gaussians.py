"""Benchmark: the fit_gaussians stage at a preset's settings, measured or projected, in seconds and ratios.

Prints JSON. The subject: `sample_avatar` on the Anny rig, photographed in its relit look under a
sun and an ambient world from `--views` cameras round it (portrait, longer side = the preset's
`max_side`). The fit runs from those photos with the true body.

Shared machines make absolute seconds noisy, so the unit is also measured in the same process: one
forward+backward render of the preset's Gaussian count at 256 x 256 (`unit_s`, the renderer's own
benchmark scene size). Every time is given in seconds and in units.

Without `--full` the stage is projected rather than run to the end: the fixed part (placing,
observing, lighting, filling, final scores) is timed by a fit with 0 steps, and the cost of one
coarse and one full-size step by timing `--probe` steps of each; projected = fixed + coarse steps x
coarse step + full steps x full step (the schedule of `fit_gaussians`).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import numpy as np
import torch

from lca_blender.avatar import Pose
from lca_blender.bodies.anny_body import anny_rig
from lca_blender.maths.deform import pose_avatar
from lca_blender.maths.lights import AmbientSH, Lighting, SunLight
from lca_blender.reconstruct import fit_gaussians as stage
from lca_blender.reconstruct.sample import sample_avatar
from lca_blender.reconstruct.views import PRESETS, BodyFit, Preset, views_from_renders
from lca_blender.render import render
from lca_blender.render.pictures import framed_cameras, render_views

LIGHTING = Lighting(
    ambient=AmbientSH.uniform((1.0, 1.0, 1.0), 0.35), lights=(SunLight((0.5, 0.7, -0.5), strength_w_m2=2.0),)
)


def capture(preset: Preset, view_count: int) -> BodyFit:
    rig = anny_rig()
    truth = sample_avatar(rig, 60_000, seed=1)
    splats = pose_avatar(truth)
    height, width = preset.max_side, round(preset.max_side * 3 / 4)
    azimuths = [(f"az{index:02d}", 360.0 * index / view_count) for index in range(view_count)]
    cameras = framed_cameras(splats, azimuths, width, height)
    images = render_views(truth, splats, cameras, "relit", LIGHTING, background=(0, 0, 0))
    views = views_from_renders(cameras, images)
    return BodyFit(
        rig, Pose.rest(rig.joint_count), np.zeros(len(rig.expression_names), np.float32), views, {}
    )


def render_unit(count: int) -> float:
    """Seconds of one forward+backward render of `count` avatar Gaussians at 256 x 256 (best of 3)."""
    splats = pose_avatar(sample_avatar(anny_rig(), count, seed=2))
    camera = framed_cameras(splats, [("front", 0.0)], 256, 256)[0]

    def tensor(array: np.ndarray, grad: bool = False) -> torch.Tensor:
        return torch.tensor(array, dtype=torch.float32, requires_grad=grad)

    inputs = [tensor(a, True) for a in (splats.means, splats.rotations, splats.scales, splats.opacities)]
    colors = tensor(np.clip(0.5 + 0.28 * splats.sh[:, 0], 0, 1), True)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        result = render(
            *inputs, colors, tensor(camera.viewmat)[None], tensor(camera.intrinsics)[None], 256, 256
        )
        (result.color.sum() + result.alpha.sum()).backward()
        times.append(time.perf_counter() - started)
    return min(times)


def step_seconds(body: BodyFit, preset: Preset, side: int, probes: int) -> float:
    """Median seconds of one optimisation step on photos at most `side` pixels."""
    gaussians = stage._Gaussians(body, preset.gaussians, np.random.default_rng(0), "cpu")
    lighting = stage._CaptureLighting(
        torch.tensor(LIGHTING.ambient.as_array(), dtype=torch.float32),
        torch.tensor([-0.5, -0.7, 0.5]) / math.sqrt(1.19),
        torch.full((3,), 2.0),
    ).tensors()
    photos = [stage._photo(view, side, "cpu") for view in body.views]
    corrections = [stage._CameraCorrection("cpu") for _ in photos]
    parameters = gaussians.parameters()
    for parameter in parameters:
        parameter.requires_grad_(True)
    times = []
    for index in range(probes):
        started = time.perf_counter()
        which = index % len(photos)
        stage._step_loss(gaussians, photos[which], lighting, corrections[which]).backward()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="standard", choices=sorted(PRESETS))
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--steps", type=int, help="optimisation steps (default: the preset's)")
    parser.add_argument("--probe", type=int, default=4, help="steps timed per size when projecting")
    parser.add_argument("--full", action="store_true", help="run the whole stage instead of projecting")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    base = PRESETS[arguments.preset]
    steps = base.gaussian_steps if arguments.steps is None else arguments.steps
    preset = Preset(base.name, base.max_side, base.gaussians, base.body_steps, steps)
    body = capture(preset, arguments.views)
    unit = render_unit(preset.gaussians)
    report: dict = {
        "preset": preset.name,
        "views": arguments.views,
        "image": [body.views[0].camera.width, body.views[0].camera.height],
        "gaussians": preset.gaussians,
        "steps": steps,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "unit_s": round(unit, 3),
    }
    if arguments.full:
        started = time.perf_counter()
        avatar = stage.fit_gaussians(body, preset)
        seconds = time.perf_counter() - started
        report |= {"measured_s": round(seconds, 1), "measured_units": round(seconds / unit, 1)}
        report["photo_psnr_db"] = avatar.provenance["fit"]["photo_psnr_db"]
    else:
        started = time.perf_counter()
        stage.fit_gaussians(body, Preset(preset.name, preset.max_side, preset.gaussians, 0, 0))
        fixed = time.perf_counter() - started
        coarse_steps = math.ceil(stage.COARSE_FRACTION * steps)
        coarse = step_seconds(body, preset, min(stage.COARSE_SIDE, preset.max_side), arguments.probe)
        full = step_seconds(body, preset, preset.max_side, arguments.probe)
        projected = fixed + coarse_steps * coarse + (steps - coarse_steps) * full
        report |= {
            "fixed_s": round(fixed, 1),
            "coarse_step_s": round(coarse, 3),
            "full_step_s": round(full, 3),
            "projected_s": round(projected, 1),
            "projected_units": round(projected / unit, 1),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
