"""``metricslam plot RUN_DIR``: redraw a saved run's pictures (trajectory, error over time, keyframes, map views)."""
from __future__ import annotations

import argparse
from pathlib import Path

from metricslam.errors import InputError
from metricslam.io.trajectory import FORMATS, read_trajectory
from metricslam.slam.reconstruction import Reconstruction
from metricslam.viz.run_plots import GT_FILE, find_run_gt, write_run_plots


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder; pass the --out folder of 'metricslam run'")
    rec = Reconstruction.load(run_dir)
    gt = read_trajectory(args.gt, args.format) if args.gt else find_run_gt(run_dir)
    for path in write_run_plots(rec, run_dir, gt):
        print(f"wrote {path}")
    if gt is None:
        print(f"no ground truth (pass --gt FILE or put {GT_FILE} in the run folder): error plot skipped")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="redraw the pictures of a saved run",
                              description="Redraw trajectory.png, translation_error.png (with ground truth), "
                                          "keyframes.png and map_views.png (from mesh.ply / cloud.ply) in RUN_DIR.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="output folder of 'metricslam run'")
    p.add_argument("--gt", metavar="FILE", help=f"ground-truth trajectory (default: RUN_DIR/{GT_FILE} if present)")
    p.add_argument("--format", default="auto", choices=("auto", *FORMATS), help="format of --gt (default auto)")
    p.set_defaults(func=run)
