"""Sparse keypoint tracks as reprojection factors of the dense BA, reduced onto the poses by their own Schur
complement.

A track is a point with one inverse depth d_p anchored at its sub-pixel location u_p in its host keyframe h_p;
every other keyframe j that observes it contributes r = target - proj(T_j T_h^-1 [x(u_p), y(u_p), 1, d_p]).
This is the dense term of one grid pixel with an edge (h_p, j) and a free sub-pixel position, so it shares the
dense BA's Jacobians (``metricslam.geometry.projective``), its robust kernel idea and its depth-prior term. Each
point depth is an independent scalar: its block is diagonal, and eliminating it gives, per point, 6x6 blocks
between the relative poses of every pair of its observations. Those blocks and the per-observation terms are
summed per sparse edge (host, observer) and per pair of sparse edges before they enter the reduced pose system
(``metricslam.slam.pose_system.PoseSystem``), so its size depends on the keyframe graph, not on the point count.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from metricslam.geometry import se3
from metricslam.geometry.projective import depth_jacobian, pose_jacobian, project, relative_poses, unproject
from metricslam.slam.ba import BAOptions, _depth_system, robust_weight

if TYPE_CHECKING:
    from metricslam.slam.pose_system import PoseSystem


@dataclass
class SparseObservations:
    """Keypoint tracks in a BA problem's frame indexing; pixels are grid pixels (the BA's intrinsics).

    ``weight`` is per observation and per coordinate, on the scale of the dense weights (a dense grid coordinate
    of confidence 1 weighs 1); the BA multiplies it by its ``weight_scale`` like the dense weights. ``robust_px``
    is the threshold of the BA's robust kernel on the observation's residual norm (grid pixels)."""

    host: torch.Tensor  # (N,) long: frame of each point's host keyframe
    uv: torch.Tensor  # (N, 2) the point's pixel in its host
    invdepth: torch.Tensor  # (N,) the point's inverse depth in its host (updated by dense_ba)
    prior: torch.Tensor  # (N,) prior inverse depth at the point (0 = none)
    prior_conf: torch.Tensor  # (N,) its confidence
    point: torch.Tensor  # (M,) long: point of each observation
    frame: torch.Tensor  # (M,) long: observing frame (never the point's host)
    target: torch.Tensor  # (M, 2) observed pixel
    weight: torch.Tensor  # (M,)
    robust_px: float = 0.25

    def rescaled(self, unit: float) -> SparseObservations:
        """A copy with inverse depths divided by ``unit`` (the BA's normalised depth unit)."""
        return replace(self, invdepth=self.invdepth / unit, prior=self.prior / unit)

    def linearise(self, system: PoseSystem, poses_cw: torch.Tensor, intrinsics: torch.Tensor, eta: float,
                  options: BAOptions) -> SparseSchur:
        """``add_sparse_terms`` (the dense BA calls this, so that it needs no import of this module)."""
        return add_sparse_terms(system, self, poses_cw, intrinsics, eta, options)


def transfer(obs: SparseObservations, poses_cw: torch.Tensor, intrinsics: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative poses T_j T_h^-1 (M, 4, 4) and the points in the observing frames, homogeneous (M, 4)."""
    T = relative_poses(poses_cw, obs.host[obs.point], obs.frame).to(obs.invdepth.dtype)
    X = unproject(obs.uv[obs.point], obs.invdepth[obs.point], intrinsics)
    return T, (T @ X[:, :, None])[:, :, 0]


def residuals(obs: SparseObservations, poses_cw: torch.Tensor, intrinsics: torch.Tensor, min_depth: float
              ) -> torch.Tensor:
    """Reprojection error norm of every observation (pixels of ``intrinsics``); inf behind the camera."""
    _, Xj = transfer(obs, poses_cw, intrinsics)
    err = (obs.target - project(Xj, intrinsics)).norm(dim=-1)
    return torch.where(Xj[:, 2] > min_depth, err, torch.full_like(err, float("inf")))


@dataclass
class SparseSchur:
    """What the back-substitution of the point depths needs after the pose solve."""

    edge: torch.Tensor  # (M,) sparse edge of each observation
    host: torch.Tensor  # (S,) host frame of each sparse edge
    frame: torch.Tensor  # (S,) observing frame of each sparse edge
    A: torch.Tensor  # (S, 6, 6) Adj(T_j T_h^-1), float64
    F: torch.Tensor  # (M, 6) q_p w J_j^T J_d per observation
    point: torch.Tensor  # (M,)
    q: torch.Tensor  # (N,) C_p^-1/2
    qb: torch.Tensor  # (N,) q_p times the point's depth gradient

    def depth_increment(self, dx: torch.Tensor | None) -> torch.Tensor:
        """dz_p = q_p (q_p b_p - sum_o F_o . (dx_j - Adj dx_h)) for the pose increments dx (K, 6) (None: poses
        held)."""
        if dx is None:
            return self.q * self.qb
        delta = dx[self.frame] - (self.A @ dx[self.host][:, :, None])[:, :, 0]
        coupled = (self.F * delta[self.edge].to(self.F.dtype)).sum(1)
        return self.q * (self.qb - self.qb.new_zeros(self.qb.shape).index_add_(0, self.point, coupled))


def _pairs_within_points(point: torch.Tensor, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered pair (a, b) of observations of the same point (a == b included)."""
    order = torch.argsort(point, stable=True)
    counts = torch.bincount(point, minlength=N)
    starts = torch.cumsum(counts, 0) - counts
    reps = counts[point[order]]
    a = torch.repeat_interleave(order, reps)
    first = torch.repeat_interleave(torch.cumsum(reps, 0) - reps, reps)
    rank = torch.arange(a.shape[0], device=point.device) - first
    return a, order[starts[point[a]] + rank]


def add_sparse_terms(system: PoseSystem, obs: SparseObservations, poses_cw: torch.Tensor, intrinsics: torch.Tensor,
                     eta: float, options: BAOptions) -> SparseSchur:
    """Linearise the tracks at the current state, add their Schur-reduced terms to ``system``, and return what
    the back-substitution of their depths needs. ``eta`` damps point depths without a prior; the dense BA's
    per-keyframe scale anchor does not apply to points (one point has no frame-wide scale to anchor)."""
    N, K = obs.host.shape[0], poses_cw.shape[0]
    T, Xj = transfer(obs, poses_cw, intrinsics)
    r = obs.target - project(Xj, intrinsics)
    w = options.weight_scale * obs.weight * (Xj[:, 2] > options.min_depth)
    if options.robust != "none":
        w = w * robust_weight((r * r).sum(1).sqrt(), options.robust, obs.robust_px)
    Jj = pose_jacobian(Xj, intrinsics)  # (M, 2, 6)
    Jd = depth_jacobian(Xj, T[:, :3, 3], intrinsics)  # (M, 2)
    wJj = Jj * w[:, None, None]
    M_o = wJj.transpose(1, 2) @ Jj
    g_o = (wJj.transpose(1, 2) @ r[:, :, None])[:, :, 0]
    f_o = (wJj.transpose(1, 2) @ Jd[:, :, None])[:, :, 0]
    C, b = _depth_system((w[:, None] * Jd * Jd).sum(1, keepdim=True), (w[:, None] * Jd * r).sum(1, keepdim=True),
                         obs.point, obs.invdepth[:, None], obs.prior[:, None], obs.prior_conf[:, None],
                         torch.full((N, 1), eta, dtype=obs.invdepth.dtype, device=obs.invdepth.device),
                         replace(options, scale_anchor=0.0))
    C, b = C[:, 0], b[:, 0]
    q = C.rsqrt()
    qb = q * b
    F = f_o * q[obs.point, None]

    host_o = obs.host[obs.point]
    keys, edge = torch.unique(host_o * K + obs.frame, return_inverse=True)
    S = keys.shape[0]
    hh, jj = torch.div(keys, K, rounding_mode="floor"), keys % K
    A = se3.adjoint(relative_poses(poses_cw, hh, jj).double())
    d64 = torch.float64
    M_e = M_o.new_zeros(S, 6, 6, dtype=d64).index_add_(0, edge, M_o.double())
    v_e = g_o.new_zeros(S, 6, dtype=d64).index_add_(0, edge, (g_o - F * qb[obs.point, None]).double())
    local = torch.arange(S, device=edge.device)
    system.add_edge_pairs(M_e, local, local, A, hh, jj)
    system.add_edge_vectors(v_e, A, hh, jj)
    a, c = _pairs_within_points(obs.point, N)
    pair_keys, pair = torch.unique(edge[a] * S + edge[c], return_inverse=True)
    outer = F[a, :, None].double() * F[c, None, :].double()
    X = outer.new_zeros(pair_keys.shape[0], 6, 6).index_add_(0, pair, outer)
    e, f = torch.div(pair_keys, S, rounding_mode="floor"), pair_keys % S
    system.add_edge_pairs(-X, e, f, A, hh, jj)
    return SparseSchur(edge=edge, host=hh, frame=jj, A=A, F=F.double(), point=obs.point, q=q.double(),
                       qb=qb.double())
