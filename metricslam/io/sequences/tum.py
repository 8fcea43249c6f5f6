"""TUM RGB-D layout: rgb.txt / depth.txt ('timestamp path' lines), groundtruth.txt (TUM trajectory).

Depth PNGs hold 5000 units per metre. Every RGB frame is kept; it gets the depth image nearest in time within
0.02 s (else none) and the ground-truth pose interpolated at its timestamp. Without a calibration file the
published calibration of the freiburg1/2/3 camera named in the folder name is used (fr1/fr2 are distorted).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from metricslam.errors import InputError
from metricslam.geometry.calibration import read_calibration
from metricslam.geometry.camera import Intrinsics
from metricslam.io.sequences.association import DEPTH_MAX_DT, associate_nearest, poses_for_frames
from metricslam.io.sequences.folder import CALIB_NAMES
from metricslam.io.sequences.recorded import ImageFiles, SequenceData, image_size
from metricslam.io.trajectory import read_trajectory

DEPTH_SCALE = 5000.0
# Published colour-camera calibrations of the TUM RGB-D benchmark (640x480, OpenCV radtan k1 k2 p1 p2 k3).
FREIBURG = {
    "1": Intrinsics(517.3, 516.5, 318.6, 255.3, 640, 480, "radtan", (0.2624, -0.9531, -0.0054, 0.0026, 1.1633)),
    "2": Intrinsics(520.9, 521.0, 325.1, 249.7, 640, 480, "radtan", (0.2312, -0.7849, -0.0033, -0.0001, 0.9172)),
    "3": Intrinsics(535.4, 539.2, 320.1, 247.6, 640, 480),
}


def read_file_list(path: Path) -> tuple[np.ndarray, list[Path]]:
    """Timestamps and paths (relative to the file's folder) of a TUM 'timestamp path' list."""
    times, paths = [], []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            times.append(float(parts[0]))
            paths.append(path.parent / parts[1])
        except (ValueError, IndexError):
            raise InputError(f"{path}:{line_no}: expected 'timestamp path', got '{line[:60]}'") from None
    if not paths:
        raise InputError(f"{path}: lists no images; expected lines 'timestamp path'")
    return np.asarray(times), paths


def freiburg_camera(root: Path) -> Intrinsics | None:
    """The published calibration of the freiburg camera named in the folder name, if any."""
    match = re.search(r"(?:freiburg|fr)([123])", root.name.lower())
    return FREIBURG[match.group(1)] if match else None


def read_tum(root: Path) -> SequenceData:
    timestamps, paths = read_file_list(root / "rgb.txt")
    source = ImageFiles(paths)
    width, height = image_size(source)
    calib = next((root / name for name in CALIB_NAMES if (root / name).is_file()), None)
    intrinsics: Intrinsics | None
    if calib is not None:
        intrinsics = read_calibration(calib, width, height)
    else:
        intrinsics = freiburg_camera(root)
        if intrinsics is not None and (intrinsics.width, intrinsics.height) != (width, height):
            raise InputError(
                f"{root}: the default freiburg calibration is for 640x480 images but {paths[0]} is {width}x{height}; "
                "pass --calib FILE"
            )
    depths = None
    if (root / "depth.txt").is_file():
        depth_times, depth_paths = read_file_list(root / "depth.txt")
        match = associate_nearest(timestamps, depth_times, DEPTH_MAX_DT)
        depths = [depth_paths[k] if k >= 0 else None for k in match]
    data = SequenceData(
        name=root.name, root=root, source=source, size=(width, height), timestamps=timestamps,
        intrinsics=intrinsics, depths=depths, depth_scale=DEPTH_SCALE,
    )
    gt = root / "groundtruth.txt"
    if gt.is_file():
        data.poses = poses_for_frames(read_trajectory(gt, fmt="tum"), timestamps, gt)
    return data
