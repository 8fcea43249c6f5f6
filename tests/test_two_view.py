"""Two-view geometry for monocular starts: the essential-matrix pose and triangulated inverse depth against a
known synthetic pair."""
from __future__ import annotations

import numpy as np
import torch

from metricslam.geometry import se3
from metricslam.geometry.projective import pixel_grid, reproject
from metricslam.slam.two_view import essential_pose, triangulate_invdepth

# Processing-resolution pixels, where the system runs its RANSAC (its threshold is 1 px there).
H, W = 60, 80
INTRINSICS = torch.tensor([80.0, 80.0, 39.5, 29.5], dtype=torch.float64)


def _pair(translation: list[float], angle_deg: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """T_ji, a bumpy inverse-depth map of view i (h, w) and the exact targets of its pixels in view j."""
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    invdepth = 0.25 + 0.1 * torch.sin(u / 10) * torch.cos(v / 8) + 0.1 * (v / H)
    axis = torch.tensor([0.1, 1.0, 0.2], dtype=torch.float64)
    T_ji = se3.from_rt(se3.so3_exp(np.radians(angle_deg) * axis / axis.norm()),
                       torch.tensor(translation, dtype=torch.float64))
    poses = torch.stack([torch.eye(4, dtype=torch.float64), T_ji])
    targets, valid = reproject(poses, invdepth[None].expand(2, -1, -1), INTRINSICS, torch.tensor([0]),
                               torch.tensor([1]))
    assert bool(valid.all())
    return T_ji, invdepth, targets[0]


def test_essential_pose_recovers_direction_and_rotation():
    T_ji, _, targets = _pair([0.1, 0.02, 0.3], 3.0)
    src = pixel_grid(H, W, dtype=torch.float64).reshape(-1, 2).numpy() * 4
    found = essential_pose(src, targets.reshape(-1, 2).numpy() * 4, INTRINSICS * 4, threshold_px=1.0)
    assert found is not None and found.inliers.mean() > 0.95
    rot_err = float(se3.so3_log(torch.from_numpy(found.T_ji[:3, :3]) @ T_ji[:3, :3].T).norm())
    t_true = (T_ji[:3, 3] / T_ji[:3, 3].norm()).numpy()
    assert np.degrees(rot_err) < 0.1
    assert np.degrees(np.arccos(np.clip(found.T_ji[:3, 3] @ t_true, -1, 1))) < 0.5
    assert found.parallax_deg > 1.0


def test_essential_pose_refuses_too_few_points():
    src = np.random.default_rng(0).uniform(0, 60, (20, 2))
    assert essential_pose(src, src + 1.0, INTRINSICS, threshold_px=1.0) is None


def test_triangulated_invdepth_matches_truth():
    T_ji, invdepth, targets = _pair([0.2, -0.05, 0.1], 2.0)
    estimate, angle = triangulate_invdepth(T_ji, targets, INTRINSICS)
    assert torch.allclose(estimate, invdepth, rtol=1e-6)
    assert bool((angle > 0).all())


def test_triangulation_without_baseline_is_invalid():
    T_ji, _, targets = _pair([0.0, 0.0, 0.0], 2.0)
    estimate, angle = triangulate_invdepth(T_ji, targets, INTRINSICS)
    assert bool((angle < 1e-6).all()) and bool((estimate <= 0).all() | (angle < 1e-6).all())
