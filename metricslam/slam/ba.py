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
class _Linearisation:
    """Per-edge quantities reduced over pixels where possible (P = h * w)."""

    A: torch.Tensor  # (E, 6, 6) Adj(T_ij)
    M: torch.Tensor  # (E, 6, 6) sum J_j^T W J_j
    g: torch.Tensor  # (E, 6) sum J_j^T W r
    F: torch.Tensor  # (E, 6, P) sum over coordinates of w Jd J_j (coupling of target pose and source depth)
    c: torch.Tensor  # (E, P) sum w Jd^2
    b: torch.Tensor  # (E, P) sum w Jd r


def _linearise(poses_cw: torch.Tensor, invdepths: torch.Tensor, intrinsics: torch.Tensor, ii: torch.Tensor,
               jj: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, opts: BAOptions) -> _Linearisation:
    dtype = invdepths.dtype
    E = ii.shape[0]
    K, h, w = invdepths.shape
    T = relative_poses(poses_cw, ii, jj)
    A = se3.adjoint(T).to(dtype)
    T = T.to(dtype)
    X = unproject(pixel_grid(h, w, invdepths.device, dtype), invdepths[ii], intrinsics)
    Xj = transform_points(T, X)
    r = targets.to(dtype) - project(Xj, intrinsics)
    wt = weights.to(dtype).expand_as(r) * (opts.weight_scale * (Xj[..., 2] > opts.min_depth).to(dtype))[..., None]
    if opts.robust != "none":
        wt = wt * robust_weight(r.norm(dim=-1), opts.robust, opts.robust_px)[..., None]
    J, Jd = projection_jacobians(Xj, T[:, None, None, :3, 3], intrinsics)
    J, Jd, r, wt = J.reshape(E, -1, 2, 6), Jd.reshape(E, -1, 2), r.reshape(E, -1, 2), wt.reshape(E, -1, 2)
    wr = wt * r
    wJd = wt * Jd
    return _Linearisation(
        A=A,
        M=torch.einsum("epci,epc,epcj->eij", J, wt, J),
        g=torch.einsum("epci,epc->ei", J, wr),
        F=torch.einsum("epci,epc->eip", J, wJd),
        c=(wJd * Jd).sum(-1),
        b=(wJd * r).sum(-1),
    )


def _pose_system(lin: _Linearisation, ii: torch.Tensor, jj: torch.Tensor, K: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose-pose Hessian (K, K, 6, 6) and gradient (K, 6) from the per-edge target-pose blocks."""
    At = lin.A.transpose(1, 2)
    AtM = At @ lin.M
    blocks = torch.cat([AtM @ lin.A, -AtM, -AtM.transpose(1, 2), lin.M])
    H = lin.M.new_zeros(K, K, 6, 6)
    H.index_put_((torch.cat([ii, ii, jj, jj]), torch.cat([ii, jj, ii, jj])), blocks, accumulate=True)
    v = lin.g.new_zeros(K, 6)
    v.index_add_(0, torch.cat([ii, jj]), torch.cat([-(At @ lin.g[..., None])[..., 0], lin.g]))
    return H, v


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


def _solve_damped(H: torch.Tensor, v: torch.Tensor, lm: float, ep: float) -> torch.Tensor:
    """Solve (H + lm diag(H) + ep I) x = v in float64; more damping, then a pseudo-inverse, if not positive definite."""
    H, v = H.double(), v.double()
    diag = H.diagonal()
    scale = diag.abs().mean().clamp_min(1e-12)
    extra = 0.0
    for _ in range(4):
        L, info = torch.linalg.cholesky_ex(H + torch.diag(lm * diag + ep + extra))
        if int(info) == 0:
            return torch.cholesky_solve(v[:, None], L)[:, 0]
        extra = float(scale) * (1e-6 if extra == 0.0 else 100.0 * extra / float(scale))
    Hd = H + torch.diag(lm * diag + ep)
    if not bool(torch.isfinite(Hd).all() and torch.isfinite(v).all()):
        return torch.zeros_like(v)
    return torch.linalg.pinv(Hd, hermitian=True) @ v


def _edge_slots(ii: torch.Tensor, jj: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of every edge among the edges sharing its source frame, and the (K, m + 1) pose index of each slot.

    Slot 0 of frame k is pose k itself, slot rank + 1 is the target pose of that edge; unused slots hold K.
    """
    E = ii.shape[0]
    order = torch.argsort(ii, stable=True)
    counts = torch.bincount(ii, minlength=K)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(ii)
    rank[order] = torch.arange(E, device=ii.device) - starts[ii[order]]
    m = int(counts.max()) if E else 0
    slots = torch.full((K, m + 1), K, dtype=torch.long, device=ii.device)
    slots[:, 0] = torch.arange(K, device=ii.device)
    slots[ii, rank + 1] = jj
    return rank, slots


def gauss_newton_step(poses_cw: torch.Tensor, invdepths: torch.Tensor, intrinsics: IntrinsicsLike,
                      ii: torch.Tensor, jj: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                      prior_invdepth: torch.Tensor, prior_conf: torch.Tensor, fixed: torch.Tensor,
                      eta: torch.Tensor, options: BAOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """One damped Gauss-Newton increment: dx (K, 6) float64 (zero for fixed poses) and dz (K, h, w).

    ``fixed`` is a (K,) bool mask, ``eta`` a (K, h, w) damping map; the other inputs are as in ``dense_ba``.
    """
    K, h, w = invdepths.shape
    intr = torch.as_tensor(intrinsics, dtype=invdepths.dtype, device=invdepths.device)
    lin = _linearise(poses_cw, invdepths, intr, ii, jj, targets, weights, options)
    dx = torch.zeros(K + 1, 6, dtype=torch.float64, device=invdepths.device)
    free = torch.nonzero(~fixed)[:, 0]
    if options.depth_only or free.numel() == 0:
        H = v = None
    else:
        H, v = _pose_system(lin, ii, jj, K + 1)
    if options.motion_only:
        if H is not None:
            dx[free] = _solve_damped(H[free][:, free].transpose(1, 2).reshape(-1, free.numel() * 6),
                                     v[free].reshape(-1), options.lm, options.ep).reshape(-1, 6)
        return dx[:K], torch.zeros_like(invdepths)

    C, bz = _depth_system(lin.c, lin.b, ii, invdepths, prior_invdepth, prior_conf, eta.reshape(K, -1), options)
    Q = 1.0 / C
    if H is None:
        return dx[:K], (Q * bz).reshape(K, h, w)

    # Schur complement: the depths of frame k couple the poses in its slots (itself and its edges' targets).
    rank, slots = _edge_slots(ii, jj, K)
    m1 = slots.shape[1]
    P = h * w
    G = lin.F.new_zeros(K, m1, 6, P)
    G[:, 0].index_add_(0, ii, -(lin.A.transpose(1, 2) @ lin.F))
    G[ii, rank + 1] = lin.F
    Gf = G.reshape(K, m1 * 6, P)
    S = ((Gf * Q[:, None]) @ Gf.transpose(1, 2)).reshape(K, m1, 6, m1, 6).transpose(2, 3)
    pa = slots[:, :, None].expand(K, m1, m1)
    pb = slots[:, None, :].expand(K, m1, m1)
    H = H.index_put((pa, pb), -S, accumulate=True)
    u = (Gf @ (Q * bz)[..., None]).reshape(K * m1, 6)
    v = v.index_add(0, slots.reshape(-1), -u)

    n = free.numel()
    dx[free] = _solve_damped(H[free][:, free].transpose(1, 2).reshape(n * 6, n * 6), v[free].reshape(-1),
                             options.lm, options.ep).reshape(n, 6)
    dxs = dx[slots].to(G.dtype).reshape(K, 1, m1 * 6)
    dz = Q * (bz - (dxs @ Gf)[:, 0])
    return dx[:K], dz.reshape(K, h, w)


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

    for _ in range(iters):
        dx, dz = gauss_newton_step(poses, d, intrinsics, ii, jj, targets, weights, dp, prior_conf, fixed_mask,
                                   eta_map, opts)
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
