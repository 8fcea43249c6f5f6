"""Projection, unprojection, reprojection and the dense-BA Jacobians (analytic vs central finite differences)."""
import math

import pytest
import torch

from metricslam.geometry import se3
from metricslam.geometry.projective import (
    depth_jacobian,
    grid_transfer,
    pixel_grid,
    pose_jacobian,
    project,
    reproject,
    unproject,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64
INTR = [28.0, 30.0, 15.3, 11.6]


def _scene(K: int = 4, h: int = 6, w: int = 8, dtype: torch.dtype = F64, device: str = "cpu", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xi = torch.cat([0.3 * torch.randn(K, 3, generator=g, dtype=F64),
                    0.1 * torch.randn(K, 3, generator=g, dtype=F64)], dim=1)
    poses = se3.se3_exp(xi).to(device)
    invd = (1.0 / (2.0 + 2.0 * torch.rand(K, h, w, generator=g, dtype=F64))).to(device, dtype)
    ii = torch.tensor([0, 1, 2, 3, 0, 2], device=device)
    jj = torch.tensor([1, 0, 3, 1, 2, 0], device=device)
    return poses, invd, ii, jj


def test_pixel_grid_order():
    g = pixel_grid(3, 5)
    assert g.shape == (3, 5, 2)
    assert g[2, 4].tolist() == [4.0, 2.0]  # [u, v]: u runs along the width
    assert g.dtype == torch.float32 and pixel_grid(2, 2, dtype=F64).dtype == F64


@pytest.mark.parametrize("device", DEVICES)
def test_unproject_project_round_trip(device):
    coords = pixel_grid(6, 8, device, F64)
    d = torch.full((6, 8), 0.25, dtype=F64, device=device)
    X = unproject(coords, d, INTR)
    assert X.shape == (6, 8, 4)
    assert torch.allclose(X[..., 2], torch.ones_like(d)) and torch.equal(X[..., 3], d)
    assert torch.allclose(project(X, INTR), coords, atol=1e-12)
    # The metric point is X[:3] / d: depth 4 m here.
    assert torch.allclose((X[..., :3] / X[..., 3:])[..., 2], torch.full_like(d, 4.0))
    # Channel-first layout gives the same numbers.
    Xc = unproject(coords.reshape(1, -1, 2).transpose(1, 2), d.reshape(1, -1), INTR, dim=1)
    assert torch.allclose(Xc[0].T, X.reshape(-1, 4))
    assert torch.allclose(project(Xc, INTR, dim=1)[0].T, coords.reshape(-1, 2))


@pytest.mark.parametrize("device", DEVICES)
def test_reproject_matches_metric_pipeline(device):
    """Unproject to metric points, go through the world, project: the same as reproject."""
    poses, invd, ii, jj = _scene(device=device)
    coords, valid = reproject(poses, invd, INTR, ii, jj)
    K, h, w = invd.shape
    fx, fy, cx, cy = INTR
    uv = pixel_grid(h, w, device, F64)
    z = 1.0 / invd[ii]
    P_i = torch.stack([(uv[..., 0] - cx) / fx * z, (uv[..., 1] - cy) / fy * z, z], -1).reshape(len(ii), -1, 3)
    P_w = se3.act(se3.inverse(poses[ii]), P_i)
    P_j = se3.act(poses[jj], P_w)
    expected = torch.stack([fx * P_j[..., 0] / P_j[..., 2] + cx, fy * P_j[..., 1] / P_j[..., 2] + cy], -1)
    assert torch.allclose(coords.reshape(len(ii), -1, 2), expected, atol=1e-9)
    assert torch.equal(valid.reshape(len(ii), -1), (P_j[..., 2] / z.reshape(len(ii), -1)) > 0.25)


def test_valid_mask_drops_points_behind_target():
    poses, invd, ii, jj = _scene()
    # Camera 1 sits 4 m in front of camera 0 looking back: points 2-4 m ahead of 0 are 0-2 m ahead of 1.
    turn = se3.so3_exp(torch.tensor([0.0, math.pi, 0.0], dtype=F64))
    flip = se3.from_rt(turn, torch.tensor([0.0, 0.0, 4.0], dtype=F64))
    poses = torch.stack([torch.eye(4, dtype=F64), flip])
    invd = invd[:2]
    _, valid = reproject(poses, invd, INTR, torch.tensor([0]), torch.tensor([1]))
    depth_in_1 = 4.0 - 1.0 / invd[0]
    assert torch.equal(valid[0], depth_in_1 * invd[0] > 0.25)
    assert valid.any() and not valid.all()


def test_grid_transfer_matches_explicit_transform():
    poses, invd, ii, jj = _scene()
    T = poses[jj] @ se3.inverse(poses[ii])
    X = unproject(pixel_grid(6, 8, dtype=F64), invd[ii], INTR).reshape(len(ii), -1, 4)
    Xj = grid_transfer(T, invd[ii], INTR)
    assert Xj.shape == (len(ii), 4, 48)
    R, t = T[:, None, :3, :3], T[:, None, :3, 3]
    expected = (R @ X[..., :3, None])[..., 0] + X[..., 3:] * t
    assert torch.allclose(Xj[:, :3].transpose(1, 2), expected)
    assert torch.equal(Xj[:, 3], X[..., 3])


def _central_difference(f, n: int, eps: float = 1e-6) -> torch.Tensor:
    """Stack of (f(+eps e_k) - f(-eps e_k)) / 2 eps for k < n, on the last axis."""
    cols = []
    for k in range(n):
        e = torch.zeros(n, dtype=F64)
        e[k] = eps
        cols.append((f(e) - f(-e)) / (2 * eps))
    return torch.stack(cols, dim=-1)


@pytest.mark.parametrize("device", DEVICES)
def test_jacobians_match_finite_differences(device):
    poses, invd, ii, jj = _scene(device=device)
    _, valid, Ji, Jj, Jd = reproject(poses, invd, INTR, ii, jj, jacobians=True)
    assert valid.all()
    E = len(ii)

    def moved(k: int, xi: torch.Tensor) -> torch.Tensor:
        p = poses.clone()
        p[k] = se3.se3_exp(xi.to(device)) @ p[k]
        return p

    for e in range(E):
        i, j = int(ii[e]), int(jj[e])
        one = (ii[e:e + 1], jj[e:e + 1])
        num_j = _central_difference(lambda xi, j=j, one=one: reproject(moved(j, xi), invd, INTR, *one)[0][0], 6)
        num_i = _central_difference(lambda xi, i=i, one=one: reproject(moved(i, xi), invd, INTR, *one)[0][0], 6)
        assert torch.allclose(Jj[e], num_j, atol=1e-6, rtol=1e-6), (e, (Jj[e] - num_j).abs().max())
        assert torch.allclose(Ji[e], num_i, atol=1e-6, rtol=1e-6), (e, (Ji[e] - num_i).abs().max())

    # Inverse depth: each pixel's projection depends only on its own inverse depth.
    eps = 1e-7
    plus, minus = invd.clone(), invd.clone()
    plus[ii[0]] += eps
    minus[ii[0]] -= eps
    one = (ii[:1], jj[:1])
    num_d = (reproject(poses, plus, INTR, *one)[0] - reproject(poses, minus, INTR, *one)[0]) / (2 * eps)
    assert torch.allclose(Jd[:1], num_d, atol=1e-5, rtol=1e-6)
    assert Jd.abs().max() > 1.0  # not trivially zero


def test_jacobian_layouts_agree():
    poses, invd, ii, jj = _scene()
    T = poses[jj] @ se3.inverse(poses[ii])
    Xc = grid_transfer(T, invd[ii], INTR)
    Xl = Xc.transpose(1, 2).reshape(len(ii), 6, 8, 4)
    Jl, Jdl = pose_jacobian(Xl, INTR), depth_jacobian(Xl, T[:, :3, 3], INTR)
    Jc, Jdc = pose_jacobian(Xc, INTR, dim=1), depth_jacobian(Xc, T[:, :3, 3], INTR, dim=1)
    assert Jl.shape == (len(ii), 6, 8, 2, 6) and Jc.shape == (len(ii), 2, 6, 48) and Jdc.shape == (len(ii), 2, 48)
    assert torch.allclose(Jc.permute(0, 3, 1, 2), Jl.reshape(len(ii), 48, 2, 6))
    assert torch.allclose(Jdc.transpose(1, 2), Jdl.reshape(len(ii), 48, 2))


def test_float32_agrees_with_float64():
    poses, invd, ii, jj = _scene()
    c64, v64, Ji64, Jj64, Jd64 = reproject(poses, invd, INTR, ii, jj, jacobians=True)
    c32, v32, Ji32, Jj32, Jd32 = reproject(poses, invd.float(), INTR, ii, jj, jacobians=True)
    assert c32.dtype == Jj32.dtype == torch.float32
    assert torch.equal(v32, v64)
    assert torch.allclose(c32.double(), c64, atol=1e-4)
    assert torch.allclose(Ji32.double(), Ji64, rtol=1e-4, atol=1e-3)
    assert torch.allclose(Jd32.double(), Jd64, rtol=1e-4, atol=1e-4)
