"""``metricslam plot RUN_DIR``: redraw a saved run's pictures (trajectory, error over time, keyframes, map views)."""
from __future__ import annotations

import argparse

from metricslam.cli._options import add_run_parser, run_dir_argument
from metricslam.io.run_dir import GT_FILE
from metricslam.io.trajectory import FORMATS, read_trajectory
from metricslam.slam.reconstruction import Reconstruction
from metricslam.viz.run_plots import write_run_plots


def run(args: argparse.Namespace) -> int:
    run_dir = run_dir_argument(args)
    rec = Reconstruction.load(run_dir.path)
    gt = read_trajectory(args.gt, args.format) if args.gt else run_dir.read_ground_truth()
    for path in write_run_plots(rec, run_dir.path, gt, mesh=run_dir.read_mesh(), cloud=run_dir.read_cloud()):
        print(f"wrote {path}")
    if gt is None:
        print(f"no ground truth (pass --gt FILE or put {GT_FILE} in the run folder): error plot skipped")
    return 0


def register(subparsers) -> None:
    p = add_run_parser(subparsers, "plot", help="redraw the pictures of a saved run",
                       description="Redraw trajectory.png, translation_error.png (with ground truth), "
                                   "keyframes.png and map_views.png (from mesh.ply / cloud.ply) in RUN_DIR.")
    p.add_argument("--gt", metavar="FILE", help=f"ground-truth trajectory (default: RUN_DIR/{GT_FILE} if present)")
    p.add_argument("--format", default="auto", choices=("auto", *FORMATS), help="format of --gt (default auto)")
    p.set_defaults(func=run)
