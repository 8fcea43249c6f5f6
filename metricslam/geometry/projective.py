"""Pinhole projection between keyframes and the analytic Jacobians of the dense bundle adjustment.

A grid pixel (u, v) of frame i with inverse depth d is the homogeneous point
X = [(u - cx) / fx, (v - cy) / fy, 1, d] (the 3D point scaled by d). Moving it to frame j with the
world-to-camera poses gives X' = T_j T_i^-1 X and the pixel p = (fx X'0 / X'2 + cx, fy X'1 / X'2 + cy).
X'2 equals depth_j / depth_i, so the minimum-depth test on it does not depend on the scene's scale.

Jacobians (tangent [t, w], left perturbation T <- exp(xi) T, as in metricslam.geometry.se3):
  dp/dxi_j from the formulas of DESIGN.md, dp/dxi_i = -dp/dxi_j Adj(T_j T_i^-1), and dp/dd_i from the
  translation of T_j T_i^-1. Everything is batched, runs on any device and in float32 or float64.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from metricslam.geometry import se3

# DROID-SLAM's MIN_DEPTH: correspondences whose point lands closer than a quarter of its source depth are dropped.
MIN_DEPTH = 0.25
# Denominator floor for projecting points at (or behind) the camera centre; such points are flagged invalid anyway.
_EPS = 1e-6

IntrinsicsLike = torch.Tensor | Sequence[float]


def intrinsics_tensor(intrinsics: IntrinsicsLike, like: torch.Tensor) -> torch.Tensor:
    """[fx, fy, cx, cy] as a (4,) tensor with the dtype and device of ``like``."""
    return torch.as_tensor(intrinsics, dtype=like.dtype, device=like.device).reshape(4)


def pixel_grid(h: int, w: int, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(h, w, 2) pixel coordinates [u, v] (u along the width) of an h x w grid."""
    v, u = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                          torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([u, v], dim=-1)


def unproject(coords: torch.Tensor, invdepth: torch.Tensor, intrinsics: IntrinsicsLike, dim: int = -1
              ) -> torch.Tensor:
    """Pixels (2 along ``dim``) with inverse depths -> homogeneous points [x, y, 1, d] (4 along ``dim``).

    With the default ``dim=-1``: coords (..., 2), invdepth (...) -> (..., 4); shapes broadcast. The BA passes
    ``dim=1`` to get channel-first (E, 4, P) points, which keeps every component contiguous.
    """
    fx, fy, cx, cy = intrinsics_tensor(intrinsics, coords).unbind()
    u, v = coords.unbind(dim)
    x, y, d = torch.broadcast_tensors((u - cx) / fx, (v - cy) / fy, invdepth.to(coords.dtype))
    return torch.stack([x, y, torch.ones_like(x), d], dim=dim)


def _safe_inverse(z: torch.Tensor) -> torch.Tensor:
    return 1.0 / torch.where(z.abs() < _EPS, torch.full_like(z, _EPS), z)


def project(Xh: torch.Tensor, intrinsics: IntrinsicsLike, dim: int = -1) -> torch.Tensor:
    """Homogeneous (4) or 3D (3) points along ``dim`` in the camera frame -> pixels (2 along ``dim``)."""
    fx, fy, cx, cy = intrinsics_tensor(intrinsics, Xh).unbind()
    x, y, z = Xh.unbind(dim)[:3]
    rho = _safe_inverse(z)
    return torch.stack([fx * x * rho + cx, fy * y * rho + cy], dim=dim)


def relative_poses(poses_cw: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor) -> torch.Tensor:
    """(E, 4, 4) transforms T_j T_i^-1 taking frame i's camera coordinates to frame j's."""
    return poses_cw[jj] @ se3.inverse(poses_cw[ii])


def transform_points(T: torch.Tensor, Xh: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Apply transforms T (E, 4, 4) to homogeneous points with E leading and 4 along ``dim`` (4th kept)."""
    moved = Xh.movedim(dim, 1)
    flat = moved.reshape(moved.shape[0], 4, -1)
    out = torch.cat([T[:, :3].to(Xh.dtype) @ flat, flat[:, 3:]], dim=1)
    return out.reshape(moved.shape).movedim(1, dim)


def projection_jacobians(Xj: torch.Tensor, t_ij: torch.Tensor, intrinsics: IntrinsicsLike, dim: int = -1
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Jacobians of the projection of Xj = T_ij X (4 along ``dim``).

    Returns dp/dxi_j for a left perturbation of the target pose and dp/dd_i for the source inverse depth.
    With ``dim=-1``: Xj (..., 4) -> (..., 2, 6) and (..., 2); with ``dim=1`` and Xj (E, 4, P): (E, 2, 6, P) and
    (E, 2, P). ``t_ij`` (E, 3) is the translation of T_ij.
    """
    fx, fy, _, _ = intrinsics_tensor(intrinsics, Xj).unbind()
    x, y, z, h = Xj.unbind(dim)
    t = t_ij.to(Xj.dtype).reshape(t_ij.shape[0], 3, *([1] * (x.dim() - 1)))
    rho = _safe_inverse(z)
    xr, yr, hr = x * rho, y * rho, h * rho
    zero = torch.zeros_like(x)
    fxr, fyr = fx * xr, fy * yr
    J = torch.stack([fx * hr, zero, -fxr * hr, -fxr * yr, fx + fxr * xr, -fx * yr,
                     zero, fy * hr, -fyr * hr, -fy - fyr * yr, fyr * xr, fy * xr], dim=dim)
    jd = torch.stack([(fx * t[:, 0] - t[:, 2] * fxr) * rho, (fy * t[:, 1] - t[:, 2] * fyr) * rho], dim=dim)
    shape = list(x.shape)
    shape[dim if dim >= 0 else len(shape) + dim + 1:0] = [2, 6]
    return J.view(shape), jd


def reproject(poses_cw: torch.Tensor, invdepths: torch.Tensor, intrinsics: IntrinsicsLike,
              ii: torch.Tensor, jj: torch.Tensor, jacobians: bool = False, min_depth: float = MIN_DEPTH,
              ) -> tuple[torch.Tensor, ...]:
    """Where every grid pixel of frame ii[e] lands in frame jj[e].

    poses_cw (K, 4, 4) world-to-camera, invdepths (K, h, w), intrinsics [fx, fy, cx, cy] at grid resolution,
    ii/jj (E,) long. Returns coords (E, h, w, 2) and valid (E, h, w) bool (X'2 > min_depth); with
    ``jacobians`` also J_i, J_j (E, h, w, 2, 6) w.r.t. left perturbations of T_i, T_j and J_d (E, h, w, 2)
    w.r.t. the source inverse depth. Computed in the dtype of ``invdepths``.
    """
    dtype = invdepths.dtype
    _, h, w = invdepths.shape
    T_ij = relative_poses(poses_cw, ii, jj).to(dtype)
    X = unproject(pixel_grid(h, w, invdepths.device, dtype), invdepths[ii], intrinsics)
    Xj = transform_points(T_ij, X)
    coords = project(Xj, intrinsics)
    valid = Xj[..., 2] > min_depth
    if not jacobians:
        return coords, valid
    Jj, Jd = projection_jacobians(Xj, T_ij[:, :3, 3], intrinsics)
    Ji = -Jj @ se3.adjoint(T_ij)[:, None, None]
    return coords, valid, Ji, Jj, Jd
