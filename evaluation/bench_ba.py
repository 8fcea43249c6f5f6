"""Dense-BA benchmark on CPU: time per Gauss-Newton step and peak memory, Schur solver vs dense normal equations.

    python evaluation/bench_ba.py [--sizes 8 10 16 32 64] [--grid 48 64] [--dense-grid 12 16] [--dense-max 32]
                                  [--threads N]

Problems come from metricslam.testing.ba_problems.synthetic_problem (about 6 edges per keyframe, float32 state,
noisy targets and priors, perturbed start). Every measurement runs in a fresh Python process that loads the
saved problem, records its peak resident set size (getrusage ru_maxrss), runs the steps, and reports the growth
of that peak: the extra memory one step needs beyond its inputs. Times are medians over --steps steps after one
warm-up step; 'cpu' is the process CPU time of a step (all threads), which is less disturbed than wall time when
other jobs share the machine.

The dense reference (metricslam.testing.ba_reference.dense_reference_step) builds the full (6K + K h w)^2 normal equations: at 48x64 that is
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
from metricslam.slam.ba import dense_ba
from metricslam.slam.config import BAOptions
from metricslam.testing.ba_problems import BAProblem, synthetic_problem
from metricslam.testing.ba_reference import dense_reference_step


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


def run_child(path: str, method: str, steps: int, threads: int) -> dict:
    """Measure one method on the saved problem inside this (fresh) process."""
    if threads > 0:
        torch.set_num_threads(threads)
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
    wall, cpu = [], []
    for _ in range(steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"ms": 1000 * statistics.median(wall[1:]), "cpu_ms": 1000 * statistics.median(cpu[1:]),
            "peak_mb": _peak_rss_mb() - base, "threads": torch.get_num_threads()}


def measure(problem: BAProblem, method: str, steps: int, threads: int, tmp: Path) -> dict:
    path = tmp / "problem.pt"
    torch.save(problem, path)
    out = subprocess.run([sys.executable, __file__, "--child", str(path), method, str(steps), str(threads)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 10, 16, 32, 64])
    ap.add_argument("--grid", type=int, nargs=2, default=[48, 64], metavar=("H", "W"))
    ap.add_argument("--dense-grid", type=int, nargs=2, default=[12, 16], metavar=("H", "W"))
    ap.add_argument("--dense-max", type=int, default=32,
                    help="largest window solved densely; larger ones are extrapolated")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        path, method, steps, threads = args.child
        print(json.dumps(run_child(path, method, int(steps), int(threads))))
        return

    (H, W), (h, w) = args.grid, args.dense_grid
    threads = args.threads or torch.get_num_threads()
    print(f"dense BA, one Gauss-Newton step on CPU, {threads} torch thread(s), torch {torch.__version__}; "
          f"peak = growth of peak RSS during the steps; ~ = extrapolated (O(N^3) dense Cholesky)")
    header = (f"{'K':>3} {'edges':>5} | {f'schur @{H}x{W}: ms':>18} {'cpu ms':>7} {'peak MB':>7} | "
              f"{f'@{h}x{w}: schur ms':>18} {'dense ms':>9} {'dense MB':>8} {'ratio':>6} | "
              f"{f'dense @{H}x{W} ms':>16} {'ratio':>7}")
    print(header)
    print("-" * len(header))
    last_dense: tuple[int, float] | None = None
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for K in args.sizes:
            big = build_problem(K, H, W)
            small = build_problem(K, h, w)
            s_big = measure(big, "schur", args.steps, args.threads, tmp)
            s_small = measure(small, "schur", args.steps, args.threads, tmp)
            n_small = 6 * K + K * h * w
            if K <= args.dense_max:
                d = measure(small, "dense", max(1, args.steps // 2), args.threads, tmp)
                dense_ms, dense_mb = f"{d['ms']:9.0f}", f"{d['peak_mb']:8.0f}"
                dense_value = d["ms"]
                last_dense = (n_small, dense_value)
            elif last_dense is not None:
                dense_value = last_dense[1] * (n_small / last_dense[0]) ** 3
                dense_ms, dense_mb = f"~{dense_value:8.0f}", f"~{8 * n_small ** 2 / 2 ** 20:7.0f}"
            else:
                dense_value, dense_ms, dense_mb = math.nan, f"{'-':>9}", f"{'-':>8}"
            dense_big = dense_value * ((6 * K + K * H * W) / n_small) ** 3
            print(f"{K:>3} {big.ii.numel():>5} | {s_big['ms']:18.1f} {s_big['cpu_ms']:7.1f} {s_big['peak_mb']:7.0f} | "
                  f"{s_small['ms']:18.1f} {dense_ms} {dense_mb} {dense_value / s_small['ms']:6.0f} | "
                  f"~{dense_big:15.2e} {dense_big / s_big['ms']:7.1e}", flush=True)


if __name__ == "__main__":
    main()
