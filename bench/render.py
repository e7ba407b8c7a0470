"""Benchmark: the portable torch rasterizer, forward and forward+backward, against the dense reference.

Prints JSON. The scene: random Gaussians filling a person-sized box (0.5 x 0.3 x 1.8 m) seen from
3 m by a camera framing it (f = 1.5 x image height), avatar-sized (scales ~1 cm, log-normal), random
rotations, opacities in [0.1, 1] and colours. Absolute times on shared machines mean little, so every
time is also a ratio to the dense reference (`render_dense_reference`: every pixel x every Gaussian)
measured in the same process at a size it can run. The dense reference's cost is linear in
Gaussians x pixels, so it is extrapolated to the large sizes as
    t_dense(N, P) = t_dense(N0, P0) * (N * P) / (N0 * P0)
and the headline is the torch backend's speed-up over that extrapolation at 50k Gaussians, 256^2,
forward+backward (target >= 30x). On a CUDA machine gsplat is timed against the torch backend too.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable

import torch

from lca_blender.render import render, render_dense_reference
from lca_blender.render.gsplat_backend import gsplat_available


def best_time(function: Callable[[], object], repeats: int, device: torch.device) -> dict[str, float]:
    """Median and minimum of `repeats` timed calls after one warm-up call, in milliseconds."""

    def timed() -> float:
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1000

    timed()
    times = [timed() for _ in range(repeats)]
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def person_scene(count: int, size: int, device: torch.device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    box = torch.tensor([0.5, 0.3, 1.8])
    means = (torch.rand(count, 3, generator=generator) - 0.5) * box + torch.tensor([0.0, 0.0, 0.9])
    quats = torch.nn.functional.normalize(torch.randn(count, 4, generator=generator), dim=1)
    scales = torch.exp(math.log(0.01) + 0.3 * torch.randn(count, 3, generator=generator))
    opacities = 0.1 + 0.9 * torch.rand(count, generator=generator)
    colors = torch.rand(count, 3, generator=generator)
    # Camera at (0, -3, 0.9) looking along +y at the box: OpenCV axes x right, y down (-z), z forward.
    viewmat = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, 0.9], [0, 1, 0, 3.0], [0, 0, 0, 1]])
    focal = 1.5 * size
    K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]])
    gaussians = [tensor.to(device) for tensor in (means, quats, scales, opacities, colors)]
    return gaussians, viewmat[None].to(device), K[None].to(device)


def time_renderer(renderer: Callable, count: int, size: int, repeats: int, device: torch.device) -> dict:
    gaussians, viewmats, Ks = person_scene(count, size, device)
    leaves = [tensor.requires_grad_() for tensor in gaussians]

    def forward():
        with torch.no_grad():
            return renderer(*leaves, viewmats, Ks, size, size)

    def forward_backward():
        result = renderer(*leaves, viewmats, Ks, size, size)
        (result.color.sum() + result.alpha.sum() + result.depth.mean()).backward()

    coverage = float(forward().alpha.mean())
    return {
        "forward": best_time(forward, repeats, device),
        "forward_backward": best_time(forward_backward, repeats, device),
        "mean_alpha": round(coverage, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one timed repeat, no 200k-Gaussian sizes")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    cpu = torch.device("cpu")

    def torch_backend(*arguments):
        return render(*arguments, backend="torch")

    base_count, base_size = 2_000, 128
    dense = time_renderer(render_dense_reference, base_count, base_size, repeats, cpu)
    small = time_renderer(torch_backend, base_count, base_size, repeats, cpu)
    sizes = [(50_000, 256), (50_000, 512)] + ([] if args.quick else [(200_000, 256), (200_000, 512)])
    results = []
    for count, size in sizes:
        timing = time_renderer(torch_backend, count, size, repeats, cpu)
        work = (count * size * size) / (base_count * base_size * base_size)
        for stage in ("forward", "forward_backward"):
            measured = timing[stage]["median_ms"]
            dense_ms = dense[stage]["median_ms"]
            timing[stage]["ratio_to_dense_measured"] = round(measured / dense_ms, 4)
            timing[stage]["dense_extrapolated_ms"] = round(dense_ms * work, 1)
            timing[stage]["speedup_over_dense_extrapolated"] = round(dense_ms * work / measured, 1)
        results.append({"gaussians": count, "image": f"{size}x{size}", **timing})
    for stage in ("forward", "forward_backward"):
        small[stage]["speedup_over_dense_same_size"] = round(
            dense[stage]["median_ms"] / small[stage]["median_ms"], 1
        )

    report = {
        "benchmark": "render",
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
        },
        "scene": "random Gaussians in a 0.5 x 0.3 x 1.8 m box, scales ~1 cm, seen from 3 m, f = 1.5 x size",
        "baseline": {
            "renderer": "render_dense_reference (every pixel x every Gaussian), same process",
            "gaussians": base_count,
            "image": f"{base_size}x{base_size}",
            **dense,
        },
        "extrapolation": "dense time linear in Gaussians x pixels: t(N, P) = t(N0, P0) * N P / (N0 P0)",
        "torch_backend_at_baseline_size": small,
        "torch_backend": results,
    }
    headline = next(r for r in results if r["gaussians"] == 50_000 and r["image"] == "256x256")
    report["headline"] = {
        "what": "torch backend speed-up over the extrapolated dense reference, 50k Gaussians, 256^2, fwd+bwd",
        "speedup": headline["forward_backward"]["speedup_over_dense_extrapolated"],
        "target": 30,
    }
    if torch.cuda.is_available() and gsplat_available():
        report["cuda"] = cuda_comparison(sizes, repeats)
    print(json.dumps(_rounded(report), indent=2))


def cuda_comparison(sizes: list[tuple[int, int]], repeats: int) -> list[dict]:
    """gsplat against the torch backend on CUDA at each (Gaussians, image side) size."""
    cuda = torch.device("cuda")
    comparison = []
    for count, size in sizes:
        timings = {
            backend: time_renderer(
                lambda *arguments, chosen=backend: render(*arguments, backend=chosen),
                count,
                size,
                repeats,
                cuda,
            )
            for backend in ("gsplat", "torch")
        }
        comparison.append(
            {
                "gaussians": count,
                "image": f"{size}x{size}",
                **timings,
                "torch_over_gsplat_forward_backward": round(
                    timings["torch"]["forward_backward"]["median_ms"]
                    / timings["gsplat"]["forward_backward"]["median_ms"],
                    2,
                ),
            }
        )
    return comparison


def _rounded(value):
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return round(value, 3) if isinstance(value, float) else value


if __name__ == "__main__":
    main()
