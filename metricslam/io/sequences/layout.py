"""One entry point for every input: detect the layout, read it, apply the caller's overrides."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from metricslam.depth.camera_guess import guess_sequence_camera
from metricslam.errors import InputError
from metricslam.geometry.calibration import read_calibration
from metricslam.geometry.camera import Intrinsics
from metricslam.io.images import IMAGE_SUFFIXES
from metricslam.io.sequences.association import poses_for_frames
from metricslam.io.sequences.euroc import mav_folder, read_euroc
from metricslam.io.sequences.folder import read_folder
from metricslam.io.sequences.kitti import image_folder, read_kitti
from metricslam.io.sequences.recorded import (
    ImageFiles,
    RecordedSequence,
    Resize,
    SequenceData,
    match_depth_folder,
)
from metricslam.io.sequences.tum import read_tum
from metricslam.io.sequences.video import VIDEO_SUFFIXES, read_video
from metricslam.io.trajectory import read_trajectory

READERS: dict[str, Callable[[Path], SequenceData]] = {
    "kitti": read_kitti,
    "tum": read_tum,
    "euroc": read_euroc,
    "folder": read_folder,
    "video": read_video,
}
LAYOUT_HELP = (
    "expected a video file, a KITTI sequence folder (image_2/), a TUM RGB-D folder (rgb.txt), "
    "an EuRoC folder (mav0/cam0/data/) or a folder with images/"
)


def detect_layout(path: str | os.PathLike) -> str:
    """'kitti', 'tum', 'euroc', 'folder' or 'video' from what the path holds."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return "video"
        raise InputError(f"{path}: not a video file ({', '.join(VIDEO_SUFFIXES)}); {LAYOUT_HELP}")
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder; check the path")
    if mav_folder(path) is not None:
        return "euroc"
    if (path / "rgb.txt").is_file():
        return "tum"
    if image_folder(path) is not None:
        return "kitti"
    if (path / "images").is_dir() or any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        return "folder"
    raise InputError(f"{path}: cannot tell the layout of this folder; {LAYOUT_HELP}")


def open_sequence(
    source: str | os.PathLike,
    calib: str | os.PathLike | Intrinsics | None = None,
    depth: str | os.PathLike | None = None,
    depth_scale: float | None = None,
    gt: str | os.PathLike | None = None,
    stride: int = 1,
    start: int = 0,
    end: int | None = None,
    resize: Resize = None,
    layout: str = "auto",
    guess_camera: bool = False,
) -> RecordedSequence:
    """Open a video or dataset folder as a Sequence.

    calib: calibration file (any format read_calibration knows) or Intrinsics, replacing the layout's own.
    depth: folder of depth maps named like the images (.png scaled by ``depth_scale`` units per metre, or .npy m).
    gt: T_wc trajectory file (TUM matched by time; KITTI / 4x4 rows: one per image, before selection).
    start/end/stride: Python slice of the frames. resize: (width, height) or a target area in pixels (aspect kept).
    guess_camera: without calibration (none given, none in the layout), use the first image's EXIF focal length or
    the default guess of metricslam.depth.camera_guess, with a warning; otherwise that is an InputError.
    """
    path = Path(source)
    if layout == "auto":
        layout = detect_layout(path)
    elif layout not in READERS:
        raise InputError(f"unknown layout '{layout}'; use auto or one of {', '.join(READERS)}")
    elif not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path")
    data = READERS[layout](path)
    width, height = data.size
    if isinstance(calib, Intrinsics):
        if (calib.width, calib.height) != data.size:
            raise InputError(
                f"{path}: the given intrinsics are for {calib.width}x{calib.height} but the images are {width}x{height}"
            )
        data.intrinsics = calib
    elif calib is not None:
        data.intrinsics = read_calibration(calib, width, height)
    if data.intrinsics is None and guess_camera:
        first = data.source.paths[0] if isinstance(data.source, ImageFiles) else None
        data.intrinsics = guess_sequence_camera(path, first, width, height).intrinsics
    if depth is not None:
        data.depths = match_depth_folder(data.source, Path(depth), range(len(data.source))[start:end:stride])
    if depth_scale is not None:
        if not depth_scale > 0:
            raise InputError(f"depth_scale must be positive (PNG units per metre), got {depth_scale}")
        data.depth_scale = float(depth_scale)
    if gt is not None:
        data.poses = poses_for_frames(read_trajectory(gt), data.timestamps, Path(gt))
    return RecordedSequence(data, start=start, end=end, stride=stride, resize=resize)
