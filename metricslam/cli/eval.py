"""`metricslam eval`: trajectory accuracy of an estimate against ground truth (APE, RPE, KITTI metric)."""
from __future__ import annotations

import argparse
import json

from metricslam.io.atomic import write_text_atomic
from metricslam.io.trajectory import FORMATS, read_trajectory
from metricslam.metrics.kitti import SEGMENT_LENGTHS, kitti_odometry_error, path_distances
from metricslam.metrics.trajectory import ALIGN_MODES, RPE_UNITS, align, associate, ate, evaluate_trajectory, rpe


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="trajectory accuracy: APE, RPE, KITTI odometry metric",
        description="Compare an estimated trajectory with ground truth (evo APE/RPE, KITTI devkit metric).",
    )
    p.add_argument("--gt", required=True, metavar="FILE", help="ground-truth trajectory file (TUM, KITTI, EuRoC csv)")
    p.add_argument("--est", required=True, metavar="FILE", help="estimated trajectory file")
    p.add_argument("--format", default="auto", choices=("auto", *FORMATS), help="file format of both (default: auto)")
    p.add_argument(
        "--align", default="se3", choices=ALIGN_MODES,
        help="Umeyama alignment of the estimate, applied before APE, RPE and the KITTI metric (default: se3)",
    )
    p.add_argument("--max-diff", type=float, default=0.01, metavar="S", help="max timestamp difference for association, s")
    p.add_argument("--rpe-delta", type=float, default=1, metavar="N", help="RPE pose distance (default: 1)")
    p.add_argument("--rpe-unit", default="frames", choices=RPE_UNITS, help="unit of --rpe-delta (default: frames)")
    p.add_argument("--json", metavar="FILE", help="write all results to this JSON file")
    p.set_defaults(func=run)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def run(args: argparse.Namespace) -> int:
    gt = read_trajectory(args.gt, args.format)
    est = read_trajectory(args.est, args.format)
    gt_a, est_a = associate(gt, est, args.max_diff, names=(args.gt, args.est))
    aligned, _, _, scale = align(gt_a, est_a, args.align)
    ape = ate(gt_a, aligned, "none", max_diff=None)
    rel = rpe(gt_a, aligned, args.rpe_delta, args.rpe_unit, "none", max_diff=None)
    path_length = float(path_distances(gt_a.poses)[-1])
    kitti = kitti_odometry_error(gt_a.poses, aligned.poses) if path_length >= SEGMENT_LENGTHS[0] else None

    lines = [
        f"{len(gt_a)} poses paired; ground-truth path {path_length:.3f} m; alignment: {args.align}",
        f"APE translation (m)      rmse {_fmt(ape['rmse'])}  mean {_fmt(ape['mean'])}  median {_fmt(ape['median'])}"
        f"  std {_fmt(ape['std'])}  min {_fmt(ape['min'])}  max {_fmt(ape['max'])}",
        f"alignment scale          {scale:.6f}  (scale error 1 - s = {1.0 - scale:+.6f})",
        f"RPE per {args.rpe_delta:g} {args.rpe_unit:<8} trans rmse {_fmt(rel['trans_rmse'])} m"
        f"  mean {_fmt(rel['trans_mean'])} m  rot rmse {_fmt(rel['rot_rmse_deg'])} deg"
        f"  mean {_fmt(rel['rot_mean_deg'])} deg",
    ]
    if kitti is None:
        lines.append(f"KITTI devkit metric      not computed: ground-truth path shorter than {SEGMENT_LENGTHS[0]} m")
    else:
        lines.append(
            f"KITTI devkit metric      t_err {_fmt(kitti['t_err_pct'])} %  r_err {_fmt(kitti['r_err_deg_per_100m'])} "
            f"deg/100m  over {kitti['num_segments']} segments"
        )
    print("\n".join(lines))

    if args.json:
        report = {
            "gt": args.gt,
            "est": args.est,
            "format": args.format,
            "alignment": args.align,
            "max_diff_s": args.max_diff,
            "num_poses": len(gt_a),
            "path_length_m": path_length,
            "ape_m": {**ape, "scale": scale, "scale_error": 1.0 - scale},
            "rpe": {**rel, "delta": args.rpe_delta, "unit": args.rpe_unit},
            "kitti": kitti,
            "summary": evaluate_trajectory(gt_a, est_a, max_diff=None),
        }
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
