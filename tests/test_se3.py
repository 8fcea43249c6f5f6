"""metricslam.geometry.se3 against independent references (matrix exponential, scipy rotations)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from metricslam.geometry import se3


def twist_matrix(xi: torch.Tensor) -> torch.Tensor:
    """4x4 Lie algebra element of [t, w]."""
    M = torch.zeros(*xi.shape[:-1], 4, 4, dtype=xi.dtype)
    M[..., :3, :3] = se3.hat(xi[..., 3:])
    M[..., :3, 3] = xi[..., :3]
    return M


def random_twists(n: int, angles: list[float], dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """n twists per angle: random unit axis times the angle, random translation in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(n * len(angles), 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    theta = torch.tensor(angles, dtype=torch.float64).repeat_interleave(n)[:, None]
    t = torch.rand(n * len(angles), 3, generator=g, dtype=torch.float64) * 2 - 1
    return torch.cat([t, axis * theta], dim=-1).to(dtype)


ANGLES = [0.0, 1e-9, 1e-6, 1e-4, 1e-3, 0.01, 0.049, 0.051, 0.3, 0.49, 0.51, 1.0, 2.0, 3.0, math.pi - 1e-3, math.pi - 1e-6]


def test_exp_matches_matrix_exponential():
    xi = random_twists(8, ANGLES)
    expected = torch.linalg.matrix_exp(twist_matrix(xi))
    torch.testing.assert_close(se3.se3_exp(xi), expected, atol=1e-12, rtol=0)


def test_translation_comes_first_in_the_tangent():
    xi = torch.tensor([0.1, -0.2, 0.3, 0.0, 0.0, 0.0], dtype=torch.float64)
    T = se3.se3_exp(xi)
    torch.testing.assert_close(T[:3, 3], xi[:3])
    torch.testing.assert_close(T[:3, :3], torch.eye(3, dtype=torch.float64))


def test_log_inverts_exp_float64_including_near_zero_and_pi():
    xi = random_twists(8, ANGLES)
    back = se3.se3_log(se3.se3_exp(xi))
    torch.testing.assert_close(back, xi, atol=1e-9, rtol=0)


@pytest.mark.parametrize("angle", [1e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.1, 0.5, 1.0, 3.0])
def test_log_inverts_exp_float32(angle):
    # Regression: se3_log used a closed form that cancels in float32 (2.4 cm error on a 0.6 m translation at 1e-3 rad).
    xi = random_twists(64, [angle], dtype=torch.float32, seed=1)
    back = se3.se3_log(se3.se3_exp(xi))
    assert (back - xi).abs().max().item() < 2e-6


def test_exp_inverts_log_on_random_poses():
    R = torch.from_numpy(Rotation.random(200, random_state=3).as_matrix())
    t = torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    T = se3.from_rt(R, t)
    torch.testing.assert_close(se3.se3_exp(se3.se3_log(T)), T, atol=1e-12, rtol=0)


def test_so3_exp_and_log_match_scipy():
    w = random_twists(8, ANGLES)[:, 3:]
    torch.testing.assert_close(se3.so3_exp(w), torch.from_numpy(Rotation.from_rotvec(w.numpy()).as_matrix()), atol=1e-12, rtol=0)
    R = Rotation.random(100, random_state=4)
    torch.testing.assert_close(se3.so3_log(torch.from_numpy(R.as_matrix())), torch.from_numpy(R.as_rotvec()), atol=1e-10, rtol=0)


def test_so3_log_at_exactly_pi_has_angle_pi():
    for axis in np.eye(3):
        R = torch.from_numpy(Rotation.from_rotvec(axis * math.pi).as_matrix())
        w = se3.so3_log(R)
        assert abs(w.norm().item() - math.pi) < 1e-9
        torch.testing.assert_close(se3.so3_exp(w), R, atol=1e-12, rtol=0)


def test_adjoint_moves_a_right_perturbation_to_the_left():
    xi = random_twists(4, [0.2, 1.0, 2.5])
    T = se3.se3_exp(random_twists(4, [0.7, 1.5, 3.0], seed=5))
    left = se3.se3_exp((se3.adjoint(T) @ xi[..., None])[..., 0]) @ T
    right = T @ se3.se3_exp(xi)
    torch.testing.assert_close(left, right, atol=1e-12, rtol=0)


def test_adjoint_of_product_and_inverse():
    A = se3.se3_exp(random_twists(5, [0.4], seed=6))
    B = se3.se3_exp(random_twists(5, [2.0], seed=7))
    torch.testing.assert_close(se3.adjoint(A @ B), se3.adjoint(A) @ se3.adjoint(B), atol=1e-12, rtol=0)
    torch.testing.assert_close(se3.adjoint(se3.inverse(A)), torch.linalg.inv(se3.adjoint(A)), atol=1e-12, rtol=0)


def test_inverse_and_compose():
    T = se3.se3_exp(random_twists(10, [0.1, 3.0], seed=8))
    torch.testing.assert_close(se3.inverse(T), torch.linalg.inv(T), atol=1e-12, rtol=0)
    eye = torch.eye(4, dtype=torch.float64).expand_as(T)
    torch.testing.assert_close(se3.compose(T, se3.inverse(T)), eye, atol=1e-12, rtol=0)


def test_act_matches_homogeneous_product():
    T = se3.se3_exp(random_twists(3, [0.5, 2.0], seed=9))  # (6, 4, 4)
    X = torch.randn(6, 50, 3, dtype=torch.float64)
    Xh = torch.cat([X, torch.ones(6, 50, 1, dtype=torch.float64)], -1)
    expected = (T @ Xh.transpose(-1, -2)).transpose(-1, -2)[..., :3]
    torch.testing.assert_close(se3.act(T, X), expected, atol=1e-12, rtol=0)


def test_hat_is_the_cross_product():
    w, v = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    torch.testing.assert_close((se3.hat(w) @ v[..., None])[..., 0], torch.linalg.cross(w, v))


def test_quaternions_are_tum_order_xyzw():
    # 90 degrees about z: TUM (qx qy qz qw) = (0, 0, sin 45, cos 45).
    q = torch.tensor([0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5)], dtype=torch.float64)
    R = se3.quat_to_matrix(q)
    torch.testing.assert_close(R @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0.0, 1, 0], dtype=torch.float64))
    quats = Rotation.random(100, random_state=10).as_quat()  # scipy is scalar-last too
    torch.testing.assert_close(se3.quat_to_matrix(torch.from_numpy(quats)),
                               torch.from_numpy(Rotation.from_quat(quats).as_matrix()), atol=1e-12, rtol=0)


def test_quaternion_round_trip_including_half_turns():
    rots = [Rotation.random(200, random_state=11)]
    # Half turns (trace -1) and near-half turns stress the branch selection of the matrix -> quaternion conversion.
    axes = Rotation.random(30, random_state=12).apply([1.0, 0, 0])
    for angle in (math.pi, math.pi - 1e-7, math.pi - 1e-3, 1e-8):
        rots.append(Rotation.from_rotvec(axes * angle))
    R = torch.from_numpy(np.concatenate([r.as_matrix() for r in rots]))
    q = se3.matrix_to_quat(R)
    assert (q[:, 3] >= 0).all()
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(len(q), dtype=torch.float64))
    torch.testing.assert_close(se3.quat_to_matrix(q), R, atol=1e-12, rtol=0)
    # Same rotation as scipy's quaternion up to the sign.
    ref = torch.from_numpy(np.concatenate([r.as_quat() for r in rots]))
    dots = (q * ref).sum(-1).abs()
    torch.testing.assert_close(dots, torch.ones_like(dots), atol=1e-12, rtol=0)


def test_pose7_round_trip():
    T = se3.se3_exp(random_twists(10, [0.3, 2.9], seed=13))
    p = se3.matrix_to_pose7(T)
    torch.testing.assert_close(p[:, :3], T[:, :3, 3])
    torch.testing.assert_close(se3.pose7_to_matrix(p), T, atol=1e-12, rtol=0)
    # Unnormalised quaternions are normalised on the way in.
    p2 = p.clone()
    p2[:, 3:] *= 3.0
    torch.testing.assert_close(se3.pose7_to_matrix(p2), T, atol=1e-12, rtol=0)


def test_orthonormalise_restores_a_rotation_and_keeps_rigid_poses():
    T = se3.se3_exp(torch.randn(5, 6, dtype=torch.float64))
    assert torch.allclose(se3.orthonormalise(T), T, atol=1e-12)
    # Repeated constant-velocity extrapolation drifts off SO(3) without the projection.
    drifted = T.clone()
    drifted[:, :3, :3] *= 1.01
    drifted[:, 0, 1] += 0.02
    fixed = se3.orthonormalise(drifted)
    R = fixed[:, :3, :3]
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=R.dtype).expand_as(R), atol=1e-12)
    assert torch.allclose(torch.det(R), torch.ones(5, dtype=R.dtype))
    assert torch.allclose(fixed[:, :3, 3], drifted[:, :3, 3])
