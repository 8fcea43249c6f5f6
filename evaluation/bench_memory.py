"""Memory of a long SLAM run against the number of keyframes: is it linear?

    python evaluation/bench_memory.py [--frames 5000] [--every 500] [--width 256 --height 192] [--set key=value ...]

Tracks a synthetic room sequence (the camera circles the room, so loop edges keep appearing) with the simulated
metric prior, frames rendered as they are needed. Every --every frames it prints the keyframes, the cached graph
edges (directed), the resident set size and its peak so far (both as growth over the start, sampled every
10 ms), and the peak per keyframe and per edge; the last row is the final global BA and filler (``Slam.finish``).
Memory linear in keyframes shows as a flat 'peak MB / keyframe' once the edges per keyframe stop growing (the
back-end caps the loop edges a keyframe gets: ``backend.max_edges_per_keyframe``).
"""
from __future__ import annotations

import argparse
import time

import psutil
import torch
from bench_slam import PeakRSS

from metricslam.config import apply_overrides
from metricslam.io.synthetic import SyntheticSequence
from metricslam.metrics.trajectory import evaluate_trajectory
from metricslam.slam.config import SlamConfig
from metricslam.slam.system import Slam


def _row(label: str, slam: Slam, rss: PeakRSS, seconds: float) -> str:
    now = (psutil.Process().memory_info().rss - rss.start) / 2**20
    kfs, edges = len(slam.store), len(slam.edges)
    return (f"| {label} | {kfs} | {edges} | {edges / max(kfs, 1):.1f} | {now:.0f} | {rss.growth_mb:.0f} | "
            f"{rss.growth_mb / max(kfs, 1):.2f} | {rss.growth_mb / max(edges, 1) * 1024:.0f} | {seconds:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--every", type=int, default=500, help="print a row every this many frames")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="SlamConfig overrides, e.g. backend.max_edges_per_keyframe=6")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = apply_overrides(SlamConfig(), ["prior.kind=simulated", *args.set])
    seq = SyntheticSequence("room", frames=args.frames, width=args.width, height=args.height, seed=0)
    print(f"synthetic room, {args.frames} frames at {args.width}x{args.height}, simulated prior, "
          f"{torch.get_num_threads()} torch thread(s); MB = growth of the resident set over the start")
    print("| frames | keyframes | edges | edges / keyframe | RSS MB | peak MB | peak MB / keyframe "
          "| peak KB / edge | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    slam = Slam(cfg)
    start = time.perf_counter()
    with PeakRSS() as rss:
        for i in range(len(seq)):
            slam.track(seq[i])
            if (i + 1) % args.every == 0 or i + 1 == len(seq):
                print(_row(str(i + 1), slam, rss, time.perf_counter() - start), flush=True)
        rec = slam.finish()
    print(_row("finish", slam, rss, time.perf_counter() - start))
    m = evaluate_trajectory(seq.gt_trajectory(), rec.trajectory())
    print(f"ATE SE3 {m['ate_se3_rmse_m']:.3f} m, Sim3 scale {m['sim3_scale']:.4f}, "
          f"{args.frames / (time.perf_counter() - start):.1f} frames/s")


if __name__ == "__main__":
    main()
