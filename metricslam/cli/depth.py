"""``metricslam depth``: metric depth, confidence, normals and a coloured point cloud for images."""
from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from metricslam.cli._depth_options import add_intrinsics_args, add_model_args, load_image, predictor_from_args
from metricslam.depth.camera_guess import CameraGuess
from metricslam.depth.predictor import DepthPrediction
from metricslam.errors import InputError
from metricslam.geometry.camera import Intrinsics
from metricslam.geometry.projective import backproject
from metricslam.io.atomic import atomic_path, write_text_atomic
from metricslam.io.images import IMAGE_SUFFIXES, list_images, write_depth_png, write_rgb
from metricslam.io.ply import write_ply
from metricslam.io.run_dir import OutputLayout, RunDir
from metricslam.io.sequences import open_sequence
from metricslam.viz.depth_image import colorize_depth


@dataclass
class DepthInput:
    """One image to predict: the stem its outputs are named by, its key in cameras.json, and how to load it."""

    stem: str
    key: str
    load: Callable[[], tuple[np.ndarray, CameraGuess]]


def image_files(path: Path) -> list[Path] | None:
    """An image, or the images directly in a folder; None when ``path`` is neither (a video or dataset layout)."""
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return [path]
    if path.is_dir():
        return list_images(path, required=False) or None
    return None


def depth_inputs(path: Path, args: argparse.Namespace) -> list[DepthInput]:
    """The images of INPUT: an image, a folder of images (intrinsics per image: --calib, flags, EXIF, guess), or a
    video or dataset folder in any layout `metricslam run` reads (its calibration, or --calib)."""
    files = image_files(path)
    if files is not None:
        return [DepthInput(f.stem, f.name, functools.partial(load_image, f, args)) for f in files]
    if not path.exists():
        raise InputError(f"{path}: not found; pass an image, a folder of images, a video or a dataset folder")
    if any(getattr(args, flag) is not None for flag in ("fx", "fy", "cx", "cy")):
        raise InputError(f"{path}: --fx/--fy/--cx/--cy apply to single images; for a video or dataset pass "
                         "--calib FILE")
    seq = open_sequence(path, calib=args.calib, guess_camera=True)
    source = "calibration" if args.calib else "sequence"

    def load(i: int) -> tuple[np.ndarray, CameraGuess]:
        return seq[i].rgb, CameraGuess(seq.intrinsics, source)

    names = [seq.data.source.stem(int(j)) for j in seq.source_indices]
    return [DepthInput(name, name, functools.partial(load, i)) for i, name in enumerate(names)]


def earlier_depth_outputs(folder: Path) -> list[Path]:
    """Every file an earlier `metricslam depth` run wrote into ``folder``, found from its depth maps' names."""
    stems = {p.name[: -len(suffix)] for suffix in ("_depth.npy", "_depth.png") for p in folder.glob(f"*{suffix}")}
    return [folder / f"{stem}{suffix}" for stem in stems for suffix in OUTPUT_SUFFIXES]


CAMERAS_FILE = "cameras.json"
OUTPUT_SUFFIXES = ("_depth.png", "_depth.npy", "_depth_color.png", "_confidence.png", "_normals.png", ".ply")
DEPTH_OUTPUTS = OutputLayout("depth", files=(CAMERAS_FILE,), extra=earlier_depth_outputs)


def write_outputs(out: Path, stem: str, rgb: np.ndarray, K: Intrinsics, pred: DepthPrediction) -> None:
    """Depth PNG (mm) and .npy (m), colour rendering, confidence, normals (ViT) and a coloured PLY."""
    write_depth_png(out / f"{stem}_depth.png", pred.depth, scale=1000.0)
    with atomic_path(out / f"{stem}_depth.npy") as tmp:
        np.save(tmp, pred.depth.astype(np.float32))
    write_rgb(out / f"{stem}_depth_color.png", colorize_depth(pred.depth))
    confidence = (np.clip(pred.confidence, 0.0, 1.0) * 255).round().astype(np.uint8)
    with atomic_path(out / f"{stem}_confidence.png") as tmp:
        cv2.imwrite(str(tmp), confidence)
    valid = pred.depth > 0
    normals = None
    if pred.normals is not None:
        write_rgb(out / f"{stem}_normals.png", ((pred.normals + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8))
        normals = pred.normals[valid]
    write_ply(out / f"{stem}.ply", backproject(pred.depth, K)[valid], rgb[valid], normals)


def run(args: argparse.Namespace) -> int:
    out = RunDir(args.out, DEPTH_OUTPUTS, args.overwrite)
    out.check()
    inputs = depth_inputs(Path(args.input), args)
    predictor = predictor_from_args(args)
    first = inputs[0].load()  # the camera of the first image is checked before anything is written
    out.prepare()
    cameras = {}
    step = predictor.batch_size
    with tqdm(total=len(inputs), unit="img", disable=len(inputs) == 1) as bar:
        for start in range(0, len(inputs), step):
            chunk = inputs[start:start + step]
            loaded = [first if start + k == 0 else item.load() for k, item in enumerate(chunk)]
            preds = predictor.predict_batch([rgb for rgb, _ in loaded], [g.intrinsics for _, g in loaded])
            for item, (rgb, guess), pred in zip(chunk, loaded, preds):
                write_outputs(out.path, item.stem, rgb, guess.intrinsics, pred)
                K = guess.intrinsics
                cameras[item.key] = {"fx": K.fx, "fy": K.fy, "cx": K.cx, "cy": K.cy, "width": K.width,
                                     "height": K.height, "source": guess.source}
            bar.update(len(chunk))
    write_text_atomic(out / CAMERAS_FILE, json.dumps(cameras, indent=2))
    print(f"wrote depth for {len(inputs)} image(s) to {out.path}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("depth", help="metric depth, normals and a point cloud from images (Metric3D)",
                              description="Metric depth for an image, a folder of images, a video or a dataset "
                                          "folder (any layout `metricslam run` reads) with a Metric3D model. Writes "
                                          "per image STEM_depth.png (mm), STEM_depth.npy (m), STEM_depth_color.png, "
                                          "STEM_confidence.png, STEM_normals.png (ViT), STEM.ply and cameras.json.")
    p.add_argument("input", metavar="INPUT", help="an image, a folder of images, a video or a dataset folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier depth run in --out "
                   "(without it such a folder is refused; other files there are kept)")
    add_model_args(p)
    add_intrinsics_args(p)
    p.set_defaults(func=run)
