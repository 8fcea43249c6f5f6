"""``DroidEdges``: the factor graph's edges with learned correspondences, a drop-in for ``graph.EdgeCache``.

Every ``gather`` is one step of DROID-SLAM's front-end update for the edges among the requested keyframes: look up
correlations at the current reprojection ``coords1``, feed them with the motion [coords1 - coords0, target -
coords1] to the update operator, and return ``target = coords1 + delta`` with the predicted confidences for the
BA that follows. ``damping`` then holds the network's per-keyframe BA damping (eta) for those keyframes.

Features (fmap, net, inp) are encoded once per keyframe. Hidden states are kept only for the edges of the last
update (DROID keeps them for its active graph only): at a 48x64 grid each costs 1.5 MB, and the back-end's global
graph would otherwise hold thousands. An edge that comes back starts afresh from its source frame's context.
"""
from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from metricslam.geometry.projective import reproject
from metricslam.slam.correspondence.droid.corr import build_corr
from metricslam.slam.correspondence.droid.features import FrameFeatures, encode
from metricslam.slam.correspondence.droid.net import DroidNet, motion_features
from metricslam.slam.video import KeyframeStore

# Points at or behind the camera project anywhere: keep their coordinates finite; the lookup reads zeros there
# and the motion input is clamped anyway.
_FAR = 1e4


class EdgeState(NamedTuple):
    net: torch.Tensor  # (128, h, w) hidden state
    target: torch.Tensor  # (h, w, 2) the last predicted target coordinates


def source_chunks(ii: torch.Tensor, limit: int) -> list[torch.Tensor]:
    """Edge indices in chunks of about ``limit`` edges that never split the edges of one source frame (the update
    operator averages over them); a frame with more than ``limit`` edges gets a chunk of its own."""
    order = torch.argsort(ii, stable=True)
    _, counts = torch.unique_consecutive(ii[order], return_counts=True)
    chunks, start, size = [], 0, 0
    for count in counts.tolist():
        if size and size + count > limit:
            chunks.append(order[start : start + size])
            start, size = start + size, 0
        size += count
    chunks.append(order[start : start + size])
    return chunks


class DroidEdges:
    """Directed keyframe edges keyed by (uid_i, uid_j) whose correspondences come from ``model``'s update operator.

    grid_intrinsics: [fx, fy, cx, cy] of the 1/8 grid; eta: BA damping of keyframes that are no edge's source in a
    gather; corr: correlation implementation ('local' stores no volumes; 'volume' builds them per update, which is
    faster on a GPU with memory to spare); max_edges: edges per update-operator call (bounds the activations).
    """

    def __init__(self, model: DroidNet, grid_intrinsics: torch.Tensor, eta: float,
                 corr: Literal["local", "volume"] = "local", max_edges: int = 64):
        self.model = model
        self.intrinsics = grid_intrinsics
        self.eta = eta
        self.corr = corr
        self.max_edges = max_edges
        self.features: dict[int, FrameFeatures] = {}  # per keyframe uid, tensors (128, h, w)
        self.state: dict[tuple[int, int], EdgeState | None] = {}  # None: no hidden state (inactive edge)
        self.damping: torch.Tensor | None = None  # (K, h, w) eta of the keyframes of the last gather

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self.state

    def __len__(self) -> int:
        return len(self.state)

    def add(self, store: KeyframeStore, pairs: list[tuple[int, int]]) -> None:
        """Connect keyframe index pairs (both directions); new edges start at the current reprojection."""
        for i, j in pairs:
            ui, uj = int(store.uid[i]), int(store.uid[j])
            self.state.setdefault((ui, uj), None)
            self.state.setdefault((uj, ui), None)

    def drop(self, uid: int) -> None:
        """Forget keyframe ``uid``: its edges and features."""
        for key in [k for k in self.state if uid in k]:
            del self.state[key]
        self.features.pop(uid, None)

    def _encode_missing(self, store: KeyframeStore, indices: list[int]) -> None:
        todo = [k for k in indices if int(store.uid[k]) not in self.features]
        if not todo:
            return
        feats = encode(self.model, [store.rgb[k] for k in todo])
        for n, k in enumerate(todo):
            self.features[int(store.uid[k])] = FrameFeatures(*(f[n] for f in feats))

    def gather(self, store: KeyframeStore, indices: list[int]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One update of the edges among ``indices``: (ii, jj) positions inside ``indices``, targets and weights
        (E, h, w, 2) in grid pixels; sets ``damping`` (len(indices), h, w)."""
        uids = [int(store.uid[k]) for k in indices]
        pos = {u: p for p, u in enumerate(uids)}
        keys = [key for key in self.state if key[0] in pos and key[1] in pos]
        dev = store.device
        if not keys:
            self.damping = None
            empty = torch.zeros(0, store.h, store.w, 2, device=dev)
            none = torch.zeros(0, dtype=torch.long, device=dev)
            return none, none.clone(), empty, empty.clone()
        self._encode_missing(store, indices)
        ii = torch.tensor([pos[a] for a, _ in keys], dtype=torch.long, device=dev)
        jj = torch.tensor([pos[b] for _, b in keys], dtype=torch.long, device=dev)
        idx = torch.tensor(indices, dtype=torch.long, device=dev)
        coords, _ = reproject(store.poses[idx], store.invdepth[idx], self.intrinsics, ii, jj)
        coords = torch.nan_to_num(coords.float(), nan=-_FAR, posinf=_FAR, neginf=-_FAR).clamp(-_FAR, _FAR)
        frames = [self.features[u] for u in uids]
        fmaps = torch.stack([f.fmap for f in frames])
        old = [self.state[key] for key in keys]

        targets, weights = torch.empty_like(coords), torch.empty_like(coords)
        hidden: list[torch.Tensor | None] = [None] * len(keys)
        damping = torch.full((len(indices), store.h, store.w), self.eta, dtype=torch.float32, device=dev)
        with torch.no_grad():
            for chunk in source_chunks(ii, self.max_edges):
                rows = chunk.tolist()
                net = torch.stack([old[e].net if old[e] is not None else frames[int(ii[e])].net for e in rows])
                inp = torch.stack([frames[int(ii[e])].inp for e in rows])
                c1 = coords[chunk]
                last = torch.stack([old[e].target if old[e] is not None else c1[n] for n, e in enumerate(rows)])
                corr = build_corr(self.corr, fmaps, ii[chunk], jj[chunk])(c1)
                out = self.model.update(net, inp, corr, motion_features(c1, last), ii[chunk])
                targets[chunk] = c1 + out.delta
                weights[chunk] = out.weight
                damping[out.frames] = out.eta
                for n, e in enumerate(rows):
                    hidden[e] = out.net[n]

        self.state = dict.fromkeys(self.state)
        for e, key in enumerate(keys):
            h = hidden[e]
            assert h is not None  # every edge was updated above
            self.state[key] = EdgeState(h, targets[e])
        self.damping = damping
        return ii, jj, targets, weights
