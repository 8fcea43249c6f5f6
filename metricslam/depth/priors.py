"""Where a keyframe's prior depth comes from: one interface, chosen by name in the SLAM config.

The SLAM config's prior section (``metricslam.slam.config.PriorConfig``) names one and
``metricslam.slam.prior_factory.make_prior`` makes it. A prior maps a Frame (at processing resolution) to (depth in
metres, confidence in [0, 1]) of the same size, or None when it has nothing for that frame. ``metric`` says whether the depth is in metres (scale observable).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from metricslam.depth.prior_protocol import NETWORK_PRIOR_WEIGHT
from metricslam.depth.simulated import SimulatedMetricDepth, SimulatedPriorConfig
from metricslam.errors import InputError
from metricslam.io.frame import Frame
from metricslam.io.images import read_depth, resize_depth


class NoPrior:
    """Pure monocular: no depth, scale arbitrary."""

    name, metric, ba_weight = "none", False, 0.0

    def __call__(self, frame: Frame) -> None:
        return None


class SensorPrior:
    """Depth images delivered with the sequence (RGB-D)."""

    name, metric, ba_weight = "sensor", True, 1.0

    def __call__(self, frame: Frame) -> tuple[np.ndarray, np.ndarray] | None:
        if frame.depth is None:
            return None
        depth = frame.depth.astype(np.float32)
        return depth, (depth > 0).astype(np.float32)


class SimulatedPrior:
    """Ground-truth depth corrupted like a zero-shot metric network's output (tests, benchmarks, demo)."""

    name, metric, ba_weight = "simulated", True, NETWORK_PRIOR_WEIGHT

    def __init__(self, config: SimulatedPriorConfig):
        self.model = SimulatedMetricDepth(config)

    def __call__(self, frame: Frame) -> tuple[np.ndarray, np.ndarray] | None:
        if frame.depth is None:
            return None
        return self.model.predict(frame.depth, frame.index)


class FolderPrior:
    """Precomputed depth maps (any network) named like the images: '<stem>.png' (scaled) or '<stem>.npy' (m)."""

    name, metric, ba_weight = "folder", True, NETWORK_PRIOR_WEIGHT

    def __init__(self, folder: str | os.PathLike, depth_scale: float = 1000.0):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"{self.folder}: depth prior folder not found; pass --depth DIR with one depth map per image")
        self.files = {p.stem: p for p in sorted(self.folder.iterdir()) if p.suffix.lower() in (".png", ".npy")}
        if not self.files:
            raise InputError(f"{self.folder}: no .png or .npy depth maps; write one per image, named like the image")
        self.depth_scale = depth_scale

    def __call__(self, frame: Frame) -> tuple[np.ndarray, np.ndarray] | None:
        stem = Path(frame.name).stem if frame.name else None
        path = self.files.get(stem) if stem else None
        if path is None:
            raise InputError(
                f"{self.folder}: no depth map named '{stem}.png' or '{stem}.npy' for image '{frame.name}'; "
                "the depth folder must hold one map per image with the same name"
            )
        depth = read_depth(path, self.depth_scale)
        if depth.shape != (frame.height, frame.width):
            depth = resize_depth(depth, (frame.width, frame.height))
        return depth, (depth > 0).astype(np.float32)
