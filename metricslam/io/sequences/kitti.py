"""KITTI odometry layout, given the sequence folder ``.../sequences/XX`` (or a dataset folder holding one sequence):

    image_2/*.png (colour, default; image_0 grey when there is no image_2), calib.txt (P0..P3), times.txt,
    ground truth poses/XX.txt at <seq>/poses/XX.txt or <seq>/../../poses/XX.txt.

KITTI ground truth is the pose of camera 0; for camera 2 it is moved by the rectified baseline in P2, so that
ground truth and images belong to the same camera.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from metricslam.errors import InputError
from metricslam.geometry.calibration import read_calibration, read_kitti_projections
from metricslam.io.images import list_images
from metricslam.io.sequences.recorded import ImageFiles, SequenceData, image_size, read_timestamps
from metricslam.io.trajectory import read_trajectory

FPS = 10.0


def sequence_root(root: Path) -> Path:
    """The sequence folder of ``root``: itself, or the one sequence under a dataset folder (``root/sequences/XX``)."""
    sequences = root / "sequences"
    if (root / "image_2").is_dir() or (root / "image_0").is_dir() or not sequences.is_dir():
        return root
    found = sorted(p for p in sequences.iterdir() if (p / "image_2").is_dir() or (p / "image_0").is_dir())
    if len(found) > 1:
        raise InputError(f"{root}: holds {len(found)} KITTI sequences ({', '.join(p.name for p in found)}); pass one "
                         f"of them, e.g. {found[0]}")
    return found[0] if found else root


def image_folder(root: Path) -> tuple[Path, int] | None:
    """(folder, camera index) of the frames: image_2 if present, else image_0 (``root`` may be a dataset folder
    holding one sequence)."""
    root = sequence_root(root)
    for camera in (2, 0):
        if (root / f"image_{camera}").is_dir():
            return root / f"image_{camera}", camera
    return None


def camera_from_cam0(projections: dict[int, np.ndarray], camera: int) -> np.ndarray:
    """T_cam_cam0 (4x4) from the rectified projections: P_i = K [I | t_i], so x_i = x_0 + K^-1 P_i[:, 3]."""
    P = projections[camera]
    T = np.eye(4)
    T[:3, 3] = np.linalg.solve(P[:, :3], P[:, 3])
    return T


def find_poses(root: Path) -> Path | None:
    for candidate in (root / "poses" / f"{root.name}.txt", root.parent.parent / "poses" / f"{root.name}.txt"):
        if candidate.is_file():
            return candidate
    return None


def read_kitti(root: Path) -> SequenceData:
    root = sequence_root(root)
    found = image_folder(root)
    if found is None:
        raise InputError(f"{root}: no image_2 or image_0 folder; pass the KITTI sequence folder (dataset/sequences/XX)")
    folder, camera = found
    source = ImageFiles(list_images(folder))
    width, height = image_size(source)
    n = len(source)
    times = root / "times.txt"
    calib = root / "calib.txt"
    data = SequenceData(
        name=f"kitti_{root.name}",
        root=root,
        source=source,
        size=(width, height),
        timestamps=read_timestamps(times, n) if times.is_file() else np.arange(n) / FPS,
        intrinsics=read_calibration(calib, width, height, camera=camera) if calib.is_file() else None,
    )
    poses_path = find_poses(root)
    if poses_path is not None:
        poses = read_trajectory(poses_path, fmt="kitti").poses
        if len(poses) != n:
            raise InputError(
                f"{poses_path}: {len(poses)} poses for {n} images in {folder}; use the ground truth of this sequence"
            )
        if camera != 0:
            if not calib.is_file():
                raise InputError(f"{root}: ground truth needs calib.txt to move camera-0 poses to camera {camera}")
            offset = np.linalg.inv(camera_from_cam0(read_kitti_projections(calib), camera))
            poses = poses @ offset
        data.poses = poses
    return data
