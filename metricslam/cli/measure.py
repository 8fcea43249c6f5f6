"""``metricslam measure``: the metric distance between two pixels' 3D points in one image (single-view metrology)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from metricslam.cli._depth_options import add_intrinsics_args, add_model_args, load_image, predictor_from_args
from metricslam.errors import InputError
from metricslam.geometry.projective import backproject


def parse_point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a pixel; write it as x,y (e.g. 120,340)") from None
    return x, y


def run(args: argparse.Namespace) -> int:
    rgb, guess = load_image(Path(args.image), args)
    h, w = rgb.shape[:2]
    for x, y in args.points:
        if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
            raise InputError(f"{args.image}: pixel ({x:g}, {y:g}) is outside the {w}x{h} image; pick pixels inside it")
    depth = predictor_from_args(args).predict(rgb, guess.intrinsics).depth
    points = backproject(depth, guess.intrinsics)
    xyz = []
    for i, (x, y) in enumerate(args.points, 1):
        u, v = int(round(x)), int(round(y))
        if depth[v, u] <= 0:
            raise InputError(f"{args.image}: no valid depth at pixel ({u}, {v}); pick another pixel")
        xyz.append(points[v, u].astype(np.float64))
        X, Y, Z = xyz[-1]
        print(f"point {i} ({u}, {v}): depth {Z:.3f} m, camera XYZ ({X:.3f}, {Y:.3f}, {Z:.3f}) m")
    K = guess.intrinsics
    print(f"distance: {np.linalg.norm(xyz[0] - xyz[1]):.3f} m  (fx {K.fx:.1f} px from {guess.source})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("measure", help="metric distance between two pixels of one image (Metric3D)",
                              description="Predict metric depth and print the 3D distance between two pixels.")
    p.add_argument("image", metavar="IMAGE", help="image file")
    p.add_argument("--points", type=parse_point, nargs=2, required=True, metavar=("X1,Y1", "X2,Y2"),
                   help="the two pixels")
    add_model_args(p)
    add_intrinsics_args(p)
    p.set_defaults(func=run)
