"""Metric depth accuracy of a Metric3D checkpoint on Metric3D-style annotation files.

    python evaluation/eval_depth.py data/kitti_demo/test_annotations.json --weights W --dataset kitti --out DIR

Annotation file: {"files": [{"rgb": path, "depth": path, "depth_scale": S, "cam_in": [fx, fy, cx, cy]}]}, paths
absolute or relative to the json's folder or one of its ancestors (upstream writes them relative to its
repository root); read by metricslam.training.data.read_annotation, as for training. Prints AbsRel, SqRel, RMSE,
RMSE_log, log10, SILog, d1..d3 per image, averaged over images (upstream's convention) and pooled over all pixels;
writes metrics.json and per_image.csv with --out.
Datasets set the standard crop and cap: kitti = Garg crop, 80 m; nyu = Eigen crop, 10 m.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from metricslam.cli._depth_options import add_model_args, predictor_from_args
from metricslam.errors import InputError, MetricSlamError
from metricslam.geometry.camera import Intrinsics
from metricslam.io.atomic import write_text_atomic
from metricslam.io.images import read_depth, read_rgb
from metricslam.metrics.depth import METRICS, DepthMetricAccumulator
from metricslam.training.data import read_annotation

DATASETS = {"kitti": ("garg", 80.0), "nyu": ("eigen", 10.0), "none": (None, None)}


def evaluate(args: argparse.Namespace) -> dict:
    crop, cap = DATASETS[args.dataset]
    crop = crop if args.crop is None else (None if args.crop == "none" else args.crop)
    cap = cap if args.max_depth is None else args.max_depth
    entries = [e for path in args.annotations for e in read_annotation(path)][: args.limit]
    if not entries:
        raise InputError(f"{', '.join(args.annotations)}: no images to evaluate")
    predictor = predictor_from_args(args)
    acc = DepthMetricAccumulator(min_depth=args.min_depth, max_depth=cap, crop=crop)
    rows = []
    for start in range(0, len(entries), predictor.batch_size):
        chunk = entries[start:start + predictor.batch_size]
        rgbs = [read_rgb(e.rgb) for e in chunk]
        cams = [Intrinsics(*e.cam_in, rgb.shape[1], rgb.shape[0]) for e, rgb in zip(chunk, rgbs)]
        for e, rgb, pred in zip(chunk, rgbs, predictor.predict_batch(rgbs, cams)):
            gt = read_depth(e.depth, e.depth_scale)
            if gt.shape != rgb.shape[:2]:
                raise InputError(f"{e.depth}: depth is {gt.shape[1]}x{gt.shape[0]} but {e.rgb} is "
                                 f"{rgb.shape[1]}x{rgb.shape[0]}; pair each image with its own depth map")
            rows.append({"rgb": str(e.rgb), **acc.add(pred.depth, gt)})
    return {"variant": predictor.variant, "weights": str(args.weights), "input_size": list(predictor.input_size),
            "dataset": args.dataset, **acc.summary(), "images": rows}


def format_table(result: dict) -> str:
    header = ["image"] + list(METRICS)
    lines = [" ".join(f"{h:>9s}" for h in header)]
    for row in result["images"]:
        lines.append(f"{Path(row['rgb']).name[-9:]:>9s} " + " ".join(f"{row[m]:9.4f}" for m in METRICS))
    for label in ("per_image", "pooled"):
        lines.append(f"{label[:9]:>9s} " + " ".join(f"{result[label][m]:9.4f}" for m in METRICS))
    return "\n".join(lines)


def write_outputs(out: Path, result: dict) -> None:
    write_text_atomic(out / "metrics.json", json.dumps(result, indent=2))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["rgb", *METRICS, "num_pixels", "scale"])
    writer.writeheader()
    writer.writerows(result["images"])
    write_text_atomic(out / "per_image.csv", buffer.getvalue())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("annotations", nargs="+", help="annotation json file(s)")
    add_model_args(p)
    p.add_argument("--dataset", choices=tuple(DATASETS), default="none", help="standard crop and depth cap")
    p.add_argument("--crop", choices=("garg", "eigen", "none"), default=None, help="overrides the dataset's crop")
    p.add_argument("--max-depth", type=float, default=None, help="cap in metres; overrides the dataset's")
    p.add_argument("--min-depth", type=float, default=1e-3)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--out", default=None, help="folder for metrics.json and per_image.csv")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = evaluate(args)
    except MetricSlamError as exc:
        print(f"eval_depth: error: {exc}", file=sys.stderr)
        return 2
    print(f"{result['variant']} at input {result['input_size']}, crop {result['settings']['crop']}, "
          f"depth {result['settings']['min_depth']}..{result['settings']['max_depth']} m")
    print(format_table(result))
    if args.out:
        write_outputs(Path(args.out), result)
        print(f"wrote {Path(args.out) / 'metrics.json'} and per_image.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
