"""Batched SE(3)/SO(3) on plain tensors (fast in hot loops, any device, float32 or float64).

Poses are (..., 4, 4) homogeneous matrices. Tangent vectors are (..., 6) ordered [translation, rotation] and
perturb on the left: T <- exp(xi) @ T. Quaternions are (..., 4) in TUM order (qx, qy, qz, qw).
"""
from __future__ import annotations

import torch

_SMALL = 1e-6


def hat(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) skew-symmetric matrix with hat(w) @ v = w x v."""
    zero = torch.zeros_like(w[..., 0])
    wx, wy, wz = w.unbind(-1)
    return torch.stack(
        [zero, -wz, wy, wz, zero, -wx, -wy, wx, zero], dim=-1
    ).reshape(*w.shape[:-1], 3, 3)


def _series_threshold(dtype: torch.dtype) -> float:
    """Angle below which C and the V^-1 coefficient use their Taylor series.

    Their closed forms cancel catastrophically: the relative error is about eps / theta^2, so float32 needs a much
    larger switch-over than float64. The series (to theta^6) are accurate to < 1e-9 up to these angles.
    """
    return 0.05 if dtype == torch.float64 else 0.5


def _so3_coeffs(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A = sin t / t, B = (1 - cos t) / t^2, C = (t - sin t) / t^3, stable for every angle in [0, pi]."""
    t2 = theta * theta
    tiny = theta < 1e-4
    safe = torch.where(tiny, torch.ones_like(theta), theta)
    a = torch.where(tiny, 1 - t2 / 6, torch.sin(safe) / safe)
    # 1 - cos t = 2 sin^2(t/2) has no cancellation.
    b = torch.where(tiny, 0.5 - t2 / 24, 2 * (torch.sin(safe / 2) / safe) ** 2)
    series = theta < _series_threshold(theta.dtype)
    safe = torch.where(series, torch.ones_like(theta), theta)
    c_series = 1.0 / 6 - t2 / 120 + t2 * t2 / 5040 - t2 * t2 * t2 / 362880
    c = torch.where(series, c_series, (safe - torch.sin(safe)) / safe**3)
    return a, b, c


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rodrigues: (..., 3) axis-angle -> (..., 3, 3) rotation."""
    theta = w.norm(dim=-1)[..., None, None]
    a, b, _ = _so3_coeffs(theta)
    W = hat(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(W)
    return eye + a * W + b * (W @ W)


def so3_log(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation -> (..., 3) axis-angle, stable near 0 and pi (via the quaternion)."""
    q = matrix_to_quat(R)
    v, w = q[..., :3], q[..., 3:]
    # Keep w >= 0 so the angle lies in [0, pi].
    sign = torch.where(w < 0, -torch.ones_like(w), torch.ones_like(w))
    v, w = v * sign, w * sign
    n = v.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(n, w)
    small = n < _SMALL
    scale = torch.where(small, 2 / w.clamp_min(_SMALL) * (1 - n * n / (3 * w * w).clamp_min(_SMALL)), angle / n.clamp_min(1e-30))
    return v * scale


def se3_exp(xi: torch.Tensor) -> torch.Tensor:
    """(..., 6) [t, w] -> (..., 4, 4)."""
    rho, w = xi[..., :3], xi[..., 3:]
    theta = w.norm(dim=-1)[..., None, None]
    a, b, c = _so3_coeffs(theta)
    W = hat(w)
    WW = W @ W
    eye = torch.eye(3, dtype=xi.dtype, device=xi.device).expand_as(W)
    R = eye + a * W + b * WW
    V = eye + b * W + c * WW
    t = (V @ rho[..., None])[..., 0]
    return from_rt(R, t)


def se3_log(T: torch.Tensor) -> torch.Tensor:
    """(..., 4, 4) -> (..., 6) [t, w]."""
    R, t = T[..., :3, :3], T[..., :3, 3]
    w = so3_log(R)
    theta = w.norm(dim=-1)[..., None, None]
    a, b, _ = _so3_coeffs(theta)
    W = hat(w)
    eye = torch.eye(3, dtype=T.dtype, device=T.device).expand_as(W)
    t2 = theta * theta
    series = theta < _series_threshold(T.dtype)
    safe_t2 = torch.where(series, torch.ones_like(t2), t2)
    # V^-1 = I - W/2 + d W^2 with d = (1 - A / (2B)) / theta^2.
    d_series = 1.0 / 12 + t2 / 720 + t2 * t2 / 30240 + t2 * t2 * t2 / 1209600
    d = torch.where(series, d_series, (1 - a / (2 * b)) / safe_t2)
    Vinv = eye - 0.5 * W + d * (W @ W)
    rho = (Vinv @ t[..., None])[..., 0]
    return torch.cat([rho, w], dim=-1)


def from_rt(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Build (..., 4, 4) from rotation (..., 3, 3) and translation (..., 3)."""
    T = torch.zeros(*R.shape[:-2], 4, 4, dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1
    return T


def inverse(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms (..., 4, 4)."""
    Rt = T[..., :3, :3].transpose(-1, -2)
    return from_rt(Rt, -(Rt @ T[..., :3, 3:4])[..., 0])


def orthonormalise(T: torch.Tensor) -> torch.Tensor:
    """The nearest rigid transforms (..., 4, 4): rotation blocks projected onto SO(3) (polar decomposition).

    Products such as the constant-velocity prediction T1 T0^-1 T1 amplify rounding off SO(3) geometrically
    (by about 4x per frame), and ``inverse`` assumes R^-1 = R^T; re-projecting keeps chained poses rigid.
    """
    U, _, Vh = torch.linalg.svd(T[..., :3, :3])
    # Flip the last singular direction where needed so the result is a rotation, not a reflection.
    d = torch.det(U @ Vh)
    U = torch.cat([U[..., :2], U[..., 2:] * d[..., None, None]], dim=-1)
    return from_rt(U @ Vh, T[..., :3, 3])


def compose(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A @ B for rigid transforms."""
    return A @ B


def act(T: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Apply (..., 4, 4) to points (..., N, 3)."""
    return X @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def adjoint(T: torch.Tensor) -> torch.Tensor:
    """(..., 6, 6) adjoint for [t, w] tangents: exp(adjoint(T) @ xi) @ T == T @ exp(xi)."""
    R, t = T[..., :3, :3], T[..., :3, 3]
    A = torch.zeros(*T.shape[:-2], 6, 6, dtype=T.dtype, device=T.device)
    A[..., :3, :3] = R
    A[..., :3, 3:] = hat(t) @ R
    A[..., 3:, 3:] = R
    return A


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternion (qx, qy, qz, qw), normalised first, -> (..., 3, 3)."""
    q = q / q.norm(dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternion (qx, qy, qz, qw) with qw >= 0 (Shepperd's method, batched)."""
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Four candidate solutions; pick the numerically largest denominator per element.
    cands = torch.stack(
        [
            torch.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1], 1 + tr], -1),
            torch.stack([1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1),
            torch.stack([m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2], m[..., 1, 0] - m[..., 0, 1]], -1),
        ],
        dim=-2,
    )
    diag = torch.stack([tr, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., 3:] < 0, -q, q)


def pose7_to_matrix(p: torch.Tensor) -> torch.Tensor:
    """(..., 7) [tx ty tz qx qy qz qw] -> (..., 4, 4)."""
    return from_rt(quat_to_matrix(p[..., 3:]), p[..., :3])


def matrix_to_pose7(T: torch.Tensor) -> torch.Tensor:
    """(..., 4, 4) -> (..., 7) [tx ty tz qx qy qz qw]."""
    return torch.cat([T[..., :3, 3], matrix_to_quat(T[..., :3, :3])], dim=-1)
