"""Sparse keypoint tracks in the dense BA (metricslam.slam.sparse_factors): exact tracks pull a perturbed problem
with noisy dense correspondences closer to the truth, and their own depths converge."""
from __future__ import annotations

import torch

from metricslam.geometry import se3
from metricslam.geometry.projective import project, relative_poses, unproject
from metricslam.slam.ba import BAOptions, dense_ba
from metricslam.slam.sparse_factors import SparseObservations, residuals
from metricslam.testing.ba_problems import synthetic_problem


def _exact_tracks(problem, count: int, seed: int) -> tuple[SparseObservations, torch.Tensor]:
    """Points at random sub-pixel positions and depths (2-5 m) of random hosts, observed exactly by every other
    keyframe within three of the host where they land inside the grid; returns them with their true depths."""
    g = torch.Generator().manual_seed(seed)
    K, h, w = problem.invdepths.shape
    poses = problem.poses_cw.double()
    intr = problem.intrinsics.double()
    host = torch.randint(0, K, (count,), generator=g)
    uv = torch.rand(count, 2, generator=g, dtype=torch.float64) * torch.tensor([w - 1.0, h - 1.0])
    inv = 1.0 / (2 + 3 * torch.rand(count, generator=g, dtype=torch.float64))
    point, frame = torch.meshgrid(torch.arange(count), torch.arange(K), indexing="ij")
    point, frame = point.reshape(-1), frame.reshape(-1)
    gap = (frame - host[point]).abs()
    near = (gap >= 1) & (gap <= 3)
    point, frame = point[near], frame[near]
    T = relative_poses(poses, host[point], frame)
    Xj = (T @ unproject(uv[point], inv[point], intr)[:, :, None])[:, :, 0]
    target = project(Xj, intr)
    inside = (Xj[:, 2] > 0.1) & (target[:, 0] > 0) & (target[:, 0] < w - 1) & (target[:, 1] > 0) & (target[:, 1] < h - 1)
    point, frame, target = point[inside], frame[inside], target[inside]
    f32 = torch.float32
    obs = SparseObservations(host=host, uv=uv.to(f32), invdepth=inv.to(f32), prior=torch.zeros(count),
                             prior_conf=torch.zeros(count), point=point, frame=frame, target=target.to(f32),
                             weight=torch.full((point.shape[0],), 10.0), robust_px=0.25)
    return obs, inv.to(f32)


def _pose_error(poses: torch.Tensor, truth: torch.Tensor) -> float:
    """RMS position error of the camera centres (metres)."""
    return float((se3.inverse(poses)[:, :3, 3] - se3.inverse(truth)[:, :3, 3]).norm(dim=-1).pow(2).mean().sqrt())


def _perturbed(problem, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xi = torch.randn(problem.poses_cw.shape[0], 6, generator=g, dtype=torch.float64) * torch.tensor(
        [0.02, 0.02, 0.02, 0.01, 0.01, 0.01], dtype=torch.float64)
    xi[0] = 0
    return se3.se3_exp(xi) @ problem.poses_cw


def test_exact_tracks_reduce_pose_error_of_a_noisy_dense_problem():
    truth = synthetic_problem(8, 12, 16, seed=3, target_noise=0.3, prior_noise=0.05)
    obs, inv_true = _exact_tracks(truth, 300, seed=4)
    start = _perturbed(truth, seed=5)
    opts = BAOptions(alpha=0.05)
    common = dict(intrinsics=truth.intrinsics, ii=truth.ii, jj=truth.jj, targets=truth.targets,
                  weights=truth.weights, prior_invdepth=truth.prior_invdepth, prior_conf=truth.prior_conf,
                  fixed=[0], iters=8, options=opts)
    dense_only, _ = dense_ba(start, truth.invdepths.clone(), **common)
    tracks = SparseObservations(**{**vars(obs), "invdepth": inv_true * 1.2})
    with_tracks, _ = dense_ba(start, truth.invdepths.clone(), sparse=tracks, **common)
    before, dense_err, sparse_err = (_pose_error(p, truth.poses_cw) for p in (start, dense_only, with_tracks))
    assert obs.point.shape[0] > 600
    assert dense_err < before
    assert sparse_err < 0.5 * dense_err
    # The point depths were started 20 % off and come back to the truth.
    assert float(((tracks.invdepth - inv_true) / inv_true).abs().median()) < 0.01
    assert float(residuals(tracks, with_tracks, truth.intrinsics, 0.1).median()) < 0.05


def test_tracks_alone_fix_the_poses_of_an_exact_problem():
    """With exact dense targets and exact tracks the BA returns to the true poses and point depths."""
    truth = synthetic_problem(6, 10, 12, seed=7)
    obs, inv_true = _exact_tracks(truth, 200, seed=8)
    tracks = SparseObservations(**{**vars(obs), "invdepth": inv_true * 0.9})
    poses, _ = dense_ba(_perturbed(truth, seed=9), truth.invdepths.clone(), truth.intrinsics, truth.ii, truth.jj,
                        truth.targets, truth.weights, prior_invdepth=truth.prior_invdepth,
                        prior_conf=truth.prior_conf, fixed=[0], iters=10, sparse=tracks)
    assert _pose_error(poses, truth.poses_cw) < 1e-3
    seen = torch.unique(tracks.point)
    assert seen.shape[0] > 150
    assert float(((tracks.invdepth - inv_true) / inv_true)[seen].abs().max()) < 1e-3
