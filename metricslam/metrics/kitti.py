"""The KITTI odometry benchmark metric (devkit evaluate_odometry.cpp), computed with vectorised numpy.

Definition (as in the devkit):
- path distance d_i along the ground truth: cumulative length of the straight steps between consecutive positions;
- segments start every ``step`` frames (10) and have nominal lengths 100, 200, ..., 800 m; a segment starting at
  frame a ends at the first frame b with d_b > d_a + length (segments that would run past the end are skipped);
- error pose E = (est_a^-1 est_b)^-1 (gt_a^-1 gt_b); translation error |t(E)|, rotation error
  arccos(clip((trace R(E) - 1) / 2, -1, 1)), both divided by the nominal length;
- t_err (%) and r_err (deg per 100 m) are means over all segments of all lengths.
No alignment is applied: relative poses are unchanged by any rigid transform of the whole estimate, but not by
a scale; callers that scale-align first must say so. Distances are float64 (the devkit uses float32).
"""
from __future__ import annotations

from typing import Any

import numpy as np

SEGMENT_LENGTHS: tuple[int, ...] = (100, 200, 300, 400, 500, 600, 700, 800)
STEP_FRAMES = 10


def path_distances(poses: np.ndarray) -> np.ndarray:
    """Cumulative path length (N,) of camera positions of (N, 4, 4) poses, starting at 0."""
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def segment_errors(
    gt: np.ndarray,
    est: np.ndarray,
    lengths: tuple[int, ...] = SEGMENT_LENGTHS,
    step: int = STEP_FRAMES,
    frames: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Errors of every devkit segment.

    ``gt`` is (N, 4, 4) camera-to-world poses of every frame; ``est`` the same for the same frames, or, with
    ``frames`` (M,) ground-truth frame indices, (M, 4, 4) poses of just those frames: segments whose first or
    last frame has no estimate are skipped (as kitti-odom-eval does for files that list frame indices).
    Returns arrays of equal length: 'first' and 'last' frame, 'length' (nominal, m), 't_err' (m per m),
    'r_err' (rad per m).
    """
    if gt.ndim != 3 or gt.shape[1:] != (4, 4) or est.ndim != 3 or est.shape[1:] != (4, 4):
        raise ValueError(f"need (N, 4, 4) pose arrays, got {gt.shape} and {est.shape}")
    frames = np.arange(len(gt)) if frames is None else np.asarray(frames, dtype=np.int64)
    if len(frames) != len(est) or np.any((frames < 0) | (frames >= len(gt))):
        raise ValueError(f"{len(est)} estimated poses do not match {len(gt)} ground-truth frames")
    slot = np.full(len(gt), -1, dtype=np.int64)  # estimate row of each ground-truth frame, -1 when absent
    slot[frames] = np.arange(len(frames))

    dist = path_distances(gt)
    first = np.arange(0, len(gt), step)
    seg_len = np.asarray(lengths, dtype=np.float64)
    # First frame whose distance strictly exceeds the target: searchsorted(side='right') on the sorted distances.
    last = np.searchsorted(dist, dist[first][:, None] + seg_len[None, :], side="right")
    first = np.broadcast_to(first[:, None], last.shape)
    valid = last < len(gt)
    valid[valid] &= (slot[first[valid]] >= 0) & (slot[last[valid]] >= 0)
    first_idx, last_idx = first[valid], last[valid]
    length = np.broadcast_to(seg_len[None, :], last.shape)[valid]

    delta_gt = np.linalg.inv(gt[first_idx]) @ gt[last_idx]
    delta_est = np.linalg.inv(est[slot[first_idx]]) @ est[slot[last_idx]]
    err = np.linalg.inv(delta_est) @ delta_gt
    t_err = np.linalg.norm(err[:, :3, 3], axis=1)
    cos = 0.5 * (np.trace(err[:, :3, :3], axis1=1, axis2=2) - 1.0)
    r_err = np.arccos(np.clip(cos, -1.0, 1.0))
    return {"first": first_idx, "last": last_idx, "length": length, "t_err": t_err / length, "r_err": r_err / length}


def _summary(t_err: np.ndarray, r_err: np.ndarray) -> dict[str, float | int | None]:
    if len(t_err) == 0:
        return {"t_err_pct": None, "r_err_deg_per_100m": None, "num_segments": 0}
    return {
        "t_err_pct": float(np.mean(t_err) * 100.0),
        "r_err_deg_per_100m": float(np.degrees(np.mean(r_err)) * 100.0),
        "num_segments": int(len(t_err)),
    }


def kitti_odometry_error(
    gt: np.ndarray,
    est: np.ndarray,
    lengths: tuple[int, ...] = SEGMENT_LENGTHS,
    step: int = STEP_FRAMES,
    frames: np.ndarray | None = None,
) -> dict:
    """The devkit's t_err (%) and r_err (deg/100 m) over all segments, plus the same per segment length.

    Returns {'t_err_pct', 'r_err_deg_per_100m', 'num_segments', 'per_length': {length: {...}}}; the errors are None
    when the ground-truth path is too short for any segment. ``frames``: see segment_errors.
    """
    seg = segment_errors(gt, est, lengths, step, frames)
    result: dict[str, Any] = dict(_summary(seg["t_err"], seg["r_err"]))
    result["per_length"] = {
        int(L): _summary(seg["t_err"][seg["length"] == L], seg["r_err"][seg["length"] == L]) for L in lengths
    }
    return result
