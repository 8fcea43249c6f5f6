"""A recorded sequence: frames on disk (image files or a video) plus what a layout reader found beside them.

Layout readers only describe the data (``SequenceData``); ``RecordedSequence`` does the rest for all of them: frame
selection, lazy loading, size checks, undistortion and resizing, with intrinsics and depth following.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from metricslam.errors import InputError
from metricslam.geometry.camera import Intrinsics
from metricslam.io.frame import Frame
from metricslam.io.images import read_depth, read_rgb
from metricslam.io.sequences.base import Sequence
from metricslam.io.trajectory import Trajectory

DEPTH_SUFFIXES = (".png", ".npy")

Resize = tuple[int, int] | int | float | None


class FrameSource(Protocol):
    """Raw RGB images addressed by index."""

    def __len__(self) -> int: ...

    def read(self, i: int) -> np.ndarray:
        """RGB uint8 HxWx3 of raw frame ``i``."""

    def label(self, i: int) -> str:
        """Where frame ``i`` comes from, for error messages."""

    def stem(self, i: int) -> str:
        """Short name of frame ``i`` (file stem); depth files are matched to frames by it."""


class ImageFiles:
    """Frames stored as one image file each."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> np.ndarray:
        return read_rgb(self.paths[i])

    def label(self, i: int) -> str:
        return str(self.paths[i])

    def stem(self, i: int) -> str:
        return self.paths[i].stem


@dataclass
class SequenceData:
    """What a layout reader found. Per-frame lists are indexed like ``source``.

    intrinsics: raw camera (possibly distorted), None when the layout holds no calibration.
    size: (width, height) of the raw images. depths: depth file per frame (None entries = no depth for that frame).
    depth_scale: PNG units per metre. poses: (N,4,4) T_wc with NaN rows where there is no ground truth.
    """

    name: str
    root: Path
    source: FrameSource
    size: tuple[int, int]
    timestamps: np.ndarray
    intrinsics: Intrinsics | None = None
    depths: list[Path | None] | None = None
    depth_scale: float = 1000.0
    poses: np.ndarray | None = None


def image_size(source: FrameSource) -> tuple[int, int]:
    """(width, height) of the first frame."""
    first = source.read(0)
    return int(first.shape[1]), int(first.shape[0])


def match_depth_folder(source: FrameSource, folder: Path, frames: Iterable[int] | None = None) -> list[Path | None]:
    """Depth files of ``folder`` matched to the frames by name (same stem, .png or .npy), one entry per frame of
    ``source``. Only the frames ``frames`` must have one (the other entries are None); without ``frames`` the
    folder must hold exactly one per frame."""
    if not folder.is_dir():
        raise InputError(f"{folder}: depth folder not found; check the path")
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in DEPTH_SUFFIXES}
    indices = list(range(len(source)) if frames is None else frames)
    matched: list[Path | None] = [None] * len(source)
    missing = []
    for i in indices:
        matched[i] = files.get(source.stem(i))
        if matched[i] is None:
            missing.append(source.stem(i))
    if missing:
        names = "" if isinstance(source, ImageFiles) else "; video frames are named by their index from 000000"
        raise InputError(
            f"{folder}: no depth map for {len(missing)} of the {len(indices)} selected images (first: {missing[0]}, "
            f"expected {missing[0]}.png or {missing[0]}.npy){names}; the depth folder needs one file per image, "
            "named like the image"
        )
    if frames is None and len(files) != len(source):
        raise InputError(f"{folder}: {len(files)} depth maps for {len(source)} images; the depth folder needs one "
                         "file per image with the image's name (.png or .npy)")
    return matched


def read_timestamps(path: Path, count: int) -> np.ndarray:
    """One timestamp (seconds) per line; InputError unless there are exactly ``count``."""
    try:
        times = np.atleast_1d(np.loadtxt(path, dtype=np.float64, comments="#", ndmin=1))
    except ValueError as exc:
        raise InputError(f"{path}: cannot read timestamps ({exc}); expected one number per line") from None
    if times.ndim != 1 or len(times) != count:
        raise InputError(f"{path}: {times.size} timestamps for {count} images; write one timestamp per image")
    return times


def target_size(width: int, height: int, resize: Resize) -> tuple[int, int] | None:
    """Output size for ``resize``: None, (width, height), or a target area in pixels (aspect ratio kept)."""
    if resize is None:
        return None
    if isinstance(resize, (int, float)):
        if resize <= 0:
            raise InputError(f"resize area must be positive, got {resize}")
        s = math.sqrt(float(resize) / (width * height))
        return max(1, round(width * s)), max(1, round(height * s))
    w, h = (int(v) for v in resize)
    if w <= 0 or h <= 0:
        raise InputError(f"resize must be (width, height) with positive values, got {tuple(resize)}")
    return w, h


class RecordedSequence(Sequence):
    """Frames [start:end:stride] of ``data``, loaded on access, undistorted and resized on the way."""

    def __init__(self, data: SequenceData, start: int = 0, end: int | None = None, stride: int = 1,
                 resize: Resize = None) -> None:
        if data.intrinsics is None:
            raise InputError(
                f"{data.root}: no calibration found; pass --calib FILE (fx fy cx cy, K.txt, sensor.yaml, KITTI calib.txt)"
            )
        if (data.intrinsics.width, data.intrinsics.height) != data.size:
            raise InputError(
                f"{data.root}: calibration is for {data.intrinsics.width}x{data.intrinsics.height} images but the "
                f"images are {data.size[0]}x{data.size[1]}; use the calibration of this camera at this resolution"
            )
        if stride < 1:
            raise InputError(f"stride must be >= 1, got {stride}")
        self.data = data
        self.name = data.name
        self._ids = np.arange(len(data.source))[start:end:stride]
        if len(self._ids) == 0:
            raise InputError(
                f"{data.root}: start={start} end={end} stride={stride} select none of its {len(data.source)} frames"
            )
        self._raw = data.intrinsics
        pinhole = self._raw.undistorted() if self._raw.is_distorted else self._raw
        self._size = target_size(pinhole.width, pinhole.height, resize)
        self._intrinsics = pinhole if self._size is None else pinhole.resized(*self._size)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def source_indices(self) -> np.ndarray:
        """Indices into ``data.source`` of the selected frames."""
        return self._ids.copy()

    @property
    def intrinsics(self) -> Intrinsics:
        return self._intrinsics

    @property
    def timestamps(self) -> np.ndarray:
        return self.data.timestamps[self._ids].copy()

    @property
    def has_depth(self) -> bool:
        depths = self.data.depths
        return depths is not None and any(depths[j] is not None for j in self._ids)

    @property
    def has_gt(self) -> bool:
        return self.data.poses is not None and bool(np.isfinite(self.data.poses[self._ids, 0, 0]).any())

    def gt_trajectory(self) -> Trajectory | None:
        if not self.has_gt or self.data.poses is None:
            return None
        poses = self.data.poses[self._ids]
        known = np.isfinite(poses[:, 0, 0])
        return Trajectory(poses[known].copy(), self.timestamps[known])

    def __getitem__(self, i: int) -> Frame:
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range for a sequence of {len(self)} frames")
        i = i % len(self)
        j = int(self._ids[i])
        pose = None
        if self.data.poses is not None and np.isfinite(self.data.poses[j, 0, 0]):
            pose = self.data.poses[j].copy()
        return Frame(
            index=i,
            timestamp=float(self.data.timestamps[j]),
            rgb=self._load_rgb(j),
            intrinsics=self._intrinsics,
            depth=self._load_depth(j),
            pose_wc=pose,
            name=self.data.source.stem(j),
        )

    def _load_rgb(self, j: int) -> np.ndarray:
        source = self.data.source
        rgb = source.read(j)
        if (rgb.shape[1], rgb.shape[0]) != self.data.size:
            w, h = self.data.size
            raise InputError(
                f"{source.label(j)}: image is {rgb.shape[1]}x{rgb.shape[0]} but {source.label(0)} is {w}x{h}; "
                "all images of a sequence must have the same size"
            )
        if self._raw.is_distorted:
            rgb = self._raw.undistort_image(rgb)
        if self._size is not None and self._size != (rgb.shape[1], rgb.shape[0]):
            shrink = self._size[0] < rgb.shape[1]
            rgb = cv2.resize(rgb, self._size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return rgb

    def _load_depth(self, j: int) -> np.ndarray | None:
        path = None if self.data.depths is None else self.data.depths[j]
        if path is None:
            return None
        depth = read_depth(path, self.data.depth_scale)
        if (depth.shape[1], depth.shape[0]) != self.data.size:
            w, h = self.data.size
            raise InputError(
                f"{path}: depth map is {depth.shape[1]}x{depth.shape[0]} but the images are {w}x{h}; "
                "depth must be pixel-aligned with the images"
            )
        if self._raw.is_distorted:
            depth = self._raw.undistort_image(depth, interpolation=cv2.INTER_NEAREST)
        if self._size is not None and self._size != (depth.shape[1], depth.shape[0]):
            # NEAREST_EXACT samples at pixel centres, matching Intrinsics.resized; plain NEAREST is offset.
            depth = cv2.resize(depth, self._size, interpolation=cv2.INTER_NEAREST_EXACT)
        return depth
