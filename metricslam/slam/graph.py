"""The factor graph's edges: which keyframe pairs are connected, and their cached correspondences.

Correspondences are computed once per pair (both directions from one forward and one backward flow) and cached
by keyframe uid, so they survive the removal of other keyframes. Flow for a new pair starts from the current
reprojection, which lets it follow large baselines (proximity and loop edges).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from metricslam.geometry.projective import pixel_grid, reproject
from metricslam.slam.correspondence.classical import ClassicalCorrespondence
from metricslam.slam.video import KeyframeStore


def induced_distance(
    poses_cw: torch.Tensor, invdepths: torch.Tensor, intrinsics: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor,
    step: int = 4,
) -> torch.Tensor:
    """Mean flow (grid px) that moving from keyframe ii to jj induces, on every ``step``-th grid pixel.

    Pairs where fewer than half of the points land in front of the camera get +inf.
    """
    if ii.numel() == 0:
        return torch.zeros(0, device=poses_cw.device)
    sub = invdepths[:, step // 2 :: step, step // 2 :: step]
    off = step // 2
    # A sub-grid pixel k sits at grid pixel step * k + off.
    fx, fy, cx, cy = intrinsics.tolist()
    intr_sub = torch.tensor([fx / step, fy / step, (cx - off) / step, (cy - off) / step], dtype=intrinsics.dtype)
    coords, valid = reproject(poses_cw, sub, intr_sub, ii, jj)
    h, w = sub.shape[1:]
    flow = coords - pixel_grid(h, w, coords.device, coords.dtype)
    flow = (flow * flow).sum(-1).sqrt() * step  # not norm(dim=-1): its strided CPU kernel is far slower
    valid_f = valid.to(flow.dtype)
    frac = valid_f.mean(dim=(1, 2))
    mean = (flow * valid_f).sum(dim=(1, 2)) / valid_f.sum(dim=(1, 2)).clamp_min(1)
    return torch.where(frac >= 0.5, mean, torch.full_like(mean, float("inf")))


def pair_distance(store: KeyframeStore, intrinsics: torch.Tensor, i: list[int], j: list[int]) -> torch.Tensor:
    """Bidirectional induced distance between keyframes i[k] and j[k] (grid px)."""
    ii = torch.tensor(i + j, dtype=torch.long, device=store.device)
    jj = torch.tensor(j + i, dtype=torch.long, device=store.device)
    d = induced_distance(store.poses, store.invdepth, intrinsics, ii, jj)
    return 0.5 * (d[: len(i)] + d[len(i) :])


def initial_flows(coords: torch.Tensor, valid: torch.Tensor, stride: int) -> list[np.ndarray]:
    """Processing-resolution flows (H, W, 2), one per edge, from reprojected grid coordinates (E, h, w, 2) and
    their validity (``reproject``'s output). DIS starts from them so it can follow baselines larger than its
    own search range."""
    h, w = coords.shape[1:3]
    grid = pixel_grid(h, w, coords.device, coords.dtype)
    H, W = h * stride, w * stride
    flow = torch.where(valid[..., None] & coords.isfinite(), (coords - grid) * stride, torch.zeros_like(coords))
    # DIS indexes with its initial flow: keep it finite and within the image's reach.
    flow_np = flow.clamp(-float(max(H, W)), float(max(H, W))).float().cpu().numpy()
    return [cv2.resize(f, (W, H), interpolation=cv2.INTER_LINEAR) for f in flow_np]


class EdgeCache:
    """Targets and weights (h, w, 2) for directed keyframe pairs, keyed by (uid_i, uid_j)."""

    damping = None  # flow gives the BA no damping of its own: it uses BAOptions.eta

    def __init__(self, corr: ClassicalCorrespondence, grid_intrinsics: torch.Tensor, stride: int):
        self.corr = corr
        self.gate = corr.config.gate / stride  # grid px
        self.gate_spread = corr.config.gate_spread
        self.intrinsics = grid_intrinsics
        self.stride = stride
        self.data: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return len(self.data)

    def add(self, store: KeyframeStore, pairs: list[tuple[int, int]], predict: bool = True) -> None:
        """Compute correspondences for the pairs (keyframe indices) not cached yet, both directions.

        Flow starts from the current poses' prediction when ``predict``. Either way, a target far from that
        prediction loses weight (FlowConfig.gate, .gate_spread): flow that failed on a whole region (periodic
        texture, a large baseline) can be forward-backward consistent, and no kernel on single pixels removes it.
        """
        todo = []
        for i, j in pairs:
            key = (int(store.uid[i]), int(store.uid[j]))
            if key not in self.data and key[::-1] not in self.data:
                todo.append((i, j))
        if not todo:
            return
        n = len(todo)
        dev = store.device
        ii = torch.tensor([p[0] for p in todo] + [p[1] for p in todo], dtype=torch.long, device=dev)
        jj = torch.tensor([p[1] for p in todo] + [p[0] for p in todo], dtype=torch.long, device=dev)
        predicted, valid = reproject(store.poses, store.invdepth, self.intrinsics, ii, jj)
        inits = initial_flows(predicted, valid, self.stride) if predict else None
        jobs = [(store.grey[i], store.grey[j], *((inits[e], inits[n + e]) if inits is not None else (None, None)))
                for e, (i, j) in enumerate(todo)]
        for e, ((i, j), (t_ij, w_ij, t_ji, w_ji)) in enumerate(zip(todo, self.corr.pairs(jobs))):
            ui, uj = int(store.uid[i]), int(store.uid[j])
            for key, t_np, w_np, p in ((ui, uj), t_ij, w_ij, e), ((uj, ui), t_ji, w_ji, n + e):
                t = torch.from_numpy(t_np).to(dev)
                miss2 = (t - predicted[p].to(t.dtype)).square().sum(-1)
                scale2 = self.gate**2
                seen = miss2[valid[p]]
                if self.gate_spread > 0 and seen.numel() > 0:
                    scale2 = max(scale2, self.gate_spread**2 * float(seen.median()))
                gate = torch.where(valid[p], 1.0 / (1.0 + miss2 / scale2), torch.ones_like(miss2))
                self.data[key] = (t, torch.from_numpy(w_np).to(dev) * gate[..., None])

    def refresh(self, store: KeyframeStore, pairs: list[tuple[int, int]]) -> None:
        """Recompute the correspondences of ``pairs`` (both directions) with flow started from the current
        reprojection: after a BA has moved the poses, far pairs get closer starts than they first had."""
        for i, j in pairs:
            ui, uj = int(store.uid[i]), int(store.uid[j])
            self.data.pop((ui, uj), None)
            self.data.pop((uj, ui), None)
        self.add(store, pairs)

    def drop(self, uid: int) -> None:
        for key in [k for k in self.data if uid in k]:
            del self.data[key]

    def gather(self, store: KeyframeStore, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Edges among ``indices`` as (ii, jj) positions inside ``indices``, targets and weights (E, h, w, 2)."""
        pos = {int(store.uid[k]): p for p, k in enumerate(indices)}
        keys = [key for key in self.data if key[0] in pos and key[1] in pos]
        dev = store.device
        if not keys:
            empty = torch.zeros(0, store.h, store.w, 2, device=dev)
            return torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, dtype=torch.long, device=dev), empty, empty
        ii = torch.tensor([pos[a] for a, _ in keys], dtype=torch.long, device=dev)
        jj = torch.tensor([pos[b] for _, b in keys], dtype=torch.long, device=dev)
        targets = torch.stack([self.data[k][0] for k in keys])
        weights = torch.stack([self.data[k][1] for k in keys])
        return ii, jj, targets, weights
