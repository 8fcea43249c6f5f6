"""The correspondence back-ends behind one interface, and the factory that builds the configured one.

A back-end is a pair: a tracker (keyframe -> frame correspondences for every frame, and the motion filter's
measure) and an edge store (cached correspondences of the keyframe graph, handed to the bundle adjustment).
``classical`` is dense optical flow on the CPU; ``droid`` is DROID-SLAM's learned update operator (droid.pth).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, get_args

import numpy as np
import torch

from metricslam.errors import MetricSlamError
from metricslam.slam.config import CorrespondenceName, FlowConfig
from metricslam.slam.correspondence.classical import ClassicalCorrespondence
from metricslam.slam.graph import EdgeCache

if TYPE_CHECKING:
    from metricslam.slam.video import KeyframeStore

class Tracker(Protocol):
    """Per-frame correspondences from the latest keyframe."""

    reads_colour: bool  # tracks RGB images (True) or grey ones (False)

    def track(self, kf_image: np.ndarray, image: np.ndarray, init: np.ndarray | None = None, /
              ) -> tuple[np.ndarray, np.ndarray, float]:
        """Targets (h, w, 2) in grid pixels, confidences (h, w, 2) and the mean flow (grid pixels)."""
        ...

    def texture(self, kf_image: np.ndarray, /) -> np.ndarray | None:
        """Per grid cell weight of how well the keyframe's texture constrains a match, or None."""
        ...


class Edges(Protocol):
    """Correspondences of keyframe pairs, keyed by keyframe uid."""

    @property
    def damping(self) -> torch.Tensor | None:
        """Per-keyframe BA damping from the last gather; None: the BA's own."""
        ...

    def __contains__(self, key: tuple[int, int]) -> bool: ...

    def __len__(self) -> int: ...

    def add(self, store: KeyframeStore, pairs: list[tuple[int, int]], /) -> None: ...

    def drop(self, uid: int, /) -> None: ...

    def gather(self, store: KeyframeStore, indices: list[int], /
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...


def make_correspondence(name: CorrespondenceName, flow: FlowConfig, stride: int, grid_intrinsics: torch.Tensor,
                        eta: float, droid_weights: str | None, device: torch.device) -> tuple[Tracker, Edges]:
    """The tracker and edge store of back-end ``name`` (``eta``: BA damping where the network gives none)."""
    if name not in get_args(CorrespondenceName):
        raise MetricSlamError(f"correspondence '{name}' is not available; use classical or droid")
    if name == "droid":
        # Imported here: only this back-end needs the network.
        from metricslam.slam.correspondence.droid.edges import DroidEdges
        from metricslam.slam.correspondence.droid.tracker import DroidTracker
        from metricslam.slam.correspondence.droid.weights import load_droid_weights

        model = load_droid_weights(droid_weights or "droid", device)
        return DroidTracker(model, stride), DroidEdges(model, grid_intrinsics, eta)
    corr = ClassicalCorrespondence(flow, stride)
    return corr, EdgeCache(corr, grid_intrinsics, stride)
