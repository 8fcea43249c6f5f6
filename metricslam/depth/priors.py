"""Where a keyframe's prior depth comes from: one interface, chosen by name in the SLAM config.

A prior maps a Frame (at processing resolution) to (depth in metres, confidence in [0, 1]) of the same size,
or None when it has nothing for that frame. ``metric`` says whether the depth is in metres (scale observable).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from metricslam.depth.prior_protocol import NETWORK_PRIOR_WEIGHT, DepthPrior
from metricslam.depth.simulated import SimulatedMetricDepth, SimulatedPriorConfig
from metricslam.errors import InputError, MetricSlamError
from metricslam.io.frame import Frame
from metricslam.io.images import read_depth, resize_depth

PRIOR_NAMES = ("sensor", "folder", "simulated", "none", "metric3d")


@dataclass
class PriorConfig:
    """Which depth prior feeds the BA and its options."""

    # none: pure monocular, arbitrary scale. simulated is a stand-in for a network, made from the sequence's
    # ground-truth depth (tests, benchmarks, the demo), so it is never the default.
    kind: str = "none"  # sensor | folder | simulated | none | metric3d
    folder: str | None = None  # for kind=folder: depth maps named like the images (.png with scale, or .npy metres)
    depth_scale: float = 1000.0  # units per metre of PNG depth maps in the folder
    simulated: SimulatedPriorConfig = field(default_factory=SimulatedPriorConfig)
    weights: str | None = None  # for kind=metric3d: checkpoint path or registry name
    variant: str | None = None  # for kind=metric3d: model variant (inferred from the weights name when possible)
    input_size: tuple[int, int] | None = None  # for kind=metric3d: network input (H, W); None = official size
    cache_dir: str | None = None  # for kind=metric3d: where predictions are cached for reruns
    device: str | None = None  # for kind=metric3d: None = CUDA if available else CPU
    # for kind=metric3d: the forward pass. auto = OpenVINO on a CPU when installed (vit_small in 0.3-0.5x of
    # torch's time there, same float32 outputs; metricslam.depth.openvino_backend), else torch. precision bf16:
    # faster on CPUs with bfloat16 units (OpenVINO vit_small 0.19x of torch fp32), depths differ from fp32.
    backend: Literal["auto", "torch", "openvino"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    # Per-pixel trust in the BA, as a factor on BAOptions.alpha (DROID's RGB-D weight). None = the prior's own:
    # 1 for sensor depth, 0.02 for network predictions (simulated, metric3d, folder), whose errors are spatially
    # correlated (smooth distortions, a per-frame scale): at full weight they shrank the synthetic room's
    # trajectory by ~20 %; at 0.02 the flow sets the shape and the priors only the scale (+0.3 %).
    weight: float | None = None
    # Which keyframes run the prior (metricslam.slam.prior_schedule): 'every' keyframe, or 'coverage': only where
    # no recent prior keyframe's prior, reprojected with the current poses, covers min_coverage of the view (and at
    # least every max_gap keyframes); the others receive that prior transferred by reprojection. 'auto' =
    # coverage for metric3d (a network forward costs seconds on a CPU), every for the others.
    schedule: Literal["auto", "every", "coverage"] = "auto"
    min_coverage: float = 0.7  # fraction of the new keyframe's BA grid a recent prior keyframe must cover
    max_gap: int = 8  # keyframes at most between two runs of the prior
    candidates: int = 4  # recent prior keyframes considered as transfer sources
    transfer: bool = True  # False: keyframes between prior keyframes get no prior at all
    transfer_weight: float = 0.5  # confidence factor of a transferred prior (it also carries the pose errors)
    # Keyframes after which a prior predicted by the background worker enters the BA (the tracker waits only if it
    # is not ready by then; a fixed point keeps runs deterministic). 0 = predict in line, no worker. None = auto:
    # 2 for metric3d on an accelerator (the forward overlaps tracking), else 0 (on a CPU the forward already uses
    # every core, and late priors cost accuracy: metricslam.slam.prior_schedule.resolve_schedule).
    lag: int | None = None


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


def make_prior(config: PriorConfig) -> DepthPrior:
    """Instantiate the prior named by ``config.kind``."""
    kind = config.kind
    if kind == "none":
        return NoPrior()
    if kind == "sensor":
        return SensorPrior()
    if kind == "simulated":
        return SimulatedPrior(config.simulated)
    if kind == "folder":
        if not config.folder:
            raise MetricSlamError("--prior folder needs the depth maps: pass --depth DIR (or set prior.folder)")
        return FolderPrior(config.folder, config.depth_scale)
    if kind == "metric3d":
        from metricslam.depth.metric3d_prior import make_metric3d_prior

        return make_metric3d_prior(config)
    raise MetricSlamError(f"unknown prior '{kind}'; choose one of {', '.join(PRIOR_NAMES)}")
