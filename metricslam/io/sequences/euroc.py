"""EuRoC ASL layout (the folder holding mav0, or mav0 itself):

    mav0/cam0/data/<ns>.png, mav0/cam0/sensor.yaml (pinhole radtan/equidistant, T_BS),
    ground truth mav0/state_groundtruth_estimate0/data.csv (body poses, moved to cam0 with T_BS) or, when that
    is absent, a camera-frame mav0/groundtruth*_tum.txt.

Images are undistorted by the sequence (the yielded intrinsics have no distortion); timestamps are seconds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from metricslam.errors import InputError
from metricslam.geometry.calibration import read_sensor_yaml
from metricslam.io.images import list_images
from metricslam.io.sequences.association import poses_for_frames
from metricslam.io.sequences.recorded import ImageFiles, SequenceData, image_size
from metricslam.io.trajectory import Trajectory, read_trajectory


def mav_folder(root: Path) -> Path | None:
    for candidate in (root / "mav0", root):
        if (candidate / "cam0" / "data").is_dir():
            return candidate
    return None


def ns_to_seconds(stems: list[str], folder: Path) -> np.ndarray:
    try:
        ns = np.asarray([int(s) for s in stems], dtype=np.int64)
    except ValueError:
        raise InputError(f"{folder}: EuRoC image names must be nanosecond timestamps (e.g. 1403715273262142976.png)") from None
    # Split whole seconds from the remainder so no nanosecond digits are lost before the final float conversion.
    return (ns // 10**9).astype(np.float64) + (ns % 10**9).astype(np.float64) * 1e-9


def read_body_groundtruth(path: Path, T_BS: np.ndarray | None) -> Trajectory:
    """state_groundtruth_estimate0/data.csv (ns, p xyz, q wxyz, ...) as cam0 poses T_WB @ T_BS."""
    if T_BS is None:
        raise InputError(f"{path}: body ground truth needs T_BS in cam0/sensor.yaml to give camera poses; add it")
    body = read_trajectory(path, "euroc")
    return Trajectory(body.poses @ T_BS, body.timestamps)


def read_euroc(root: Path) -> SequenceData:
    mav = mav_folder(root)
    if mav is None:
        raise InputError(f"{root}: no mav0/cam0/data folder; pass the EuRoC sequence folder that holds mav0")
    folder = mav / "cam0" / "data"
    paths = list_images(folder)
    source = ImageFiles(paths)
    timestamps = ns_to_seconds([p.stem for p in paths], folder)
    sensor = mav / "cam0" / "sensor.yaml"
    intrinsics, T_BS = read_sensor_yaml(sensor) if sensor.is_file() else (None, None)
    width, height = image_size(source)
    if intrinsics is not None and (intrinsics.width, intrinsics.height) != (width, height):
        raise InputError(
            f"{sensor}: resolution {intrinsics.width}x{intrinsics.height} but {paths[0]} is {width}x{height}; "
            "use this camera's sensor.yaml"
        )
    name = root.name if root != mav else mav.parent.name
    data = SequenceData(name=name, root=root, source=source, size=(width, height), timestamps=timestamps,
                        intrinsics=intrinsics)
    body_gt = mav / "state_groundtruth_estimate0" / "data.csv"
    cam_gt = sorted(mav.glob("groundtruth*_tum.txt"))
    if body_gt.is_file():
        data.poses = poses_for_frames(read_body_groundtruth(body_gt, T_BS), timestamps, body_gt)
    elif cam_gt:
        data.poses = poses_for_frames(read_trajectory(cam_gt[0], fmt="tum"), timestamps, cam_gt[0])
    return data
