"""KITTI odometry devkit metric: hand-built trajectories with known answers, and the kitti-odom-eval examples."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metricslam.geometry import se3
from metricslam.io.trajectory import read_trajectory
from metricslam.metrics.kitti import SEGMENT_LENGTHS, kitti_odometry_error, path_distances, segment_errors
from shared_paths import DATA

KITTI_EVAL = DATA / "trajectories" / "kitti_odom_eval"
STEP_M = 0.25  # exact in binary, so path distances are exact and segment ends are known in closed form
N = 4001  # 1000 m


def straight_line(n: int = N) -> np.ndarray:
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 2, 3] = STEP_M * np.arange(n)
    return poses


def expected_segments(n: int = N) -> list[tuple[int, int]]:
    """(first frame, length) of every devkit segment on the straight line: it ends at first + L / STEP_M + 1."""
    return [(f, L) for f in range(0, n, 10) for L in SEGMENT_LENGTHS if f + int(L / STEP_M) + 1 <= n - 1]


def yaw(angles: np.ndarray) -> np.ndarray:
    w = torch.zeros(len(angles), 3, dtype=torch.float64)
    w[:, 1] = torch.from_numpy(angles)
    return se3.so3_exp(w).numpy()


def test_scale_error_of_one_percent() -> None:
    gt = straight_line()
    est = gt.copy()
    est[:, :3, 3] *= 1.01
    result = kitti_odometry_error(gt, est)
    segs = expected_segments()
    # Each segment really spans L + 0.25 m (the devkit ends it at the first frame beyond L) but is divided by L.
    expected = np.mean([0.01 * (L + STEP_M) / L for _, L in segs]) * 100
    assert result["num_segments"] == len(segs)
    assert result["t_err_pct"] == pytest.approx(expected, rel=1e-9)
    assert result["t_err_pct"] == pytest.approx(1.0, abs=0.002)
    assert result["r_err_deg_per_100m"] == pytest.approx(0.0, abs=1e-9)
    for L in SEGMENT_LENGTHS:
        per = result["per_length"][L]
        assert per["num_segments"] == sum(1 for _, k in segs if k == L)
        assert per["t_err_pct"] == pytest.approx(100 * 0.01 * (L + STEP_M) / L, rel=1e-9)
    assert result["per_length"][800]["num_segments"] == 80  # starts 0, 10, ..., 790


def test_constant_yaw_rate_error() -> None:
    gt = straight_line()
    est = gt.copy()
    rate = np.radians(1.0) / 100.0  # heading drifts 1 degree per 100 m
    est[:, :3, :3] = yaw(rate * path_distances(gt))
    result = kitti_odometry_error(gt, est)
    expected = np.mean([np.degrees(rate * (L + STEP_M) / L) * 100 for _, L in expected_segments()])
    assert result["r_err_deg_per_100m"] == pytest.approx(expected, rel=1e-9)
    assert result["t_err_pct"] > 0


def test_rigid_transform_and_identity_give_zero() -> None:
    gt = straight_line()
    gt[:, 0, 3] = 20 * np.sin(gt[:, 2, 3] / 100)  # a winding road
    gt[:, :3, :3] = yaw(np.cos(gt[:, 2, 3] / 100) / 5)
    T = se3.se3_exp(torch.tensor([3.0, -1, 2, 0.3, -0.2, 1.0], dtype=torch.float64)).numpy()
    for est in (gt, T @ gt):
        result = kitti_odometry_error(gt, est)
        assert result["num_segments"] > 0
        assert result["t_err_pct"] < 1e-9 and result["r_err_deg_per_100m"] < 1e-6


def test_short_path_has_no_segments() -> None:
    gt = straight_line(300)  # 75 m
    result = kitti_odometry_error(gt, gt)
    assert result["num_segments"] == 0 and result["t_err_pct"] is None and result["r_err_deg_per_100m"] is None
    assert result["per_length"][100]["t_err_pct"] is None


def test_missing_estimate_frames_skip_their_segments() -> None:
    gt = straight_line()
    est = gt.copy()
    est[:, :3, 3] *= 1.01
    frames = np.setdiff1d(np.arange(N), [0, 10, 421])  # 421 = 20 + 100 / 0.25 + 1 ends the (20, 100 m) segment
    seg = segment_errors(gt, est[frames], frames=frames)
    starts = {(int(f), int(L)) for f, L in zip(seg["first"], seg["length"])}
    assert not {(0, 100), (10, 800), (20, 100)} & starts
    assert {(20, 200), (30, 100)} <= starts
    assert len(starts) == len(seg["first"]) == len(expected_segments()) - 8 - 8 - 1
    np.testing.assert_allclose(seg["t_err"] * seg["length"], 0.01 * (seg["length"] + STEP_M), rtol=1e-9)
    with pytest.raises(ValueError):
        segment_errors(gt, est[:100])


def devkit_loop(gt: np.ndarray, est: np.ndarray) -> tuple[float, float, int]:
    """The devkit's calcSequenceErrors, written as plainly as the C++: the reference for the vectorised one."""
    dist = [0.0]
    for i in range(1, len(gt)):
        dist.append(dist[-1] + float(np.linalg.norm(gt[i, :3, 3] - gt[i - 1, :3, 3])))
    t_sum = r_sum = 0.0
    count = 0
    for first in range(0, len(gt), 10):
        for length in SEGMENT_LENGTHS:
            last = next((i for i in range(first, len(dist)) if dist[i] > dist[first] + length), -1)
            if last == -1:
                continue
            error = np.linalg.inv(np.linalg.inv(est[first]) @ est[last]) @ (np.linalg.inv(gt[first]) @ gt[last])
            t_sum += np.linalg.norm(error[:3, 3]) / length
            r_sum += np.arccos(max(min(0.5 * (np.trace(error[:3, :3]) - 1.0), 1.0), -1.0)) / length
            count += 1
    return t_sum / count * 100, np.degrees(r_sum / count) * 100, count


@pytest.mark.skipif(not KITTI_EVAL.is_dir(), reason="shared data not available")
@pytest.mark.parametrize("seq", ["09", "10"])
def test_kitti_odom_eval_examples(seq: str) -> None:
    gt = read_trajectory(KITTI_EVAL / "dataset" / "kitti_odom" / "gt_poses" / f"{seq}.txt").poses
    full = read_trajectory(KITTI_EVAL / "result" / "example_1" / f"{seq}.txt").poses
    result = kitti_odometry_error(gt, full)
    t_ref, r_ref, count = devkit_loop(gt, full)
    assert result["num_segments"] == count > 400
    assert result["t_err_pct"] == pytest.approx(t_ref, rel=1e-10)
    assert result["r_err_deg_per_100m"] == pytest.approx(r_ref, rel=1e-10)
    assert 0.1 < result["t_err_pct"] < 50  # a real visual odometry result, not a degenerate one

    # example_0 is monocular (arbitrary scale), lists frame indices (13 values per line) and lacks the first frames.
    rows = np.loadtxt(KITTI_EVAL / "result" / "example_0" / f"{seq}.txt")
    frames = rows[:, 0].astype(int)
    assert frames[0] > 0 and np.all(np.diff(frames) == 1)
    est = np.tile(np.eye(4), (len(rows), 1, 1))
    est[:, :3, :4] = rows[:, 1:].reshape(-1, 3, 4)
    p, g = est[:, :3, 3] - est[0, :3, 3], gt[frames, :3, 3] - gt[frames[0], :3, 3]
    est[:, :3, 3] *= np.sum(p * g) / np.sum(p * p)  # least-squares scale, as kitti-odom-eval --align scale
    partial = kitti_odometry_error(gt, est, frames=frames)
    # Only frame 0 of the missing ones starts segments (one per length); none ends that early.
    assert partial["num_segments"] == result["num_segments"] - len(SEGMENT_LENGTHS)
    assert 1 < partial["t_err_pct"] < 10 and 0.05 < partial["r_err_deg_per_100m"] < 1
