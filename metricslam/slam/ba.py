"""Dense bundle adjustment over keyframe poses and per-pixel inverse depths, with metric depth priors.

Public API
----------
``BAOptions`` (defined in ``metricslam.slam.config``, with the other SLAM settings)
    Weights, damping, robust kernels and modes (a config dataclass; defaults follow DROID-SLAM's RGB-D mode).
``dense_ba(poses_cw, invdepths, intrinsics, ii, jj, targets, weights, prior_invdepth=None, prior_conf=None,
fixed=(0,), eta=None, iters=2, options=BAOptions()) -> (poses_cw, invdepths)``
    ``iters`` Gauss-Newton steps. poses_cw (K, 4, 4) world-to-camera; invdepths, prior_invdepth, prior_conf
    (K, h, w) (prior_conf 0 = no prior there; a missing prior_conf means 1 wherever prior_invdepth > 0);
    intrinsics [fx, fy, cx, cy] at grid resolution; ii, jj (E,) edges from source frame ii (whose depths are
    used) to target frame jj; targets (E, h, w, 2) pixel coordinates in frame jj of every grid pixel of frame ii;
    weights (E, h, w, 2) per-coordinate confidences; fixed: indices of poses held constant (the gauge); eta:
    depth damping in the normalised unit (scalar, (K,) or (K, h, w)) used where a pixel has no prior.
    Returns new tensors; poses come back in the dtype given, inverse depths in the dtype of ``invdepths``.
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
prior exists, plus the damping eta elsewhere, plus the optional scale anchor (a per-pixel pull towards the
current depth rescaled to the priors' scale averaged over the problem's keyframes, see ``_anchor_shift``). Poses are solved from
the block-sparse Schur complement in float64 with DROID's LM damping H + lm diag(H) + ep I (dense Cholesky for
small systems, sparse LU for large ones: ``metricslam.slam.pose_system``) and the depths are back-substituted
and clamped. The per-edge work runs in chunks of whole source frames, so memory grows with the number of edges
and coupled pose pairs, not with the square of the number of keyframes. Inside, inverse depths and priors are
divided (and translations multiplied) by the mean prior inverse depth (the mean inverse depth when there is no
prior) so thresholds and damping are scene independent; this is only a change of units: metric priors give
metric results.

``metricslam.testing.ba_reference.dense_reference_step`` solves the same step with the full dense normal equations.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from metricslam.geometry import se3
from metricslam.geometry.projective import (
    IntrinsicsLike,
    depth_jacobian,
    grid_transfer,
    pose_jacobian,
    project,
    relative_poses,
)
from metricslam.slam.config import BAOptions, Kernel
from metricslam.slam.pose_system import PoseSystem

if TYPE_CHECKING:
    from metricslam.slam.sparse_factors import SparseObservations

# The scale anchor's level is a trimmed mean over every ANCHOR_STEP-th pixel of the flattened grid (it sorts
# per keyframe per step; a fifth of the grid is plenty for a mean; a stride prime to the usual grid widths walks
# through all columns), dropping ANCHOR_TRIM of the log ratios at each end (pixels where flow or prior failed).
ANCHOR_STEP = 5
ANCHOR_TRIM = 0.1
# A Gauss-Newton step works through the edges in chunks of whole source frames with at most about this many edge
# pixels (plus one frame's), so a global BA's per-edge temporaries (about 250 bytes per edge pixel) stay near
# 250 MB however many keyframes there are. Sliding windows fit in one chunk.
CHUNK_EDGE_PIXELS = 1 << 20


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

    A: torch.Tensor  # (E, 6, 6) Adj(T_ij), float64 (it only enters the small reduced system)
    Xj: torch.Tensor  # (E, 4, P) points in the target frame
    sw: torch.Tensor  # sqrt of the final per-coordinate weight
    swr: torch.Tensor  # sw * residual
    swJd: torch.Tensor | None  # sw * d p / d invdepth (None in motion-only BA, which never uses it)


def _residuals(poses_cw: torch.Tensor, invdepths: torch.Tensor, intrinsics: torch.Tensor, ii: torch.Tensor,
               jj: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, opts: BAOptions) -> _Residuals:
    """Weighted residuals and depth Jacobians; targets and weights are channel-first (E, 2, P)."""
    T = relative_poses(poses_cw, ii, jj)
    A = se3.adjoint(T.double())
    T = T.to(invdepths.dtype)
    Xj = grid_transfer(T, invdepths[ii], intrinsics)
    r = targets - project(Xj, intrinsics, dim=1)
    wt = weights * (Xj[:, 2] > opts.min_depth)[:, None]
    if opts.robust != "none":
        # (r * r).sum().sqrt() rather than norm(dim=1): torch's strided vector norm is ~30x slower on CPU here.
        wt = wt * robust_weight((r * r).sum(1).sqrt(), opts.robust, opts.robust_px)[:, None]
    sw = (opts.weight_scale * wt).sqrt()
    swJd = None if opts.motion_only else sw * depth_jacobian(Xj, T[:, :3, 3], intrinsics, dim=1)
    return _Residuals(A=A, Xj=Xj, sw=sw, swr=sw * r, swJd=swJd)


def _weighted_pose_jacobian(res: _Residuals, intrinsics: torch.Tensor) -> torch.Tensor:
    """sqrt(W) J_j as (E, 2, 6, P)."""
    return pose_jacobian(res.Xj, intrinsics, dim=1).mul_(res.sw[:, :, None])


def _depth_system(c: torch.Tensor, b: torch.Tensor, ii: torch.Tensor, invdepths: torch.Tensor,
                  prior_invdepth: torch.Tensor, prior_conf: torch.Tensor, eta: torch.Tensor, opts: BAOptions,
                  anchor_shift: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal depth block C and depth gradient (K, P) from the per-edge flow terms c, b (E, P), plus the
    prior weighted by its confidence, the damping eta for the rest, plus the scale anchor (``anchor_shift``
    (K,) from ``_anchor_shift``; NaN for a keyframe without a prior)."""
    K = invdepths.shape[0]
    d = invdepths.reshape(K, -1)
    C = d.new_zeros(d.shape).index_add_(0, ii, c)
    bz = d.new_zeros(d.shape).index_add_(0, ii, b)
    dp = prior_invdepth.reshape(K, -1).to(d.dtype)
    has_prior = (prior_conf.reshape(K, -1) > 0) & (dp > 0)
    diff = d - dp
    # The prior replaces the damping eta in proportion to its confidence, so a barely trusted prior never
    # leaves a pixel undamped.
    c = prior_conf.reshape(K, -1).to(d.dtype).clamp(0, 1) * has_prior
    a = opts.alpha * c
    if opts.prior_robust != "none":
        a = a * robust_weight(diff.abs(), opts.prior_robust, opts.prior_robust_thresh)
    C = C + a + eta.to(d.dtype) * (1 - c)
    bz = bz - a * diff
    if anchor_shift is not None:
        a = opts.scale_anchor * (~anchor_shift.isnan()[:, None] & (d > 0)).to(d.dtype)
        C, bz = C + a, bz - a * d * anchor_shift.nan_to_num()[:, None].to(d.dtype)
    return C, bz


def _anchor_shift(invdepths: torch.Tensor, prior_invdepth: torch.Tensor, prior_conf: torch.Tensor
                  ) -> torch.Tensor | None:
    """Relative residual 1 - exp(-L) of the scale anchor for each of the K keyframes (NaN for a keyframe without
    a prior), or None when no keyframe has one.

    Per keyframe k, l_k = trimmed mean over its prior pixels (sampled) of log(d / d_prior); L = trimmed mean of
    l_k over the keyframes with a prior. The anchor's target is d exp(-L), fixed at the linearisation point, so
    the term stays diagonal; its residual d (1 - exp(-L)) is proportional to d, i.e. a force along the scale
    direction only, the same for every keyframe, and it vanishes once the problem's depths agree with the
    priors on average. A mean of log ratios weighs near and far pixels alike: a prior that is too near for near
    things and too far for far things (a common network trait) averages out, where inverse-depth residuals would
    be dominated by the near pixels. Averaging over keyframes takes the scale from the whole window (the whole
    map in a global BA) rather than from each keyframe: a network's per-frame scale errors are correlated within
    a frame but not from frame to frame, so their mean is far better than any one of them, while the
    correspondences carry the relative scale between keyframes.
    """
    K = invdepths.shape[0]
    d = invdepths.reshape(K, -1)[:, ::ANCHOR_STEP]
    dp = prior_invdepth.reshape(K, -1)[:, ::ANCHOR_STEP].to(d.dtype)
    sample = (prior_conf.reshape(K, -1)[:, ::ANCHOR_STEP] > 0) & (dp > 0) & (d > 0)
    counts = sample.sum(dim=1)
    has = counts > 0
    if not bool(has.any()):
        return None
    ratio = torch.where(sample, torch.log(d.clamp_min(1e-12) / dp.clamp_min(1e-12)), torch.full_like(d, math.inf))
    levels = _trimmed_mean(ratio, counts, ANCHOR_TRIM)[has]
    level = _trimmed_mean(levels[None], has.sum()[None], ANCHOR_TRIM)[0]
    return torch.where(has, -torch.expm1(-level), torch.full_like(has, math.nan, dtype=d.dtype))


def _trimmed_mean(values: torch.Tensor, counts: torch.Tensor, trim: float) -> torch.Tensor:
    """Per-row mean of the first ``counts`` sorted values of each row without the lowest and highest ``trim``
    fractions (rows padded with +inf beyond their counts); 0 for empty rows."""
    ordered = values.sort(dim=1).values
    lo = (counts * trim).floor()
    hi = (counts - lo).clamp_min(lo + 1)
    pos = torch.arange(values.shape[1], device=values.device, dtype=lo.dtype)
    keep = (pos >= lo[:, None]) & (pos < hi[:, None]) & (pos < counts[:, None])
    total = torch.where(keep, ordered, torch.zeros_like(ordered)).sum(dim=1)
    return total / keep.sum(dim=1).clamp_min(1)


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


def _source_chunks(ii: torch.Tensor, K: int, P: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Edges split into chunks of whole source frames of about CHUNK_EDGE_PIXELS edge pixels each, as
    (edge indices, sorted source frames) per chunk. A source frame's edges share its depths, so the Schur
    complement never couples edges of different chunks."""
    if ii.numel() == 0:
        return []
    counts = torch.bincount(ii, minlength=K)
    if ii.shape[0] * P <= CHUNK_EDGE_PIXELS:
        return [(torch.arange(ii.shape[0], device=ii.device), torch.nonzero(counts)[:, 0])]
    before = (torch.cumsum(counts, 0) - counts) * P  # edge pixels of the frames before each frame
    chunk_of_frame = torch.div(before, CHUNK_EDGE_PIXELS, rounding_mode="floor")
    chunk_of_edge = chunk_of_frame[ii]
    chunks = []
    for c in torch.unique(chunk_of_edge).tolist():
        frames = torch.nonzero((chunk_of_frame == c) & (counts > 0))[:, 0]
        chunks.append((torch.nonzero(chunk_of_edge == c)[:, 0], frames))
    return chunks


def _channels_first(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(E, h, w, 2) -> contiguous (E, 2, h * w)."""
    E, h, w, c = x.shape
    return x.to(dtype).reshape(E, h * w, c).transpose(1, 2).contiguous()


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
                 options)[:2]


def _step(poses_cw: torch.Tensor, invdepths: torch.Tensor, intrinsics: IntrinsicsLike, ii: torch.Tensor,
          jj: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, prior_invdepth: torch.Tensor,
          prior_conf: torch.Tensor, fixed: torch.Tensor, eta: torch.Tensor, options: BAOptions,
          sparse: SparseObservations | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """gauss_newton_step with channel-first (E, 2, P) targets and weights, plus the increment of the sparse
    track depths (None without tracks; motion-only steps hold them).

    Schur complement. With q = C^-1/2, the coupling of edge e's relative-pose increment with the depths of its
    source frame, scaled by q, is F_e = sum_c w J_j Jd q (6, P). Edges sharing a source frame share those depths:
    the reduced system loses B_e^T (F_e F_f^T) B_f for every such pair (e, f), the gradient loses B_e^T F_e (q bz),
    and back-substitution gives dz = q (q bz - sum_e F_e . (B_e dx)). The per-edge work runs over chunks of whole
    source frames (``_source_chunks``); of each chunk only F (24 bytes per edge pixel) is kept for the
    back-substitution.
    """
    K, h, w = invdepths.shape
    P = h * w
    intr = torch.as_tensor(intrinsics, dtype=invdepths.dtype, device=invdepths.device)
    system = PoseSystem(fixed)
    schur = not options.motion_only
    poses_only = options.depth_only or bool(fixed.all())
    anchor_shift = (_anchor_shift(invdepths, prior_invdepth, prior_conf)
                    if schur and options.scale_anchor > 0 else None)
    q = invdepths.new_zeros(K, P)
    qb = invdepths.new_zeros(K, P)
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # per chunk: edges, Adj(T_ij), F

    for edges, frames in _source_chunks(ii, K, P):
        ii_e, jj_e = ii[edges], jj[edges]
        res = _residuals(poses_cw, invdepths, intr, ii_e, jj_e, targets[edges], weights[edges], options)
        local_ii = torch.searchsorted(frames, ii_e)
        swJd = res.swJd  # present whenever schur (full BA)
        if schur:
            assert swJd is not None
            C, bz = _depth_system((swJd * swJd).sum(1), (swJd * res.swr).sum(1), local_ii,
                                  invdepths[frames], prior_invdepth[frames], prior_conf[frames],
                                  eta.reshape(K, -1)[frames], options,
                                  None if anchor_shift is None else anchor_shift[frames])
            q[frames] = C.rsqrt()
            qb[frames] = q[frames] * bz
            if poses_only:
                continue
        J = _weighted_pose_jacobian(res, intr)
        E = edges.shape[0]
        Jf = J.view(E * 2, 6, P)
        M = (Jf @ Jf.transpose(1, 2)).view(E, 2, 6, 6).sum(1)  # per-edge sum J_j^T W J_j
        g = (res.swr.reshape(E * 2, 1, P) @ Jf.transpose(1, 2)).view(E, 2, 6).sum(1)  # per-edge sum J_j^T W r
        # The reduced system is accumulated in float64 from the float32 per-edge sums.
        local = torch.arange(E, device=ii.device)
        system.add_edge_pairs(M.double(), local, local, res.A, ii_e, jj_e)
        if not schur:
            system.add_edge_vectors(g.double(), res.A, ii_e, jj_e)
            continue
        assert swJd is not None
        qJd = swJd * q[ii_e][:, None]
        F = torch.mul(J[:, 0], qJd[:, 0, None]).addcmul_(J[:, 1], qJd[:, 1, None])
        A = res.A
        del res, J, Jf, qJd  # the chunk's largest temporaries: free them before the Gram products
        # Pairs of edges sharing a source frame: F laid out in a (frames, m) table of slots, one Gram per frame.
        slot, m = _edge_slots(local_ii, frames.shape[0])
        G = F.new_zeros(frames.shape[0] * m, 6, P).index_copy_(0, slot, F).view(-1, m * 6, P)
        gram = (G @ G.transpose(1, 2)).view(-1, m, 6, m, 6).transpose(2, 3).reshape(-1, 6, 6)
        del G
        slot_edge = torch.full((frames.shape[0] * m,), -1, dtype=torch.long, device=ii.device)
        slot_edge.index_copy_(0, slot, local)
        pe = slot_edge.view(-1, m, 1).expand(-1, m, m).reshape(-1)
        pf = slot_edge.view(-1, 1, m).expand(-1, m, m).reshape(-1)
        pair = (pe >= 0) & (pf >= 0)
        system.add_edge_pairs(-gram[pair].double(), pe[pair], pf[pair], A, ii_e, jj_e)
        # A row vector times F^T: torch's batched matrix-vector form (F @ v) is about 10x slower on CPU.
        u = (qb[ii_e][:, None] @ F.transpose(1, 2))[:, 0]
        system.add_edge_vectors(g.double() - u.double(), A, ii_e, jj_e)
        kept.append((edges, A, F))

    tracks = sparse.linearise(system, poses_cw, intr, options.eta, options) if sparse is not None and schur else None
    if not schur:
        return system.solve(options.lm, options.ep), torch.zeros_like(invdepths), None
    # Frames that are the source of no edge have only their prior (or damping) on the depths.
    alone = torch.ones(K, dtype=torch.bool, device=ii.device)
    alone[ii] = False
    if bool(alone.any()):
        empty = invdepths.new_zeros(0, P)
        C, bz = _depth_system(empty, empty, ii[:0], invdepths[alone], prior_invdepth[alone], prior_conf[alone],
                              eta.reshape(K, -1)[alone], options,
                              None if anchor_shift is None else anchor_shift[alone])
        q[alone] = C.rsqrt()
        qb[alone] = q[alone] * bz
    if poses_only:
        return (torch.zeros(K, 6, dtype=torch.float64, device=invdepths.device), (q * qb).reshape(K, h, w),
                None if tracks is None else tracks.depth_increment(None))

    dx = system.solve(options.lm, options.ep)
    coupled = torch.zeros_like(qb)
    for edges, A, F in kept:
        i_e, j_e = ii[edges], jj[edges]
        delta = (dx[j_e] - (A @ dx[i_e][..., None])[..., 0]).to(F.dtype)
        coupled.index_add_(0, i_e, (delta[:, None] @ F)[:, 0])
    return dx, (q * (qb - coupled)).reshape(K, h, w), None if tracks is None else tracks.depth_increment(dx)


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


def _unit_scale(invdepths: torch.Tensor, prior_invdepth: torch.Tensor, prior_conf: torch.Tensor,
                ii: torch.Tensor) -> float:
    """The normalised depth unit: mean prior inverse depth of the observed frames when there are priors (so the
    unit, and with it the prior's weight, does not depend on the current estimate), else mean inverse depth."""
    src = torch.unique(ii) if ii.numel() else torch.arange(invdepths.shape[0], device=invdepths.device)
    prior = prior_invdepth[src][(prior_conf[src] > 0) & (prior_invdepth[src] > 0)]
    if prior.numel():
        return float(prior.mean())
    current = invdepths[src][invdepths[src] > 0]
    return float(current.mean()) if current.numel() else 1.0


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
             iters: int = 2, options: BAOptions | None = None, sparse: SparseObservations | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``iters`` Gauss-Newton steps of dense BA; returns new (poses_cw, invdepths). See the module docstring.
    ``sparse``: keypoint tracks optimised with the rest (``metricslam.slam.sparse_factors``); their inverse
    depths are updated in place."""
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

    scale = _unit_scale(invdepths, prior_invdepth, prior_conf, ii) if opts.normalise else 1.0
    poses = poses_cw.clone()
    poses[:, :3, 3] *= scale
    d = invdepths / scale
    dp = prior_invdepth / scale
    points = None if sparse is None else sparse.rescaled(scale)

    targets_cf = _channels_first(targets, d.dtype)
    weights_cf = _channels_first(weights.expand(*targets.shape), d.dtype)
    for _ in range(iters):
        dx, dz, dzs = _step(poses, d, intrinsics, ii, jj, targets_cf, weights_cf, dp, prior_conf, fixed_mask,
                            eta_map, opts, points)
        if not opts.depth_only:
            poses = se3.se3_exp(dx.to(poses.dtype)) @ poses
        if not opts.motion_only:
            d = (d + dz).clamp_min(opts.min_invdepth)
        if points is not None and dzs is not None:
            points.invdepth = (points.invdepth + dzs.to(points.invdepth.dtype)).clamp_min(opts.min_invdepth)

    poses_out = poses_cw.clone()
    if not opts.depth_only:
        poses[:, :3, 3] /= scale
        poses_out[~fixed_mask] = se3.orthonormalise(poses[~fixed_mask])
    invdepths_out = invdepths.clone() if opts.motion_only else d * scale
    if sparse is not None and points is not None:
        sparse.invdepth = points.invdepth * scale
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
