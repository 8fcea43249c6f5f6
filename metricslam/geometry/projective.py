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
from typing import TYPE_CHECKING

import numpy as np
import torch

from metricslam.geometry import se3

if TYPE_CHECKING:
    from metricslam.geometry.camera import Intrinsics

# DROID-SLAM's MIN_DEPTH: correspondences whose point lands closer than a quarter of its source depth are dropped.
MIN_DEPTH = 0.25
# Denominator floor for projecting points at (or behind) the camera centre; such points are flagged invalid anyway.
_EPS = 1e-6

IntrinsicsLike = torch.Tensor | np.ndarray | Sequence[float]


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
    return torch.where(z.abs() < _EPS, _EPS, z).reciprocal_()


def project(Xh: torch.Tensor, intrinsics: IntrinsicsLike, dim: int = -1) -> torch.Tensor:
    """Homogeneous (4) or 3D (3) points along ``dim`` in the camera frame -> pixels (2 along ``dim``)."""
    fx, fy, cx, cy = intrinsics_tensor(intrinsics, Xh).unbind()
    x, y, z = Xh.unbind(dim)[:3]
    rho = _safe_inverse(z)
    return torch.stack([fx * x * rho + cx, fy * y * rho + cy], dim=dim)


def relative_poses(poses_cw: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor) -> torch.Tensor:
    """(E, 4, 4) transforms T_j T_i^-1 taking frame i's camera coordinates to frame j's."""
    return poses_cw[jj] @ se3.inverse(poses_cw[ii])


def grid_transfer(T_ij: torch.Tensor, invdepths: torch.Tensor, intrinsics: IntrinsicsLike) -> torch.Tensor:
    """Xj = T_ij [x, y, 1, d] for every pixel of an h x w grid with inverse depths (E, h, w): channel-first
    (E, 4, h * w), in the dtype of ``invdepths``. The rays are shared, so this is one matmul and one
    multiply-add instead of building per-edge points."""
    E, h, w = invdepths.shape
    dtype = invdepths.dtype
    rays = unproject(pixel_grid(h, w, invdepths.device, dtype).reshape(-1, 2), invdepths.new_zeros(()), intrinsics)
    T = T_ij.to(dtype)
    return (T @ rays.T).addcmul_(T[:, :, 3:], invdepths.reshape(E, 1, h * w))


def _coord_axes_shape(x: torch.Tensor, dim: int, axes: list[int]) -> list[int]:
    """Shape of a component ``x`` with ``axes`` inserted where ``dim`` points."""
    shape = list(x.shape)
    at = dim if dim >= 0 else len(shape) + dim + 1
    shape[at:at] = axes
    return shape


def pose_jacobian(Xj: torch.Tensor, intrinsics: IntrinsicsLike, dim: int = -1) -> torch.Tensor:
    """dp/dxi_j of the projection of Xj = T_ij X (4 along ``dim``) for a left perturbation of the target pose.

    ``dim=-1``: Xj (..., 4) -> (..., 2, 6). ``dim=1``: Xj (E, 4, P) -> (E, 2, 6, P).
    """
    fx, fy, _, _ = intrinsics_tensor(intrinsics, Xj).unbind()
    x, y, z, h = Xj.unbind(dim)
    rho = _safe_inverse(z)
    xr, yr, hr = x * rho, y * rho, h * rho
    # Each entry is written in place into its slot (stacking twelve temporaries cost half the time).
    J = x.new_empty(_coord_axes_shape(x, dim, [12]))
    c = J.unbind(dim)
    torch.mul(hr, fx, out=c[0])
    c[1].zero_()
    torch.mul(hr, xr, out=c[2]).mul_(-fx)
    torch.mul(xr, yr, out=c[3]).mul_(-fx)
    torch.mul(xr, xr, out=c[4]).add_(1).mul_(fx)
    torch.mul(yr, -fx, out=c[5])
    c[6].zero_()
    torch.mul(hr, fy, out=c[7])
    torch.mul(hr, yr, out=c[8]).mul_(-fy)
    torch.mul(yr, yr, out=c[9]).add_(1).mul_(-fy)
    torch.mul(xr, yr, out=c[10]).mul_(fy)
    torch.mul(xr, fy, out=c[11])
    return J.view(_coord_axes_shape(x, dim, [2, 6]))


def depth_jacobian(Xj: torch.Tensor, t_ij: torch.Tensor, intrinsics: IntrinsicsLike, dim: int = -1
                   ) -> torch.Tensor:
    """dp/dd_i of the projection of Xj = T_ij X w.r.t. the source inverse depth; ``t_ij`` (E, 3) is the
    translation of T_ij. ``dim=-1``: Xj (E, ..., 4) -> (E, ..., 2). ``dim=1``: Xj (E, 4, P) -> (E, 2, P)."""
    fx, fy, _, _ = intrinsics_tensor(intrinsics, Xj).unbind()
    x, y, z, _ = Xj.unbind(dim)
    t = t_ij.to(Xj.dtype).reshape(t_ij.shape[0], 3, *([1] * (x.dim() - 1)))
    rho = _safe_inverse(z)
    return torch.stack([(fx * t[:, 0] - t[:, 2] * fx * x * rho) * rho,
                        (fy * t[:, 1] - t[:, 2] * fy * y * rho) * rho], dim=dim)


def reproject(poses_cw: torch.Tensor, invdepths: torch.Tensor, intrinsics: IntrinsicsLike,
              ii: torch.Tensor, jj: torch.Tensor, jacobians: bool = False, min_depth: float = MIN_DEPTH,
              ) -> tuple[torch.Tensor, ...]:
    """Where every grid pixel of frame ii[e] lands in frame jj[e].

    poses_cw (K, 4, 4) world-to-camera, invdepths (K, h, w), intrinsics [fx, fy, cx, cy] at grid resolution,
    ii/jj (E,) long. Returns coords (E, h, w, 2) and valid (E, h, w) bool (X'2 > min_depth); with
    ``jacobians`` also J_i, J_j (E, h, w, 2, 6) w.r.t. left perturbations of T_i, T_j and J_d (E, h, w, 2)
    w.r.t. the source inverse depth. Computed in the dtype of ``invdepths``.
    """
    E = ii.shape[0]
    _, h, w = invdepths.shape
    T_ij = relative_poses(poses_cw, ii, jj).to(invdepths.dtype)
    Xj = grid_transfer(T_ij, invdepths[ii], intrinsics)
    coords = project(Xj, intrinsics, dim=1).transpose(1, 2).reshape(E, h, w, 2)
    valid = (Xj[:, 2] > min_depth).reshape(E, h, w)
    if not jacobians:
        return coords, valid
    Jj = pose_jacobian(Xj, intrinsics, dim=1).permute(0, 3, 1, 2).reshape(E, h, w, 2, 6)
    Jd = depth_jacobian(Xj, T_ij[:, :3, 3], intrinsics, dim=1).transpose(1, 2).reshape(E, h, w, 2)
    Ji = -Jj @ se3.adjoint(T_ij)[:, None, None]
    return coords, valid, Ji, Jj, Jd


def backproject(depth: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """HxWx3 camera-frame points (metres) of every pixel of a depth map."""
    rays = unproject(pixel_grid(*depth.shape), torch.zeros(()), intrinsics.params)[..., :3]
    return (rays * torch.from_numpy(depth.astype(np.float32))[..., None]).numpy()
