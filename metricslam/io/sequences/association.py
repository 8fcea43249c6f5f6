"""Matching streams by timestamp: nearest neighbours and pose interpolation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metricslam.errors import InputError
from metricslam.geometry import se3
from metricslam.io.trajectory import Trajectory

DEPTH_MAX_DT = 0.02  # s, depth image <-> RGB image (TUM convention)
GT_MAX_DT = 0.02  # s, nearest ground-truth pose accepted when interpolation is impossible
GT_MAX_GAP = 0.1  # s, widest gap between two ground-truth poses that is bridged by interpolation


def associate_nearest(query: np.ndarray, reference: np.ndarray, max_dt: float) -> np.ndarray:
    """For each query time, the index into ``reference`` of the nearest time within ``max_dt``, else -1."""
    query = np.asarray(query, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if len(reference) == 0:
        return np.full(len(query), -1, dtype=np.int64)
    order = np.argsort(reference, kind="stable")
    ref = reference[order]
    right = np.clip(np.searchsorted(ref, query), 0, len(ref) - 1)
    left = np.clip(right - 1, 0, len(ref) - 1)
    take_left = np.abs(query - ref[left]) <= np.abs(ref[right] - query)
    best = np.where(take_left, left, right)
    found = np.abs(ref[best] - query) <= max_dt
    return np.where(found, order[best], -1)


def interpolate_poses(
    times: np.ndarray,
    poses: np.ndarray,
    query: np.ndarray,
    max_gap: float = GT_MAX_GAP,
    max_dt: float = GT_MAX_DT,
) -> np.ndarray:
    """Poses (N,4,4) at the query times; NaN where neither interpolation nor a near-enough sample exists.

    Between two samples at most ``max_gap`` apart the translation is interpolated linearly and the rotation along
    the geodesic (slerp); elsewhere the nearest sample within ``max_dt`` is used.
    """
    times = np.asarray(times, dtype=np.float64)
    query = np.asarray(query, dtype=np.float64)
    order = np.argsort(times, kind="stable")
    times, poses = times[order], np.asarray(poses, dtype=np.float64)[order]
    out = np.full((len(query), 4, 4), np.nan)
    nearest = associate_nearest(query, times, max_dt)
    out[nearest >= 0] = poses[nearest[nearest >= 0]]
    if len(times) < 2:
        return out
    left = np.clip(np.searchsorted(times, query, side="right") - 1, 0, len(times) - 2)
    gap = times[left + 1] - times[left]
    alpha = (query - times[left]) / np.where(gap > 0, gap, 1.0)
    inside = (alpha >= 0) & (alpha <= 1) & (gap > 0) & (gap <= max_gap)
    if not inside.any():
        return out
    a = torch.from_numpy(poses[left[inside]])
    b = torch.from_numpy(poses[left[inside] + 1])
    w = torch.from_numpy(alpha[inside])
    Ra, Rb = a[:, :3, :3], b[:, :3, :3]
    R = Ra @ se3.so3_exp(w[:, None] * se3.so3_log(Ra.transpose(-1, -2) @ Rb))
    t = (1 - w[:, None]) * a[:, :3, 3] + w[:, None] * b[:, :3, 3]
    out[inside] = se3.from_rt(R, t).numpy()
    return out


def poses_for_frames(traj: Trajectory, timestamps: np.ndarray, path: Path) -> np.ndarray:
    """Ground truth for every frame: (N,4,4), NaN rows for frames without a pose.

    A trajectory with timestamps is matched by time; one without must have exactly one pose per frame.
    """
    n = len(timestamps)
    if traj.timestamps is None:
        if len(traj) != n:
            raise InputError(
                f"{path}: {len(traj)} poses for {n} images; ground truth without timestamps needs exactly one "
                "pose per image (or write it in TUM format with timestamps)"
            )
        return np.asarray(traj.poses, dtype=np.float64).copy()
    poses = interpolate_poses(traj.timestamps, traj.poses, timestamps)
    if not np.isfinite(poses[:, 0, 0]).any():
        raise InputError(
            f"{path}: no ground-truth timestamp lies near any image timestamp "
            f"(images {timestamps[0]:.3f}..{timestamps[-1]:.3f} s, poses {traj.timestamps.min():.3f}.."
            f"{traj.timestamps.max():.3f} s); check that both use the same clock"
        )
    return poses
