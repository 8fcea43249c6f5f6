"""Back-end: global BA over all keyframes with temporal and proximity edges (the latter close loops)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from metricslam.slam.config import BackendConfig, BAOptions
from metricslam.slam.frontend import optimise
from metricslam.slam.graph import pair_distance
from metricslam.slam.video import KeyframeStore

if TYPE_CHECKING:
    from metricslam.slam.correspondence.factory import Edges
    from metricslam.slam.keypoint_tracks import KeypointTracks


def proximity_pairs(
    store: KeyframeStore, intrinsics: torch.Tensor, first: int, radius: int, thresh: float, nms: int, per_keyframe: int,
    chunk: int = 4096,
) -> list[tuple[int, int]]:
    """Non-temporal pairs (i < j, j - i > radius, j >= first) closer than ``thresh``, greedily by distance with
    non-maximum suppression: a chosen pair suppresses pairs within ``nms`` keyframes of both its ends."""
    K = len(store)
    cand = [(i, j) for j in range(max(first, radius + 1), K) for i in range(0, j - radius)]
    if not cand:
        return []
    dist = torch.cat([
        pair_distance(store, intrinsics, [c[0] for c in cand[s : s + chunk]], [c[1] for c in cand[s : s + chunk]])
        for s in range(0, len(cand), chunk)
    ])
    order = torch.argsort(dist).tolist()
    chosen: list[tuple[int, int]] = []
    count = [0] * K
    for o in order:
        if float(dist[o]) >= thresh:
            break
        i, j = cand[o]
        if count[i] >= per_keyframe or count[j] >= per_keyframe:
            continue
        if any(abs(i - a) <= nms and abs(j - b) <= nms for a, b in chosen):
            continue
        chosen.append((i, j))
        count[i] += 1
        count[j] += 1
    return chosen


def segment_ids(segment_starts: list[int], count: int) -> list[int]:
    """The segment number of each of ``count`` keyframes, given the first keyframe of every segment."""
    starts = set(segment_starts)
    ids = [0] * count
    for k in range(1, count):
        ids[k] = ids[k - 1] + (1 if k in starts else 0)
    return ids


class Backend:
    def __init__(self, store: KeyframeStore, edges: Edges, config: BackendConfig, ba: BAOptions,
                 intrinsics: torch.Tensor, tracks: KeypointTracks | None = None):
        self.store = store
        self.edges = edges
        self.config = config
        self.ba = ba  # the global BA's settings (SlamConfig.ba_options("global"))
        self.intrinsics = intrinsics
        self.tracks = tracks  # keypoint tracks in the global BA (optional)

    def run(self, segment_starts: list[int], iters: int, window: int | None = None, loops_only_after: int | None = None
            ) -> bool:
        """Global BA (or over the newest ``window`` keyframes, the older ones fixed); first keyframe of each
        segment fixed (the gauge of each disconnected piece). With ``loops_only_after`` it runs only when it found
        a new loop edge, a proximity pair not connected yet whose keyframes lie more than that many apart (the
        rest only repeats the front-end's work). Returns whether it ran."""
        cfg = self.config
        K = len(self.store)
        if K < 2:
            return False
        first = 0 if window is None else max(0, K - window)
        starts = set(segment_starts)
        seg = segment_ids(segment_starts, K)
        pairs = [(i, j) for j in range(first, K) for i in range(max(0, j - cfg.radius), j) if seg[i] == seg[j]]
        loops = proximity_pairs(self.store, self.intrinsics, first, cfg.radius, cfg.proximity_thresh, cfg.nms,
                                cfg.max_edges_per_keyframe)
        if loops_only_after is not None and not any(
            j - i > loops_only_after and (int(self.store.uid[i]), int(self.store.uid[j])) not in self.edges
            for i, j in loops
        ):
            return False
        pairs += loops
        self.edges.add(self.store, pairs)
        lo = min([i for i, _ in pairs] + [first])
        indices = list(range(lo, K))
        fixed = [k - lo for k in indices if k < first or k in starts or k == 0]
        optimise(self.store, self.edges, indices, fixed, iters, self.ba, self.intrinsics, self.tracks)
        return True
