"""Dense-BA benchmark on CPU: time per Gauss-Newton step and peak memory, Schur solver vs dense normal equations.

    python evaluation/bench_ba.py [--sizes 8 10 16 32 64] [--grid 48 64] [--dense-grid 12 16] [--dense-max 32]

Problems come from metricslam.slam.factors.synthetic_problem (about 6 edges per keyframe, float32 state,
noisy targets and priors, perturbed start). Every measurement runs in a fresh Python process that loads the
saved problem, records its peak resident set size (getrusage ru_maxrss), runs the steps, and reports the growth
of that peak: the extra memory one step needs beyond its inputs. Times are medians over --steps steps after one
warm-up step.

The dense reference (ba.dense_reference_step) builds the full (6K + K h w)^2 normal equations: at 48x64 that is
already 4.8 GB for 8 keyframes, so it is measured on the smaller --dense-grid (where the Schur solver is measured
too, for a like-for-like ratio) and its 48x64 time is extrapolated with the O(N^3) cost of the dense Cholesky.
Sizes above --dense-max are extrapolated the same way from the largest measured size. Extrapolated cells are
marked '~'.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from metricslam.geometry import se3
from metricslam.slam.ba import BAOptions, dense_ba, dense_reference_step
from metricslam.slam.factors import BAProblem, synthetic_problem


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def build_problem(K: int, h: int, w: int, seed: int = 0) -> BAProblem:
    """A noisy problem started 5 cm / 2 degrees / 10 % away from the truth."""
    problem = synthetic_problem(K, h, w, seed=seed, target_noise=0.5, prior_noise=0.05)
    g = torch.Generator().manual_seed(seed + 1)
    xi = torch.cat([0.03 * torch.randn(K, 3, generator=g, dtype=torch.float64),
                    math.radians(1.2) * torch.randn(K, 3, generator=g, dtype=torch.float64)], dim=1)
    xi[0] = 0
    problem.poses_cw = se3.se3_exp(xi) @ problem.poses_cw
    problem.invdepths = problem.invdepths * (1 + 0.1 * torch.randn(problem.invdepths.shape, generator=g))
    problem.weights = 0.5 + 0.5 * torch.rand(problem.weights.shape, generator=g)
    return problem


def run_child(path: str, method: str, steps: int) -> dict:
    """Measure one method on the saved problem inside this (fresh) process."""
    problem: BAProblem = torch.load(path, weights_only=False)
    opts = BAOptions()
    K, h, w = problem.invdepths.shape
    fixed = torch.zeros(K, dtype=torch.bool)
    fixed[0] = True
    eta = torch.full_like(problem.invdepths, opts.eta)

    if method == "schur":
        def step() -> None:
            dense_ba(**vars(problem), iters=1, options=opts)
    else:
        def step() -> None:
            dense_reference_step(problem.poses_cw, problem.invdepths, problem.intrinsics, problem.ii, problem.jj,
                                 problem.targets, problem.weights, problem.prior_invdepth, problem.prior_conf,
                                 fixed, eta, opts)

    base = _peak_rss_mb()
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"ms": 1000 * statistics.median(times[1:]), "peak_mb": _peak_rss_mb() - base}


def measure(problem: BAProblem, method: str, steps: int, tmp: Path) -> dict:
    path = tmp / "problem.pt"
    torch.save(problem, path)
    out = subprocess.run([sys.executable, __file__, "--child", str(path), method, str(steps)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 10, 16, 32, 64])
    ap.add_argument("--grid", type=int, nargs=2, default=[48, 64], metavar=("H", "W"))
    ap.add_argument("--dense-grid", type=int, nargs=2, default=[12, 16], metavar=("H", "W"))
    ap.add_argument("--dense-max", type=int, default=32, help="largest window solved densely; larger ones are extrapolated")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        path, method, steps = args.child
        print(json.dumps(run_child(path, method, int(steps))))
        return

    (H, W), (h, w) = args.grid, args.dense_grid
    print(f"dense BA, one Gauss-Newton step on CPU ({torch.get_num_threads()} threads, torch {torch.__version__}); "
          f"peak = growth of peak RSS during the steps")
    header = (f"{'K':>3} {'edges':>5} | {'schur ms':>8} {'peak MB':>7} @{H}x{W} | {'schur ms':>8} {'dense ms':>9} "
              f"{'dense MB':>8} {'ratio':>6} @{h}x{w} | {'dense ms':>10} {'ratio':>7} @{H}x{W}")
    print(header)
    print("-" * len(header))
    last_dense: tuple[int, float] | None = None
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for K in args.sizes:
            big = build_problem(K, H, W)
            small = build_problem(K, h, w)
            s_big = measure(big, "schur", args.steps, tmp)
            s_small = measure(small, "schur", args.steps, tmp)
            n_small = 6 * K + K * h * w
            if K <= args.dense_max:
                d = measure(small, "dense", max(1, args.steps // 2), tmp)
                dense_ms, dense_mb, mark = d["ms"], f"{d['peak_mb']:8.0f}", " "
                last_dense = (n_small, dense_ms)
            elif last_dense is not None:
                dense_ms = last_dense[1] * (n_small / last_dense[0]) ** 3
                dense_mb, mark = f"{'~' + str(round(8 * n_small ** 2 / 2 ** 20)):>8}", "~"
            else:
                dense_ms, dense_mb, mark = math.nan, f"{'-':>8}", " "
            dense_big = dense_ms * ((6 * K + K * H * W) / n_small) ** 3
            print(f"{K:>3} {big.ii.numel():>5} | {s_big['ms']:8.1f} {s_big['peak_mb']:7.0f} {'':>{len(str(H)) + len(str(W)) + 2}}| "
                  f"{s_small['ms']:8.1f} {mark}{dense_ms:8.0f} {dense_mb} {dense_ms / s_small['ms']:6.0f} "
                  f"{'':>{len(str(h)) + len(str(w)) + 2}}| ~{dense_big:9.2e} {dense_big / s_big['ms']:7.1e}",
                  flush=True)


if __name__ == "__main__":
    main()
