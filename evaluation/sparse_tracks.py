"""Accuracy of the sparse keypoint tracks against the ground-truth motion, beside the dense flow's.

    python evaluation/sparse_tracks.py [--datasets room hololens] [--max-frames N] [--set key=value ...]

Keyframes, ground truth and the dense correspondences come from the oracle study (evaluation/oracle_study.py:
greedy keyframes on the true motion, the real DIS flow on its temporal edges). The tracks are built by
``metricslam.slam.keypoint_tracks.KeypointTracks`` on those keyframes in order, with the ground-truth poses and
depths in the store. Each track observation is compared with where its host keypoint lands under the true motion
(ground-truth grid depth, bilinear, where the four cells around are valid; visible: its inverse depth in the
observer agrees with the observer's ground truth within 10 %). Errors are processing-resolution px. The
last column is the weight rule of ``sparse.weight``: (dense median / sparse median)^2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_study import (  # noqa: E402
    DEFAULT_FRAMES,
    VISIBLE_REL,
    Problem,
    _filled,
    _hololens,
    _room,
    correspondence_error,
    gt_correspondences,
    real_correspondences,
)

from metricslam.geometry.projective import project, relative_poses, unproject  # noqa: E402
from metricslam.slam.keypoint_tracks import KeypointTracks, bilinear  # noqa: E402
from metricslam.slam.video import KeyframeStore  # noqa: E402


def build_tracks(p: Problem) -> tuple[KeypointTracks, KeyframeStore]:
    """The tracks of the problem's keyframes, added one by one to a store holding the ground truth."""
    store = KeyframeStore(tuple(p.invdepth.shape[1:]), torch.device("cpu"), capacity=len(p.poses_cw))
    tracks = KeypointTracks(p.config.sparse, p.stride, p.intrinsics)
    for k in range(len(p.poses_cw)):
        store.append(p.frame_index[k], float(p.timestamps[k]), p.poses_cw[k], _filled(p.invdepth[k]).float(), None,
                     None, p.grey[k], p.rgb[k])
        tracks.add_keyframe(store, k, 0)
    return tracks, store


def track_error(p: Problem, tracks: KeypointTracks, store: KeyframeStore) -> dict[str, float]:
    """Error of every checkable track observation against the true motion (px), and the track lengths."""
    obs = tracks.gather(store, list(range(len(store))))
    if obs is None:
        return {"median": float("nan"), "p90": float("nan"), "observations": 0, "tracks": 0, "views": 0.0}
    sp, _ = obs
    host = sp.host[sp.point]
    valid = p.valid.float()
    ok = bilinear(valid, host, sp.uv[sp.point]) > 0.999
    inv = bilinear(_filled(p.invdepth).double(), host, sp.uv[sp.point].double())
    T = relative_poses(p.poses_cw, host, sp.frame)
    Xj = (T @ unproject(sp.uv[sp.point].double(), inv, p.intrinsics)[:, :, None])[:, :, 0]
    gt = project(Xj, p.intrinsics)
    h, w = p.invdepth.shape[1:]
    u = gt[:, 0].round().clamp(0, w - 1).long()
    v = gt[:, 1].round().clamp(0, h - 1).long()
    there = p.invdepth.double()[sp.frame, v, u]
    inv_j = inv / Xj[:, 2].clamp_min(1e-9)
    visible = ok & (Xj[:, 2] > 0) & p.valid[sp.frame, v, u] & ((inv_j - there).abs() < VISIBLE_REL * there)
    err = ((sp.target.double() - gt).norm(dim=-1) * p.stride)[visible].numpy()
    views = torch.bincount(sp.point).double() + 1
    return {"median": float(np.median(err)), "p90": float(np.quantile(err, 0.9)), "observations": int(err.size),
            "tracks": int(sp.host.shape[0]), "views": float(views.mean())}


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["room", "hololens"], choices=["room", "hololens"])
    ap.add_argument("--max-frames", type=int, default=None, help="frames per sequence (default: the oracle study's)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="SlamConfig overrides")
    args = ap.parse_args(argv)
    lines = ["| sequence | keyframes | dense median / p90 (px) | dense weighted median / p90 (px) | sparse tracks "
             "| mean views per track | checked observations | sparse median / p90 (px) | weight rule |",
             "|---|---:|---|---|---:|---:|---:|---|---:|"]
    for name in args.datasets:
        frames = args.max_frames or DEFAULT_FRAMES[name]
        p = _room(frames, args.set) if name == "room" else _hololens(frames, args.set)
        if p is None:
            print(f"{name}: data not found, skipped", file=sys.stderr)
            continue
        targets, weights = real_correspondences(p, seed=0)
        gt, _, visible = gt_correspondences(p)
        dense = correspondence_error(targets, weights, gt, visible, p.stride)
        tracks, store = build_tracks(p)
        sparse = track_error(p, tracks, store)
        rule = (dense["median"] / sparse["median"]) ** 2
        lines.append(f"| {p.name} | {len(store)} | {dense['median']:.3f} / {dense['p90']:.3f} | "
                     f"{dense['w_median']:.3f} / {dense['w_p90']:.3f} | {sparse['tracks']} | {sparse['views']:.1f} | "
                     f"{sparse['observations']} | {sparse['median']:.3f} / {sparse['p90']:.3f} | {rule:.1f} |")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
