"""Front-end: add keyframes, connect them to their neighbours, optimise a sliding window, drop redundant ones."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from metricslam.slam.ba import dense_ba
from metricslam.slam.config import BAOptions, FrontendConfig
from metricslam.slam.graph import EdgeCache, pair_distance
from metricslam.slam.video import KeyframeStore

if TYPE_CHECKING:
    from metricslam.slam.correspondence.factory import Edges
    from metricslam.slam.keypoint_tracks import KeypointTracks

log = logging.getLogger(__name__)


def update_confidence(store: KeyframeStore, indices: list[int], ii: torch.Tensor, weights: torch.Tensor) -> None:
    """BA depth confidence of each keyframe pixel: the best correspondence weight that observes it."""
    if ii.numel() == 0:
        return
    per_edge = weights.mean(-1).flatten(1)
    conf = per_edge.new_zeros(len(indices), per_edge.shape[1])
    conf.scatter_reduce_(0, ii[:, None].expand_as(per_edge), per_edge, "amax", include_self=True)
    store.conf[indices] = conf.view(len(indices), store.h, store.w).to(store.conf.dtype)


def optimise(
    store: KeyframeStore, edges: Edges, indices: list[int], fixed: list[int], iters: int, options: BAOptions,
    intrinsics: torch.Tensor, tracks: KeypointTracks | None = None,
) -> None:
    """Dense BA over keyframes ``indices`` (edges among them); ``fixed`` are positions inside ``indices``. With
    ``tracks``, their keypoint tracks among those keyframes join the BA."""
    ii, jj, targets, weights = edges.gather(store, indices)
    if ii.numel() == 0:
        return
    sparse = tracks.gather(store, indices) if tracks is not None else None
    idx = torch.tensor(indices, dtype=torch.long, device=store.device)
    poses, invdepth = dense_ba(
        store.poses[idx], store.invdepth[idx], intrinsics, ii, jj, targets, weights,
        prior_invdepth=store.prior_invdepth[idx], prior_conf=store.prior_conf[idx], fixed=fixed, iters=iters,
        options=options, eta=edges.damping, sparse=None if sparse is None else sparse[0],
    )
    if not (bool(torch.isfinite(poses).all()) and bool(torch.isfinite(invdepth).all())):
        log.warning("bundle adjustment diverged over keyframes %d..%d; keeping the previous state",
                    indices[0], indices[-1])
        return
    store.poses[idx] = poses
    store.invdepth[idx] = invdepth.to(store.invdepth.dtype)
    update_confidence(store, indices, ii, weights)
    if tracks is not None and sparse is not None:
        tracks.update(store, indices, sparse)


class Frontend:
    """Keeps the newest keyframes optimised. ``segment_start`` is the first keyframe after the last re-init."""

    def __init__(self, store: KeyframeStore, edges: Edges, config: FrontendConfig, ba: BAOptions,
                 intrinsics: torch.Tensor, refine: bool = False, tracks: KeypointTracks | None = None):
        # With ``refine``, the new keyframe's flows re-run from the BA's reprojection, then BA again (cached
        # classical flow only: learned correspondences already update on every gather).
        self._refresher = edges if refine and isinstance(edges, EdgeCache) else None
        self.store = store
        self.edges = edges
        self.config = config
        self.ba = ba  # the window BA's settings (SlamConfig.ba_options("window"))
        self.intrinsics = intrinsics
        self.segment_start = 0
        self.added = 0
        self.tracks = tracks  # keypoint tracks in the window BA (optional)

    def connect(self, k: int) -> None:
        """Temporal edges from keyframe k to its predecessors and proximity edges inside the window."""
        cfg = self.config
        lo = max(self.segment_start, k - cfg.window + 1)
        pairs = [(i, k) for i in range(max(lo, k - cfg.radius), k)]
        older = list(range(lo, k - cfg.radius))
        if older:
            d = pair_distance(self.store, self.intrinsics, older, [k] * len(older))
            pairs += [(i, k) for i, di in zip(older, d.tolist()) if di < cfg.proximity_thresh]
        self.edges.add(self.store, pairs)  # one batch: its flows run concurrently

    def window(self) -> list[int]:
        k = len(self.store) - 1
        return list(range(max(self.segment_start, k - self.config.window + 1), k + 1))

    def step(self) -> None:
        """Connect and optimise after a new keyframe."""
        k = len(self.store) - 1
        self.added += 1
        self.connect(k)
        iters = self.config.warmup_iters if self.added <= self.config.warmup else self.config.iters
        # Learned correspondences update on every gather (one network step each); cached flow is fixed.
        for _ in range(max(1, self.config.updates)):
            optimise(self.store, self.edges, self.window(), self.fixed(), iters, self.ba, self.intrinsics, self.tracks)
        if self._refresher is not None:
            lo = self.window()[0]
            pairs = [(i, k) for i in range(lo, k) if (int(self.store.uid[i]), int(self.store.uid[k])) in self.edges]
            self._refresher.refresh(self.store, pairs)
            optimise(self.store, self.edges, self.window(), self.fixed(), iters, self.ba, self.intrinsics, self.tracks)

    def fixed(self) -> list[int]:
        """Positions in the window of the poses held constant: the oldest ``fixed_poses``, always leaving the
        newest two free. Two fixed poses also fix the window's scale, which a monocular window otherwise lets
        drift from one keyframe to the next."""
        return list(range(max(1, min(self.config.fixed_poses, len(self.window()) - 2))))

    def redundant(self) -> int | None:
        """The second-newest keyframe when it is too close to the one before it (DROID's rule), else None."""
        k = len(self.store) - 1
        if k - 2 < self.segment_start:
            return None
        d = float(pair_distance(self.store, self.intrinsics, [k - 2], [k - 1])[0])
        return k - 1 if d < self.config.keyframe_thresh else None

    def remove(self, k: int) -> None:
        """Delete keyframe k with its edges, then restore the temporal edges of the newest keyframe."""
        self.edges.drop(int(self.store.uid[k]))
        if self.tracks is not None:
            self.tracks.forget(self.store, k)
        self.store.remove(k)
        self.connect(len(self.store) - 1)
