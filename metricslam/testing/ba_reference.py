"""The dense-BA step solved the straightforward way: the reference that the Schur solver of
``metricslam.slam.ba`` is tested and benchmarked against."""
from __future__ import annotations

import torch

from metricslam.geometry.projective import IntrinsicsLike, reproject
from metricslam.slam.ba import _depth_system, robust_weight
from metricslam.slam.config import BAOptions


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
