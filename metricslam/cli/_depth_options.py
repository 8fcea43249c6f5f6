"""Options and image loading shared by the commands that run the depth network (depth, measure) and by
evaluation/eval_depth.py. The leading underscore keeps this module out of subcommand discovery."""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from metricslam.depth.camera_guess import CameraGuess, intrinsics_for_image
from metricslam.depth.loading import load_predictor
from metricslam.depth.predictor import Metric3DPredictor
from metricslam.io.images import read_rgb


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, metavar="FILE|NAME",
                   help="checkpoint file (official or from `metricslam train`), or a name from `metricslam weights list`")
    p.add_argument("--variant", default=None, metavar="NAME",
                   help="model variant; read from a `metricslam train` checkpoint, inferred from an official file name")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input size (smaller is faster; rounded to a valid multiple); default official")
    p.add_argument("--focal", choices=("fx", "mean"), default="fx",
                   help="focal length of the de-canonical transform: fx (default) or (fx + fy) / 2")
    p.add_argument("--device", default=None, metavar="DEVICE", help="auto, cpu, cuda or cuda:N (default: auto, CUDA "
                   "if available)")


def add_intrinsics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fx", type=float, default=None, metavar="PX", help="focal length in pixels (of the image as given)")
    p.add_argument("--fy", type=float, default=None, metavar="PX", help="default: fx")
    p.add_argument("--cx", type=float, default=None, metavar="PX", help="default: width / 2")
    p.add_argument("--cy", type=float, default=None, metavar="PX", help="default: height / 2")
    p.add_argument("--calib", default=None, metavar="FILE", help="calibration file (fx fy cx cy [dist], K.txt, "
                   "sensor.yaml, ...)")
    p.add_argument("--sensor-width-mm", type=float, default=None, metavar="MM",
                   help="sensor long side in mm, used with the EXIF focal length when EXIF lacks the 35 mm value")


def predictor_from_args(args: argparse.Namespace) -> Metric3DPredictor:
    return load_predictor(args.weights, args.variant, device=args.device, input_size=args.input_size,
                          focal_mode=args.focal)


def load_image(path: Path, args: argparse.Namespace) -> tuple[np.ndarray, CameraGuess]:
    """The image (undistorted when the calibration has distortion) and its intrinsics."""
    rgb = read_rgb(path)
    h, w = rgb.shape[:2]
    guess = intrinsics_for_image(path, w, h, calib=args.calib, fx=args.fx, fy=args.fy, cx=args.cx, cy=args.cy,
                                 sensor_width_mm=args.sensor_width_mm)
    K = guess.intrinsics
    if K.is_distorted:
        rgb = cv2.undistort(rgb, K.K, np.asarray(K.dist_coeffs, dtype=np.float64))
        guess = CameraGuess(K.undistorted(), guess.source)
    return rgb, guess
