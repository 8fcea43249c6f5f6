"""Moving a keyframe's depth prior to another keyframe by reprojection with the current poses.

Each source pixel with a prior is lifted with its depth, moved into the target camera and splatted to the nearest
target pixel; where several land on one pixel the nearest surface wins (z-buffer), so occluded surfaces do not
leak through. Target pixels nothing lands on (disoccluded, outside the source view, or cracks where the target
sees the surface larger) stay empty (depth 0, confidence 0).
"""
from __future__ import annotations

import numpy as np
import torch

from metricslam.geometry import se3
from metricslam.geometry.projective import IntrinsicsLike, grid_transfer, project

# Points nearer than this to the target camera (metres) are not splatted: their pixel is meaningless.
_MIN_DEPTH = 1e-3


def _splat(pose_src_cw: torch.Tensor, pose_dst_cw: torch.Tensor, invdepth: torch.Tensor, intrinsics: IntrinsicsLike
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Target pixel index (row-major), target depth and the source pixel index of every source pixel whose
    point lands inside the target image in front of its camera."""
    h, w = invdepth.shape
    T = (pose_dst_cw @ se3.inverse(pose_src_cw)).to(invdepth.dtype)
    X = grid_transfer(T[None], invdepth[None], intrinsics)[0]  # (4, h*w): T [x, y, 1, 1/z]
    inv = invdepth.reshape(-1)
    has = inv > 0
    z = X[2] / torch.where(has, inv, torch.ones_like(inv))
    uv = torch.floor(project(X, intrinsics, dim=0) + 0.5)  # nearest pixel; halves always up (no even bias)
    u, v = uv[0], uv[1]
    keep = has & (z > _MIN_DEPTH) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    src = torch.nonzero(keep).squeeze(1)
    target = (v[src] * w + u[src]).long()
    return target, z[src], src


def transfer_prior(depth: np.ndarray, confidence: np.ndarray, pose_src_cw: torch.Tensor, pose_dst_cw: torch.Tensor,
                   intrinsics: IntrinsicsLike, weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The prior (depth metres HxW, 0 = none; confidence HxW) of the source camera ``pose_src_cw`` (T_cw) as seen
    from ``pose_dst_cw``, both images with the same ``intrinsics`` [fx, fy, cx, cy]. The confidence is the
    source's times ``weight`` (a transferred prior also carries the pose errors)."""
    device = pose_src_cw.device
    d = torch.as_tensor(np.asarray(depth, np.float32), device=device).double()
    c = torch.as_tensor(np.asarray(confidence, np.float32), device=device)
    h, w = d.shape
    inv = torch.where(d > 0, 1.0 / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(d))
    target, z, src = _splat(pose_src_cw.double(), pose_dst_cw.double(), inv, intrinsics)
    nearest = torch.full((h * w,), float("inf"), dtype=z.dtype, device=device)
    nearest.scatter_reduce_(0, target, z, reduce="amin")
    # The confidence comes from the point that won its pixel (ties: the most confident one).
    won = z <= nearest[target]
    conf = torch.zeros(h * w, dtype=c.dtype, device=device)
    conf.scatter_reduce_(0, target[won], c.reshape(-1)[src[won]], reduce="amax")
    out = torch.where(torch.isfinite(nearest), nearest, torch.zeros_like(nearest))
    return (out.reshape(h, w).float().cpu().numpy(),
            (weight * conf.reshape(h, w)).clamp(0.0, 1.0).cpu().numpy().astype(np.float32))


def coverage(pose_src_cw: torch.Tensor, pose_dst_cw: torch.Tensor, invdepth: torch.Tensor,
             intrinsics: IntrinsicsLike) -> float:
    """Fraction of the target grid's cells that at least one source cell with a prior (invdepth > 0) lands on:
    how much of the target view a transferred prior would fill."""
    h, w = invdepth.shape
    target, _, _ = _splat(pose_src_cw.double(), pose_dst_cw.double(), invdepth.double(), intrinsics)
    hit = torch.zeros(h * w, dtype=torch.bool, device=invdepth.device)
    hit[target] = True
    return float(hit.float().mean())
