"""Generic folder layout (also what the synthetic generator writes):

    images/*.png|jpg        frames, sorted by name (or the images directly in the folder)
    depth/<stem>.png|npy    optional depth: uint16 PNG divided by the scale in depth_scale.txt, or .npy metres
    depth_scale.txt         optional PNG units per metre (default 1000)
    K.txt | calib.txt       3x3 K, or one line 'fx fy cx cy [k1 k2 p1 p2 [k3]]'
    poses.txt               optional T_wc ground truth: TUM, KITTI or 4x4 per line (one row per image if untimed)
    times.txt               optional one timestamp per line (else index / 30 fps)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from metricslam.errors import InputError
from metricslam.geometry.calibration import read_calibration
from metricslam.io.images import list_images
from metricslam.io.sequences.association import poses_for_frames
from metricslam.io.sequences.recorded import (
    ImageFiles,
    SequenceData,
    image_size,
    match_depth_folder,
    read_timestamps,
)
from metricslam.io.trajectory import read_trajectory

DEFAULT_FPS = 30.0
DEFAULT_DEPTH_SCALE = 1000.0
CALIB_NAMES = ("K.txt", "calib.txt")


def read_depth_scale(path: Path) -> float:
    """PNG depth units per metre from a one-number file."""
    try:
        scale = float(path.read_text().split()[0])
    except (IndexError, ValueError):
        raise InputError(f"{path}: expected one number, the depth PNG units per metre (e.g. 1000 for millimetres)") from None
    if not scale > 0:
        raise InputError(f"{path}: depth scale must be positive, got {scale}")
    return scale


def read_folder(root: Path) -> SequenceData:
    images_dir = root / "images" if (root / "images").is_dir() else root
    source = ImageFiles(list_images(images_dir))
    width, height = image_size(source)
    n = len(source)
    times_path = root / "times.txt"
    timestamps = read_timestamps(times_path, n) if times_path.is_file() else np.arange(n) / DEFAULT_FPS
    calib = next((root / name for name in CALIB_NAMES if (root / name).is_file()), None)
    scale_path = root / "depth_scale.txt"
    data = SequenceData(
        name=root.name,
        root=root,
        source=source,
        size=(width, height),
        timestamps=timestamps,
        intrinsics=None if calib is None else read_calibration(calib, width, height),
        depths=match_depth_folder(source, root / "depth") if (root / "depth").is_dir() else None,
        depth_scale=read_depth_scale(scale_path) if scale_path.is_file() else DEFAULT_DEPTH_SCALE,
    )
    if (root / "poses.txt").is_file():
        data.poses = poses_for_frames(read_trajectory(root / "poses.txt"), timestamps, root / "poses.txt")
    return data
