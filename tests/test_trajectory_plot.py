"""The top-view trajectory plot: alignment choice, view plane, error colouring data, PNG output."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metricslam.geometry import se3
from metricslam.io.images import read_rgb
from metricslam.io.trajectory import Trajectory
from metricslam.viz.trajectory import plot_trajectory_top, top_view


def _circle(n: int = 60, plane: tuple[int, int] = (0, 1), radius: float = 2.0) -> Trajectory:
    """Camera on a circle in the given world plane, with a little motion along the third axis."""
    t = np.linspace(0, 1.5 * np.pi, n)
    poses = np.tile(np.eye(4), (n, 1, 1))
    a, b = plane
    c = 3 - a - b
    poses[:, a, 3] = radius * np.cos(t)
    poses[:, b, 3] = radius * np.sin(t)
    poses[:, c, 3] = 0.05 * np.sin(3 * t)
    return Trajectory(poses, np.arange(n) / 30.0)


def _transformed(traj: Trajectory, scale: float, seed: int = 0) -> Trajectory:
    """The same trajectory in another frame (random rotation and translation), positions scaled."""
    rng = np.random.default_rng(seed)
    T = se3.se3_exp(torch.tensor(rng.normal(size=6), dtype=torch.float64)).numpy()
    poses = traj.poses.copy()
    poses[:, :3, 3] *= scale
    return Trajectory(T @ poses, traj.timestamps.copy())


def test_metric_estimate_is_se3_aligned_and_keeps_its_scale_error():
    gt = _circle()
    est = _transformed(gt, 1.10)
    view = top_view(est, gt, metric=True)
    assert view.alignment == "se3" and view.scale == 1.0
    assert "SE3" in view.label
    # A 10 % scale error on a 2 m circle leaves errors of the order of 0.2 m after rigid alignment.
    assert 0.05 < np.sqrt(np.mean(view.errors**2)) < 0.3


def test_non_metric_estimate_is_sim3_aligned():
    gt = _circle()
    est = _transformed(gt, 0.37)
    view = top_view(est, gt, metric=False)
    assert view.alignment == "sim3"
    assert view.scale == pytest.approx(1 / 0.37, rel=1e-6)
    assert "Sim3" in view.label
    assert view.errors.max() < 1e-6
    np.testing.assert_allclose(view.est, gt.positions, atol=1e-6)


@pytest.mark.parametrize("plane", [(0, 1), (0, 2), (1, 2)])
def test_view_plane_is_the_plane_of_largest_extent(plane):
    gt = _circle(plane=plane)
    assert top_view(gt, gt).axes == plane
    assert top_view(gt).axes == plane


def test_without_ground_truth_and_with_nonfinite_poses():
    est = _circle(40)
    est.poses[5] = np.nan
    view = top_view(est, None, metric=False)
    assert view.errors is None and view.gt is None and view.alignment == "none"
    assert len(view.est) == 39 and np.isfinite(view.est).all()
    assert "arbitrary" in view.label


def test_static_ground_truth_is_drawn_unaligned():
    gt = Trajectory(np.tile(np.eye(4), (10, 1, 1)), np.arange(10) / 30.0)
    est = _circle(10)
    view = top_view(est, gt)
    assert view.alignment == "none"
    np.testing.assert_allclose(view.errors, np.linalg.norm(est.positions, axis=1))


def test_png_is_written_atomically(tmp_path):
    gt = _circle()
    est = _transformed(gt, 1.05)
    out = tmp_path / "plots" / "trajectory.png"
    view = plot_trajectory_top(est, gt, out, title="circle", metric=True)
    image = read_rgb(out)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
    # The error colour map puts strongly coloured (non-grey) pixels on the canvas.
    rgb = image.astype(int)
    colourful = (np.abs(rgb[..., 0] - rgb[..., 2]) > 80).mean()
    assert colourful > 0.002
    assert [p.name for p in out.parent.iterdir()] == ["trajectory.png"]
    assert view.alignment == "se3"
    plot_trajectory_top(est, None, tmp_path / "alone.png", metric=False)
    assert read_rgb(tmp_path / "alone.png").shape[2] == 3
