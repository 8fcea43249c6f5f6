"""Filler: a pose for every input frame, by motion-only BA against the keyframe it was tracked from."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

import torch

from metricslam.slam.ba import dense_ba
from metricslam.slam.config import BAOptions
from metricslam.slam.video import KeyframeStore


@dataclass
class FrameRecord:
    """What tracking learnt about one input frame.

    The pose is kept relative to a reference keyframe (T_cw = rel @ T_cw[ref]) so it follows that keyframe when
    BA moves it. targets/weights (grid, float16) are the reference -> frame correspondences, None for keyframes
    or after the reference was removed.
    """

    index: int
    timestamp: float
    ref_uid: int
    rel: torch.Tensor
    tracked: bool = True
    targets: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    def pose_cw(self, store: KeyframeStore) -> torch.Tensor:
        """T_cw with the reference keyframe's current pose."""
        return self.rel @ store.poses[store.index_of(self.ref_uid)]


def reanchor(records: list[FrameRecord], store: KeyframeStore, removed: int, new_ref: int) -> None:
    """Move frames that referenced keyframe index ``removed`` (still in the store) to keyframe ``new_ref``."""
    uid = int(store.uid[removed])
    change = store.poses[removed] @ torch.linalg.inv(store.poses[new_ref])
    for rec in records:
        if rec.ref_uid == uid:
            rec.ref_uid = int(store.uid[new_ref])
            rec.rel = rec.rel @ change
            rec.targets = rec.weights = None


def fill_poses(records: list[FrameRecord], store: KeyframeStore, intrinsics: torch.Tensor, iters: int,
               chunk: int, options: BAOptions) -> torch.Tensor:
    """T_cw (N, 4, 4) of every record: composed with the final keyframe poses, then refined (motion-only BA,
    ``chunk`` frames per solve) where correspondences were kept."""
    index_of = {int(u): k for k, u in enumerate(store.uid.tolist())}
    refs = torch.tensor([index_of[r.ref_uid] for r in records], dtype=torch.long, device=store.device)
    rel = torch.stack([r.rel for r in records]).to(store.poses)
    poses = rel @ store.poses[refs]
    todo = [n for n, r in enumerate(records) if r.targets is not None and r.tracked]
    opts = replace(options, motion_only=True, depth_only=False)
    for s in range(0, len(todo), chunk):
        part = todo[s : s + chunk]
        kfs = sorted({int(refs[n]) for n in part})
        pos = {k: p for p, k in enumerate(kfs)}
        n_kf = len(kfs)
        kf_idx = torch.tensor(kfs, dtype=torch.long, device=store.device)
        all_poses = torch.cat([store.poses[kf_idx], poses[part]])
        invd = torch.cat([store.invdepth[kf_idx], torch.ones(len(part), store.h, store.w, device=store.device)])
        ii = torch.tensor([pos[int(refs[n])] for n in part], dtype=torch.long, device=store.device)
        jj = torch.arange(n_kf, n_kf + len(part), device=store.device)
        # todo holds only records with targets and weights.
        targets = torch.stack(cast(list[torch.Tensor], [records[n].targets for n in part])).float()
        weights = torch.stack(cast(list[torch.Tensor], [records[n].weights for n in part])).float()
        out, _ = dense_ba(all_poses, invd, intrinsics, ii, jj, targets, weights, fixed=list(range(n_kf)),
                          iters=iters, options=opts)
        poses[part] = out[n_kf:]
    return poses
