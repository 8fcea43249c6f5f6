"""Accuracy cost of the prior schedule: every keyframe runs the prior vs the schedule ``--prior metric3d`` uses.

    python evaluation/bench_prior_schedule.py [--scenes room street hololens] [--max-frames N]
                                              [--set KEY=VALUE ...] [--out rows.json]

The simulated metric prior (metricslam.depth.simulated: ground-truth depth with a network's error model, AbsRel
0.08) stands in for the network; it is free to compute, so the table isolates what the schedule changes: which
keyframes get a prior of their own, which a prior transferred by reprojection, and when it enters the BA. Rows:

- every: PriorConfig schedule 'every', lag 0 (each keyframe's prior computed and inserted at once)
- schedule: what 'auto' gives a network prior on a CPU (metricslam.slam.prior_schedule: 'coverage', in line)
- schedule+worker: the same with the background worker (lag 2, the default on an accelerator)
``--set`` overrides apply to the two schedule rows.

Scenes: synthetic room (300 frames, 512x384) and street (300 frames, 512x384) with SlamConfig's defaults,
shared/data/hololens_000 (200 frames, the handheld preset). Columns: keyframes, prior runs (keyframes that
ran the prior), transfers, ATE SE3 (m), scale error (1 - Sim3 scale, %), KITTI t_err (%, paths over 100 m),
frames/s (wall clock, shared machine).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from metricslam.config import load_config
from metricslam.io.sequences import open_sequence
from metricslam.io.synthetic import SyntheticSequence
from metricslam.metrics.trajectory import evaluate_trajectory
from metricslam.slam.config import SlamConfig
from metricslam.slam.presets import preset_config
from metricslam.slam.prior_schedule import DEFAULT_NETWORK_LAG
from metricslam.slam.system import Slam

ROOT = Path(__file__).resolve().parents[1]
HOLOLENS = ROOT.parent / "shared" / "data" / "hololens_000"
# Scene -> (frames, settings preset; None = SlamConfig's defaults).
SCENES = {"room": (300, None), "street": (300, None), "hololens": (200, "handheld")}
SETTINGS = {
    "every": ["prior.schedule=every", "prior.lag=0"],
    "schedule": ["prior.schedule=coverage", "prior.lag=0"],
    "schedule+worker": ["prior.schedule=coverage", f"prior.lag={DEFAULT_NETWORK_LAG}"],
}


def open_scene(scene: str, frames: int):
    if scene == "hololens":
        return open_sequence(HOLOLENS, end=frames)
    return SyntheticSequence(scene, frames=frames, width=512, height=384, seed=0)


def run(scene: str, frames: int, overrides: list[str]) -> dict:
    seq = open_scene(scene, frames)
    preset, overrides = SCENES[scene][1], ["prior.kind=simulated", *overrides]
    cfg = load_config(SlamConfig, None, overrides) if preset is None else preset_config(preset, overrides)
    loaded = [seq[i] for i in range(len(seq))]  # read or rendered outside the clock
    slam = Slam(cfg)
    start = time.perf_counter()
    for frame in loaded:
        slam.track(frame)
    rec = slam.finish()
    seconds = time.perf_counter() - start
    m = evaluate_trajectory(seq.gt_trajectory(), rec.trajectory())
    return {"scene": scene, "frames": rec.num_frames, "keyframes": rec.num_keyframes, "runs": slam.priors.runs,
            "transfers": slam.priors.transfers, "ate_se3_m": m["ate_se3_rmse_m"], "scale_error": m["scale_error"],
            "kitti_t_err_pct": m["kitti_t_err_pct"], "fps": rec.num_frames / seconds}


def format_row(setting: str, r: dict) -> str:
    t_err = "-" if r["kitti_t_err_pct"] is None else f"{r['kitti_t_err_pct']:.2f}"
    return (f"| {r['scene']} | {setting} | {r['frames']} | {r['keyframes']} | {r['runs']} | {r['transfers']} "
            f"| {r['ate_se3_m']:.4f} | {100 * r['scale_error']:+.2f} | {t_err} | {r['fps']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames per scene")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="overrides for the schedule rows, e.g. prior.min_coverage=0.6")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if "hololens" in args.scenes and not HOLOLENS.is_dir():
        print(f"{HOLOLENS} not found: hololens rows skipped", file=sys.stderr)
        args.scenes = [s for s in args.scenes if s != "hololens"]
    print("| scene | priors | frames | keyframes | prior runs | transfers | ATE SE3 m | scale err % | t_err % | fps |\n"
          "|---|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for scene in args.scenes:
        frames = min(SCENES[scene][0], args.max_frames or SCENES[scene][0])
        for setting, overrides in SETTINGS.items():
            extra = args.set if setting != "every" else []
            row = {"setting": setting, **run(scene, frames, [*overrides, *extra])}
            rows.append(row)
            print(format_row(setting, row), flush=True)
    if args.out:
        from metricslam.io.atomic import write_text_atomic

        write_text_atomic(args.out, json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
