"""Training data: Metric3D-style annotation files, several mixed with balanced sampling across data sets.

Annotation file (json): {"files": [{"rgb": path, "depth": path, "depth_scale": S, "cam_in": [fx, fy, cx, cy],
optional "normal": path, optional "sem": path}]}. Paths are relative to the json's folder (or absolute); as
upstream writes them relative to its repository root, a path not found there is looked up in the json's parent
folders. Depth: 16-bit PNG (value / depth_scale = metres, 0 invalid) or .npy metres. Normals: .npy float HxWx3 or a
3-channel PNG (R, G, B = x, y, z mapped from [-1, 1] to [0, max]); unit vectors in the camera frame (x right,
y down, z forward), zero = no normal. 'sem' (semantic labels) is accepted and not used.

Sampling: every draw of an epoch is (data set, index, seed); the seed drives that sample's augmentation and loss
sampling, so a batch is the same whatever the number of processes or data-loader workers, and a run resumed
from a checkpoint sees exactly the batches it would have seen.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset, Sampler

from metricslam.errors import InputError
from metricslam.geometry.camera import Intrinsics
from metricslam.io.images import read_depth, read_rgb

# How many folders above the json a relative path may be resolved against (upstream's repository-root paths).
SEARCH_LEVELS = 3
SampleKey = tuple[int, int, int]  # (data set, index in it, seed)


@dataclass
class Sample:
    """One training image and its labels, transformed step by step.

    ``depth`` is the training target; ``depth * depth_unit`` is the metric z-depth of the scene seen through
    ``intrinsics`` (the true camera of ``rgb``), so unprojecting it gives the sample's 3D points in metres.
    ``valid`` marks pixels with a label (not padding, not missing depth).
    """

    rgb: np.ndarray  # uint8 HxWx3
    depth: np.ndarray  # float32 HxW
    valid: np.ndarray  # bool HxW
    intrinsics: Intrinsics
    depth_unit: float = 1.0
    normal: np.ndarray | None = None  # float32 HxWx3, zero where unknown

    def with_(self, **changes: Any) -> Sample:
        return replace(self, **changes)


@dataclass(frozen=True)
class AnnotationEntry:
    rgb: Path
    depth: Path
    depth_scale: float
    cam_in: tuple[float, float, float, float]
    normal: Path | None = None


def _resolve(json_path: Path, relative: str, index: int) -> Path:
    p = Path(relative)
    candidates = [p] if p.is_absolute() else [d / p for d in [json_path.parent, *json_path.parent.parents][: SEARCH_LEVELS + 1]]
    for c in candidates:
        if c.is_file():
            return c
    raise InputError(f"{json_path}: entry {index}: file '{relative}' not found next to the json (or in its "
                     f"{SEARCH_LEVELS} parent folders); fix the path in the annotation")


def read_annotation(path: str | os.PathLike) -> list[AnnotationEntry]:
    """The entries of an annotation file with resolved paths; InputError naming the file when malformed."""
    json_path = Path(path)
    if not json_path.is_file():
        raise InputError(f"{json_path}: annotation file not found; pass an existing Metric3D-style json")
    try:
        files = json.loads(json_path.read_text(encoding="utf-8"))["files"]
        if not isinstance(files, list):
            raise TypeError("'files' must be a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{json_path}: not a Metric3D annotation file ({type(exc).__name__}: {exc}); expected "
                         '{"files": [{"rgb", "depth", "depth_scale", "cam_in"}]}') from None
    if not files:
        raise InputError(f"{json_path}: the annotation lists no files; add entries or drop this data set")
    entries = []
    for i, item in enumerate(files):
        try:
            cam = tuple(float(v) for v in item["cam_in"])
            scale = float(item["depth_scale"])
            if len(cam) != 4 or min(cam[:2]) <= 0 or scale <= 0:
                raise ValueError("cam_in must be 4 numbers [fx, fy, cx, cy] with positive focal lengths and "
                                 "depth_scale positive")
            rgb, depth = item["rgb"], item["depth"]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{json_path}: entry {i} is malformed ({exc}); each needs rgb, depth, depth_scale and "
                             "cam_in [fx, fy, cx, cy]") from None
        normal = item.get("normal")
        entries.append(AnnotationEntry(
            rgb=_resolve(json_path, rgb, i),
            depth=_resolve(json_path, depth, i),
            depth_scale=scale,
            cam_in=cam,
            normal=_resolve(json_path, normal, i) if normal else None,
        ))
    return entries


def read_normal(path: Path) -> np.ndarray:
    """Unit normals float32 HxWx3 (zero = unknown) from .npy or a 3-channel 8/16-bit PNG."""
    if path.suffix.lower() == ".npy":
        normal = np.load(path).astype(np.float32)
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.ndim != 3 or raw.shape[2] != 3:
            raise InputError(f"{path}: cannot read normals; expected a 3-channel PNG or an HxWx3 .npy")
        top = 65535.0 if raw.dtype == np.uint16 else 255.0
        empty = ~raw.any(axis=2)
        normal = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB).astype(np.float32) * (2.0 / top) - 1.0
        normal[empty] = 0
    if normal.ndim != 3 or normal.shape[2] != 3:
        raise InputError(f"{path}: normals must be HxWx3, got shape {normal.shape}")
    length = np.linalg.norm(normal, axis=2, keepdims=True)
    return np.where(length > 0.5, normal / np.maximum(length, 1e-6), 0).astype(np.float32)


class AnnotationDataset:
    """The images of one annotation file, loaded as Samples (metric depth, true intrinsics, no augmentation)."""

    def __init__(self, annotation: str | os.PathLike, name: str | None = None):
        self.path = Path(annotation)
        self.entries = read_annotation(self.path)
        self.name = name or self.path.parent.name

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int) -> Sample:
        e = self.entries[index]
        rgb = read_rgb(e.rgb)
        depth = read_depth(e.depth, e.depth_scale)
        h, w = rgb.shape[:2]
        if depth.shape != (h, w):
            raise InputError(f"{e.depth}: depth is {depth.shape[1]}x{depth.shape[0]} but {e.rgb} is {w}x{h}; "
                             "pair each image with its own depth map")
        normal = None
        if e.normal is not None:
            normal = read_normal(e.normal)
            if normal.shape[:2] != (h, w):
                raise InputError(f"{e.normal}: normals are {normal.shape[1]}x{normal.shape[0]} but {e.rgb} is {w}x{h}")
        fx, fy, cx, cy = e.cam_in
        return Sample(rgb=rgb, depth=depth, valid=depth > 0, intrinsics=Intrinsics(fx, fy, cx, cy, w, h),
                      normal=normal)


class MixedDataset(Dataset):
    """Several AnnotationDatasets behind one map-style dataset indexed by SampleKeys (see BalancedSampler).

    ``pipeline(sample, rng)`` turns a loaded Sample into the training item; ``rng`` is seeded by the key's seed.
    """

    def __init__(self, datasets: Sequence[AnnotationDataset],
                 pipeline: Callable[[Sample, np.random.Generator], dict]):
        if not datasets:
            raise InputError("no training data sets given; list at least one annotation file under data.datasets")
        self.datasets = list(datasets)
        self.pipeline = pipeline

    @property
    def sizes(self) -> list[int]:
        return [len(d) for d in self.datasets]

    def __len__(self) -> int:
        return sum(self.sizes)

    def __getitem__(self, key: SampleKey) -> dict:
        which, index, seed = key
        item = self.pipeline(self.datasets[which].load(index), np.random.default_rng(seed))
        item["dataset"] = which
        return item


class BalancedSampler(Sampler[SampleKey]):
    """Draws (data set, index, seed) keys: each draw picks a data set with probability proportional to its
    weight (equal weights: balanced, whatever the data sets' sizes), then walks a random permutation of that
    data set. Draws depend only on (seed, epoch).

    Distributed: process ``rank`` of ``num_replicas`` takes draws rank, rank + num_replicas, ... so the global
    batch of a step is the same set of samples for any number of processes. ``start`` skips the first draws
    of this process in the current epoch (exact resume).
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float] | None = None, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, samples_per_epoch: int | None = None):
        if not sizes or min(sizes) < 1:
            raise InputError(f"every training data set needs at least one image, got sizes {list(sizes)}")
        weights = [1.0] * len(sizes) if weights is None else list(weights)
        if len(weights) != len(sizes) or min(weights) < 0 or sum(weights) <= 0:
            raise InputError(f"data set weights {weights} must be one non-negative number per data set, not all 0")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} processes")
        self.sizes = list(sizes)
        self.probs = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.total = max(self.num_replicas, int(samples_per_epoch or sum(sizes)))
        self.per_replica = self.total // self.num_replicas
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self.set_epoch(state["epoch"], state["start"])

    def epoch_keys(self, epoch: int) -> np.ndarray:
        """(samples per epoch, 3) int64 keys of all processes for ``epoch``, in global draw order."""
        rng = np.random.default_rng([self.seed, epoch])
        n = self.total
        which = rng.choice(len(self.sizes), size=n, p=self.probs)
        index = np.empty(n, dtype=np.int64)
        for k, size in enumerate(self.sizes):
            slots = np.flatnonzero(which == k)
            laps = -(-len(slots) // size)
            order = np.concatenate([rng.permutation(size) for _ in range(laps)]) if laps else np.empty(0, np.int64)
            index[slots] = order[: len(slots)]
        seeds = rng.integers(0, 2**62, size=n)
        return np.stack([which.astype(np.int64), index, seeds], axis=1)

    def __iter__(self) -> Iterator[SampleKey]:
        keys = self.epoch_keys(self.epoch)[self.rank::self.num_replicas][: self.per_replica]
        for which, index, seed in keys[self.start:]:
            yield int(which), int(index), int(seed)

    def __len__(self) -> int:
        return self.per_replica - self.start
