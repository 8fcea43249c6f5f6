"""Dense bundle adjustment over keyframe poses and per-pixel inverse depths, with metric depth priors.

Public API
----------
``BAOptions``
    Weights, damping, robust kernels and modes (a config dataclass; defaults follow DROID-SLAM's RGB-D mode).
``dense_ba(poses_cw, invdepths, intrinsics, ii, jj, targets, weights, prior_invdepth=None, prior_conf=None,
fixed=(0,), eta=None, iters=2, options=BAOptions()) -> (poses_cw, invdepths)``
    ``iters`` Gauss-Newton steps. poses_cw (K, 4, 4) world-to-camera; invdepths, prior_invdepth, prior_conf
    (K, h, w) (prior_conf 0 = no prior there; a missing prior_conf means 1 wherever prior_invdepth > 0);
    intrinsics [fx, fy, cx, cy] at grid resolution; ii, jj (E,) edges from source frame ii (whose depths are
    used) to target frame jj; targets (E, h, w, 2) pixel coordinates in frame jj of every grid pixel of frame ii;
    weights (E, h, w, 2) per-coordinate confidences; fixed: indices of poses held constant (the gauge); eta:
    depth damping (scalar, (K,) or (K, h, w)) used where a pixel has no prior. Returns new tensors.
``gauss_newton_step(...) -> (dx (K, 6), dz (K, h, w))``
    One damped Gauss-Newton increment in the units given (no normalisation): poses move by
    T <- exp(dx) T, inverse depths by d <- d + dz.
``refine_pose(pose_cw, kf_poses_cw, kf_invdepths, intrinsics, kf_index, targets, weights, iters, options)``
    Motion-only refinement of one frame against fixed keyframes (edges keyframe kf_index[e] -> the frame).
The current per-edge reprojection (for flow refinement) is ``metricslam.geometry.projective.reproject``.

Method
------
Residual r = target - p per coordinate, weighted by ``weight_scale`` * weight (DROID: 0.001 * confidence),
dropped where X'2 < min_depth, optionally re-weighted by a robust kernel (IRLS on the pixel's residual norm).
Per edge only the target-pose blocks are reduced over pixels (J_i = -J_j Adj(T_ij) is applied to the reduced
6x6 blocks, never per pixel). The depth block is diagonal: flow terms plus alpha * c * (d - d_prior)^2 where a
prior exists, plus the damping eta elsewhere. Poses are solved from the Schur complement in float64 with DROID's
LM damping H + lm diag(H) + ep I (Cholesky; more damping, then a pseudo-inverse, if it fails) and the depths
are back-substituted and clamped. Inside, inverse depths are divided (and translations multiplied) by their
mean so thresholds and damping are scene independent; this is only a change of units: metric priors give
metric results.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

from metricslam.errors import MetricSlamError
from metricslam.geometry import se3
from metricslam.geometry.projective import (
    MIN_DEPTH,
    IntrinsicsLike,
    pixel_grid,
    project,
    projection_jacobians,
    relative_poses,
    reproject,
    transform_points,
    unproject,
)

Kernel = Literal["none", "huber", "cauchy"]


@dataclass
class BAOptions:
    """Dense BA settings. Depth quantities are in the normalised unit (mean inverse depth 1)."""

    alpha: float = 0.05  # prior weight (DROID RGB-D mode), multiplied by the per-pixel prior confidence
    min_depth: float = MIN_DEPTH  # drop terms whose X'2 (= depth_j / depth_i) is below this
    lm: float = 1e-4  # LM damping of the reduced pose system: H + lm * diag(H) + ep * I
    ep: float = 0.1
    weight_scale: float = 1e-3  # flow weight = weight_scale * given weight (DROID: 0.001 * confidence)
    eta: float = 1e-3  # depth damping where there is no prior and no eta is passed
    robust: Kernel = "none"  # kernel on the flow residual norm
    robust_px: float = 2.0  # its threshold in pixels
    prior_robust: Kernel = "none"  # kernel on the prior residual |d - d_prior|
    prior_robust_thresh: float = 0.1  # its threshold in normalised inverse depth
    motion_only: bool = False  # poses only, depths held
    depth_only: bool = False  # depths only, poses held
    min_invdepth: float = 1e-3  # clamp after every step
    normalise: bool = True  # work in the normalised depth unit

    def __post_init__(self) -> None:
        if self.motion_only and self.depth_only:
            raise MetricSlamError("BAOptions: motion_only and depth_only are both true; set at most one of them")
        for name in ("robust", "prior_robust"):
            if getattr(self, name) not in ("none", "huber", "cauchy"):
                raise MetricSlamError(f"BAOptions.{name}={getattr(self, name)!r}: use none, huber or cauchy")


def robust_weight(residual: torch.Tensor, kind: Kernel, threshold: float) -> torch.Tensor:
    """IRLS weight of a non-negative residual magnitude for the named kernel (1 for 'none')."""
    if kind == "huber":
        return torch.where(residual <= threshold, torch.ones_like(residual), threshold / residual.clamp_min(1e-12))
    if kind == "cauchy":
        return 1.0 / (1.0 + (residual / threshold) ** 2)
    return torch.ones_like(residual)


@dataclass
class _Residuals:
    """Per-edge residual side of the linearisation, channel-first (E, 2, P) with P = h * w."""

    A: torch.Tensor  # (E, 6, 6) Adj(T_ij)
    Xj: torch.Tensor  # (E, 4, P) points in the target frame
    t: torch.Tensor  # (E, 3) translation of T_ij
    sw: torch.Tensor  # sqrt of the final per-coordinate weight
    swr: torch.Tensor  # sw * residual
    swJd: torch.Tensor  # sw * d p / d invdepth


def _residuals(poses_cw: torch.Tensor, invdepths: torch.Tensor, intrinsics: torch.Tensor, ii: torch.Tensor,
               jj: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, opts: BAOptions) -> _Residuals:
    """Weighted residuals and depth Jacobians; targets and weights are channel-first (E, 2, P)."""
    dtype = invdepths.dtype
    K, h, w = invdepths.shape
    P = h * w
    T = relative_poses(poses_cw, ii, jj)
    A = se3.adjoint(T).to(dtype)
    T = T.to(dtype)
    grid = pixel_grid(h, w, invdepths.device, dtype).reshape(1, P, 2).transpose(1, 2)
    Xj = transform_points(T, unproject(grid, invdepths.reshape(K, P)[ii], intrinsics, dim=1), dim=1)
    r = targets - project(Xj, intrinsics, dim=1)
    wt = weights * (Xj[:, 2] > opts.min_depth)[:, None]
    if opts.robust != "none":
        wt = wt * robust_weight(r.norm(dim=1), opts.robust, opts.robust_px)[:, None]
    sw = (opts.weight_scale * wt).sqrt()
    # The depth Jacobian is the cheap part of projection_jacobians; depth-only steps need nothing else.
    fx, fy = intrinsics[0], intrinsics[1]
    rho = 1.0 / Xj[:, 2].where(Xj[:, 2].abs() > 1e-6, torch.full_like(Xj[:, 2], 1e-6))
    t = T[:, :3, 3]
    Jd = torch.stack([(fx * t[:, 0, None] - t[:, 2, None] * fx * Xj[:, 0] * rho) * rho,
                      (fy * t[:, 1, None] - t[:, 2, None] * fy * Xj[:, 1] * rho) * rho], dim=1)
    return _Residuals(A=A, Xj=Xj, t=t, sw=sw, swr=sw * r, swJd=sw * Jd)


def _weighted_pose_jacobian(res: _Residuals, intrinsics: torch.Tensor) -> torch.Tensor:
    """[sqrt(W) J_j, sqrt(W) r] as (E, 2, 7, P): one batched matmul of it with itself gives both
    sum J^T W J (the 6x6 block) and sum J^T W r (the 7th column)."""
    J, _ = projection_jacobians(res.Xj, res.t, intrinsics, dim=1)
    E, _, _, P = J.shape
    out = J.new_empty(E, 2, 7, P)
    torch.mul(J, res.sw[:, :, None], out=out[:, :, :6])
    out[:, :, 6] = res.swr
    return out


def _depth_system(c: torch.Tensor, b: torch.Tensor, ii: torch.Tensor, invdepths: torch.Tensor,
                  prior_invdepth: torch.Tensor, prior_conf: torch.Tensor, eta: torch.Tensor, opts: BAOptions
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal depth block C and depth gradient (K, P) from the per-edge flow terms c, b (E, P), plus the
    prior where it exists, else the damping eta."""
    K = invdepths.shape[0]
    d = invdepths.reshape(K, -1)
    C = d.new_zeros(d.shape).index_add_(0, ii, c)
    bz = d.new_zeros(d.shape).index_add_(0, ii, b)
    dp = prior_invdepth.reshape(K, -1).to(d.dtype)
    has_prior = (prior_conf.reshape(K, -1) > 0) & (dp > 0)
    diff = d - dp
    a = opts.alpha * prior_conf.reshape(K, -1).to(d.dtype) * has_prior
    if opts.prior_robust != "none":
        a = a * robust_weight(diff.abs(), opts.prior_robust, opts.prior_robust_thresh)
    C = C + a + eta.to(d.dtype) * ~has_prior
    bz = bz - a * diff
    return C, bz


def _add_pair_blocks(H: torch.Tensor, X: torch.Tensor, e: torch.Tensor, f: torch.Tensor, A: torch.Tensor,
                     ii: torch.Tensor, jj: torch.Tensor) -> None:
    """H (K, K, 6, 6) += B_e^T X B_f for edge pairs (e, f), where B_e maps the pose increments of edge e to the
    increment of its relative pose seen by the target: dx_j - Adj(T_ij) dx_i (so J_i = -J_j Adj)."""
    At = A[e].transpose(1, 2)
    XA = X @ A[f]
    blocks = torch.cat([X, -XA, -At @ X, At @ XA])
    rows = torch.cat([jj[e], jj[e], ii[e], ii[e]])
    cols = torch.cat([jj[f], ii[f], jj[f], ii[f]])
    H.index_put_((rows, cols), blocks, accumulate=True)


def _add_edge_vectors(v: torch.Tensor, x: torch.Tensor, A: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor
                      ) -> None:
    """v (K, 6) += B_e^T x_e for every edge."""
    v.index_add_(0, torch.cat([jj, ii]), torch.cat([x, -(A.transpose(1, 2) @ x[..., None])[..., 0]]))


def _solve_damped(H: torch.Tensor, v: torch.Tensor, lm: float, ep: float) -> torch.Tensor:
    """Solve (H + lm diag(H) + ep I) x = v in float64; more damping, then a pseudo-inverse, if not positive definite."""
    H, v = H.double(), v.double()
    diag = H.diagonal()
    scale = float(diag.abs().mean().clamp_min(1e-12))
    for extra in (0.0, 1e-6 * scale, 1e-4 * scale, 1e-2 * scale):
        L, info = torch.linalg.cholesky_ex(H + torch.diag(lm * diag + ep + extra))
        if int(info) == 0:
            return torch.cholesky_solve(v[:, None], L)[:, 0]
    Hd = H + torch.diag(lm * diag + ep)
    if not bool(torch.isfinite(Hd).all() and torch.isfinite(v).all()):
        return torch.zeros_like(v)
    return torch.linalg.pinv(Hd, hermitian=True) @ v


def _solve_poses(H: torch.Tensor, v: torch.Tensor, fixed: torch.Tensor, opts: BAOptions) -> torch.Tensor:
    """Damped solve of the pose system (K, K, 6, 6) restricted to the free poses; (K, 6) float64, 0 if fixed."""
    free = torch.nonzero(~fixed)[:, 0]
    n = free.numel()
    dx = torch.zeros(fixed.shape[0], 6, dtype=torch.float64, device=H.device)
    if n:
        Hf = H[free][:, free].transpose(1, 2).reshape(6 * n, 6 * n)
        dx[free] = _solve_damped(Hf, v[free].reshape(-1), opts.lm, opts.ep).reshape(n, 6)
    return dx


def _edge_slots(ii: torch.Tensor, K: int) -> tuple[torch.Tensor, int]:
    """Slot of every edge in a (K, m) table of the edges grouped by source frame: ii * m + rank."""
    E = ii.shape[0]
    order = torch.argsort(ii, stable=True)
    counts = torch.bincount(ii, minlength=K)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(ii)
    rank[order] = torch.arange(E, device=ii.device) - starts[ii[order]]
    m = int(counts.max()) if E else 1
    return ii * m + rank, m


def _channels_first(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(E, h, w, 2) -> contiguous (E, 2, h * w)."""
    return x.to(dtype).reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2).contiguous()


def gauss_newton_step(poses_cw: torch.Tensor, invdepths: torch.Tensor, intrinsics: IntrinsicsLike,
                      ii: torch.Tensor, jj: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                      prior_invdepth: torch.Tensor, prior_conf: torch.Tensor, fixed: torch.Tensor,
                      eta: torch.Tensor, options: BAOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """One damped Gauss-Newton increment: dx (K, 6) float64 (zero for fixed poses) and dz (K, h, w).

    ``fixed`` is a (K,) bool mask, ``eta`` a (K, h, w) damping map; the other inputs are as in ``dense_ba``.
    """
    dtype = invdepths.dtype
    return _step(poses_cw, invdepths, intrinsics, ii, jj, _channels_first(targets, dtype),
                 _channels_first(weights.expand(*targets.shape), dtype), prior_invdepth, prior_conf, fixed, eta,
                 options)


def _step(poses_cw: torch.Tensor, invdepths: torch.Tensor, intrinsics: IntrinsicsLike, ii: torch.Tensor,
          jj: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, prior_invdepth: torch.Tensor,
          prior_conf: torch.Tensor, fixed: torch.Tensor, eta: torch.Tensor, options: BAOptions
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """gauss_newton_step with channel-first (E, 2, P) targets and weights."""
    K, h, w = invdepths.shape
    E, P = ii.shape[0], h * w
    intr = torch.as_tensor(intrinsics, dtype=invdepths.dtype, device=invdepths.device)
    res = _residuals(poses_cw, invdepths, intr, ii, jj, targets, weights, options)
    no_step = torch.zeros(K, 6, dtype=torch.float64, device=invdepths.device)

    if not options.motion_only:
        C, bz = _depth_system((res.swJd * res.swJd).sum(1), (res.swJd * res.swr).sum(1), ii, invdepths,
                              prior_invdepth, prior_conf, eta.reshape(K, -1), options)
        if options.depth_only or bool(fixed.all()):
            return no_step, (bz / C).reshape(K, h, w)

    J = _weighted_pose_jacobian(res, intr)
    Jf = J.view(E * 2, 7, P)
    Maug = (Jf @ Jf.transpose(1, 2)).view(E, 2, 7, 7).sum(1)
    M, g = Maug[:, :6, :6], Maug[:, :6, 6]  # per-edge sum J_j^T W J_j and sum J_j^T W r
    H = M.new_zeros(K, K, 6, 6)
    v = g.new_zeros(K, 6)
    edges = torch.arange(E, device=ii.device)
    if options.motion_only:
        _add_pair_blocks(H, M, edges, edges, res.A, ii, jj)
        _add_edge_vectors(v, g, res.A, ii, jj)
        return _solve_poses(H, v, fixed, options), torch.zeros_like(invdepths)

    # Schur complement. With q = C^-1/2, the coupling of edge e's relative-pose increment with the depths of
    # its source frame, scaled by q, is G_e = sum_c w J_j Jd q (6, P). Edges sharing a source frame share those
    # depths: the reduced system loses B_e^T (G_e G_f^T) B_f for every such pair (e, f), the gradient loses
    # B_e^T G_e (q bz), and back-substitution gives dz = q (q bz - sum_e G_e . (B_e dx)).
    q = C.rsqrt()
    qJd = res.swJd * q[ii][:, None]
    slot, m = _edge_slots(ii, K)
    # Row 6m of each frame holds q * bz so the same matmul also yields sum_e G_e (q bz).
    Gk = J.new_empty(K, m * 6 + 1, P)
    G = Gk[:, : m * 6].view(K, m, 6, P)
    used = torch.zeros(K * m, dtype=torch.bool, device=ii.device).index_fill_(0, slot, True).view(K, m)
    G[~used] = 0
    G[ii, slot - ii * m] = torch.addcmul(J[:, 0, :6] * qJd[:, 0, None], J[:, 1, :6], qJd[:, 1, None])
    qb = q * bz
    Gk[:, m * 6] = qb
    gram_aug = Gk @ Gk.transpose(1, 2)
    gram = gram_aug[:, : m * 6, : m * 6].reshape(K, m, 6, m, 6).transpose(2, 3).reshape(K * m * m, 6, 6)
    slot_edge = torch.full((K * m,), -1, dtype=torch.long, device=ii.device).index_copy_(0, slot, edges)
    pe = slot_edge.view(K, m, 1).expand(K, m, m).reshape(-1)
    pf = slot_edge.view(K, 1, m).expand(K, m, m).reshape(-1)
    pair = (pe >= 0) & (pf >= 0)
    _add_pair_blocks(H, torch.cat([M, -gram[pair]]), torch.cat([edges, pe[pair]]), torch.cat([edges, pf[pair]]),
                     res.A, ii, jj)
    u = gram_aug[:, : m * 6, m * 6].reshape(K * m, 6)[slot]
    _add_edge_vectors(v, g - u, res.A, ii, jj)
    dx = _solve_poses(H, v, fixed, options)

    dxr = dx.to(G.dtype)
    delta = dxr[jj] - (res.A @ dxr[ii][..., None])[..., 0]
    delta_slots = G.new_zeros(K * m, 6).index_copy_(0, slot, delta).view(K, 1, m * 6)
    dz = q * (qb - (delta_slots @ Gk[:, : m * 6])[:, 0])
    return dx, dz.reshape(K, h, w)


def _as_mask(fixed: Sequence[int] | torch.Tensor, K: int, device: torch.device) -> torch.Tensor:
    mask = torch.zeros(K, dtype=torch.bool, device=device)
    idx = torch.as_tensor(fixed, dtype=torch.long, device=device).reshape(-1)
    mask[idx] = True
    return mask


def _eta_map(eta: float | torch.Tensor | None, default: float, K: int, h: int, w: int,
             like: torch.Tensor) -> torch.Tensor:
    if eta is None:
        eta = default
    eta = torch.as_tensor(eta, dtype=like.dtype, device=like.device)
    if eta.dim() == 1:
        eta = eta[:, None, None]
    return eta.expand(K, h, w)


def _check_shapes(poses_cw: torch.Tensor, invdepths: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor,
                  targets: torch.Tensor, weights: torch.Tensor) -> None:
    K, h, w = invdepths.shape
    E = ii.shape[0]
    if poses_cw.shape != (K, 4, 4):
        raise ValueError(f"poses_cw has shape {tuple(poses_cw.shape)}, expected ({K}, 4, 4) to match invdepths")
    if jj.shape != (E,) or targets.shape != (E, h, w, 2):
        raise ValueError(f"edges/targets shapes {tuple(jj.shape)}, {tuple(targets.shape)} do not match "
                         f"{E} edges on a {h}x{w} grid")
    if weights.dim() != 4 or weights.shape[:3] != (E, h, w):
        raise ValueError(f"weights has shape {tuple(weights.shape)}, expected ({E}, {h}, {w}, 2)")
    if E and (int(ii.min()) < 0 or int(jj.min()) < 0 or int(ii.max()) >= K or int(jj.max()) >= K):
        raise ValueError(f"edge indices outside 0..{K - 1}")


def dense_ba(poses_cw: torch.Tensor, invdepths: torch.Tensor, intrinsics: IntrinsicsLike, ii: torch.Tensor,
             jj: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
             prior_invdepth: torch.Tensor | None = None, prior_conf: torch.Tensor | None = None,
             fixed: Sequence[int] | torch.Tensor = (0,), eta: float | torch.Tensor | None = None,
             iters: int = 2, options: BAOptions | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``iters`` Gauss-Newton steps of dense BA; returns new (poses_cw, invdepths). See the module docstring."""
    opts = options or BAOptions()
    _check_shapes(poses_cw, invdepths, ii, jj, targets, weights)
    K, h, w = invdepths.shape
    device = invdepths.device
    fixed_mask = _as_mask(fixed, K, device)
    eta_map = _eta_map(eta, opts.eta, K, h, w, invdepths)
    if prior_invdepth is None:
        prior_invdepth = torch.zeros_like(invdepths)
        prior_conf = torch.zeros_like(invdepths)
    elif prior_conf is None:
        prior_conf = (prior_invdepth > 0).to(invdepths.dtype)

    scale = 1.0
    if opts.normalise and ii.numel():
        src = invdepths[torch.unique(ii)]
        positive = src > 0
        if bool(positive.any()):
            scale = float(src[positive].mean())
    poses = poses_cw.clone()
    poses[:, :3, 3] *= scale
    d = invdepths / scale
    dp = prior_invdepth / scale

    targets_cf = _channels_first(targets, d.dtype)
    weights_cf = _channels_first(weights.expand(*targets.shape), d.dtype)
    for _ in range(iters):
        dx, dz = _step(poses, d, intrinsics, ii, jj, targets_cf, weights_cf, dp, prior_conf, fixed_mask, eta_map,
                       opts)
        if not opts.depth_only:
            poses = se3.se3_exp(dx.to(poses.dtype)) @ poses
        if not opts.motion_only:
            d = (d + dz).clamp_min(opts.min_invdepth)

    poses_out = poses_cw.clone()
    if not opts.depth_only:
        poses[:, :3, 3] /= scale
        poses_out[~fixed_mask] = poses[~fixed_mask]
    invdepths_out = invdepths.clone() if opts.motion_only else d * scale
    return poses_out, invdepths_out


def refine_pose(pose_cw: torch.Tensor, kf_poses_cw: torch.Tensor, kf_invdepths: torch.Tensor,
                intrinsics: IntrinsicsLike, kf_index: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                iters: int = 4, options: BAOptions | None = None) -> torch.Tensor:
    """Motion-only BA of one frame (pose_cw (4, 4)) against fixed keyframes.

    Edge e maps keyframe kf_index[e]'s grid into the frame: targets (E, h, w, 2), weights (E, h, w, 2).
    Returns the refined world-to-camera pose (4, 4).
    """
    K, h, w = kf_invdepths.shape
    poses = torch.cat([kf_poses_cw, pose_cw[None].to(kf_poses_cw.dtype)])
    invdepths = torch.cat([kf_invdepths, torch.ones_like(kf_invdepths[:1])])
    jj = torch.full_like(kf_index, K)
    opts = replace(options or BAOptions(), motion_only=True, depth_only=False)
    poses, _ = dense_ba(poses, invdepths, intrinsics, kf_index, jj, targets, weights, fixed=range(K),
                        iters=iters, options=opts)
    return poses[K]


def dense_reference_step(poses_cw: torch.Tensor, invdepths: torch.Tensor, intrinsics: IntrinsicsLike,
                         ii: torch.Tensor, jj: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                         prior_invdepth: torch.Tensor, prior_conf: torch.Tensor, fixed: torch.Tensor,
                         eta: torch.Tensor, options: BAOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """``gauss_newton_step`` done the straightforward way: per-pixel Jacobians of both poses from ``reproject``,
    the full dense normal equations over the free poses and all K h w depths, one dense Cholesky solve.

    O((6 K + K h w)^3) time and O((6 K + K h w)^2) memory: the reference the Schur solver is tested and
    benchmarked against. With lm = ep = 0 it equals the Schur step; otherwise lm and ep damp the pose diagonal
    of the full system (the Schur solver damps the reduced one, as DROID does).
    """
    K, h, w = invdepths.shape
    P, E = h * w, ii.shape[0]
    coords, valid, Ji, Jj, Jd = reproject(poses_cw, invdepths, intrinsics, ii, jj, jacobians=True,
                                          min_depth=options.min_depth)
    r = (targets.to(coords.dtype) - coords).reshape(E, P, 2)
    wt = (weights.to(coords.dtype).expand_as(coords) * options.weight_scale * valid[..., None]).reshape(E, P, 2)
    if options.robust != "none":
        wt = wt * robust_weight(r.norm(dim=-1), options.robust, options.robust_px)[..., None]
    Ji, Jj, Jd = Ji.reshape(E, P, 2, 6), Jj.reshape(E, P, 2, 6), Jd.reshape(E, P, 2)

    Hpp = r.new_zeros(K, K, 6, 6)
    Hpd = r.new_zeros(K, K, 6, P)  # pose, depth frame, pose parameter, pixel
    vp = r.new_zeros(K, 6)
    for a, Ja in ((ii, Ji), (jj, Jj)):
        for b_, Jb in ((ii, Ji), (jj, Jj)):
            Hpp.index_put_((a, b_), torch.einsum("epci,epc,epcj->eij", Ja, wt, Jb), accumulate=True)
        Hpd.index_put_((a, ii), torch.einsum("epci,epc,epc->eip", Ja, wt, Jd), accumulate=True)
        vp.index_add_(0, a, torch.einsum("epci,epc,epc->ei", Ja, wt, r))
    C, bz = _depth_system((wt * Jd * Jd).sum(-1), (wt * Jd * r).sum(-1), ii, invdepths, prior_invdepth,
                          prior_conf, eta.reshape(K, -1), options)

    N = 6 * K + K * P
    H = torch.zeros(N, N, dtype=torch.float64, device=invdepths.device)
    H[:6 * K, :6 * K] = Hpp.transpose(1, 2).reshape(6 * K, 6 * K)
    H[:6 * K, 6 * K:] = Hpd.transpose(1, 2).reshape(6 * K, K * P)
    H[6 * K:, :6 * K] = H[:6 * K, 6 * K:].T
    H[6 * K:, 6 * K:] = torch.diag(C.reshape(-1).double())
    rhs = torch.cat([vp.reshape(-1), bz.reshape(-1)]).double()
    pose_free = (~fixed).repeat_interleave(6)
    keep = torch.cat([pose_free, torch.ones(K * P, dtype=torch.bool, device=H.device)])
    H, rhs = H[keep][:, keep], rhs[keep]
    n6 = int(pose_free.sum())
    damp = torch.zeros_like(rhs)
    damp[:n6] = options.lm * H.diagonal()[:n6] + options.ep
    x = torch.cholesky_solve(rhs[:, None], torch.linalg.cholesky(H + torch.diag(damp)))[:, 0]
    dx = torch.zeros(K, 6, dtype=torch.float64, device=H.device)
    dx[~fixed] = x[:n6].reshape(-1, 6)
    return dx, x[n6:].reshape(K, h, w).to(invdepths.dtype)
