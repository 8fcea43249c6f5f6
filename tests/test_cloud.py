"""Multi-view consistent point cloud: outliers in one view are dropped, the observed surface is kept."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from metricslam.errors import InputError
from metricslam.mapping.cloud import CloudConfig, consistent_cloud, voxel_downsample
from metricslam.mapping.depthmaps import KeyframeDepthConfig

W, H, FRAMES, EVERY = 160, 120, 24, 2
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def room(oracle_room):
    _, gt = oracle_room(W, H, FRAMES, keyframe_every=EVERY, seed=1)
    cam = gt.intrinsics
    v, u = np.mgrid[0 : cam.height, 0 : cam.width]
    surface = []
    for k in range(gt.num_keyframes):
        d = gt.kf_prior_depths[k]
        ok = d > 0
        X = np.stack([(u[ok] - cam.cx) / cam.fx * d[ok], (v[ok] - cam.cy) / cam.fy * d[ok], d[ok]], 1)
        surface.append(X @ gt.kf_poses_wc[k, :3, :3].T + gt.kf_poses_wc[k, :3, 3])
    return gt, cKDTree(np.concatenate(surface))


def _with_outliers(rec, fraction=0.03, seed=0):
    rng = np.random.default_rng(seed)
    prior = rec.kf_prior_depths.copy()
    hit = (rng.random(prior.shape) < fraction) & (prior > 0)
    prior[hit] *= rng.choice([0.7, 1.4], size=int(hit.sum()))
    return replace(rec, kf_prior_depths=prior)


def test_injected_outliers_are_dropped(room):
    gt, surface = room
    noisy = _with_outliers(gt)
    prior = KeyframeDepthConfig(source="prior")
    raw, _ = consistent_cloud(noisy, CloudConfig(depth=prior, min_views=0))
    kept, colours = consistent_cloud(noisy, CloudConfig(depth=prior, min_views=2))
    far_raw = np.mean(surface.query(raw)[0] > 0.05)
    far_kept = np.mean(surface.query(kept)[0] > 0.05)
    assert far_raw > 0.02, "the injected outliers must show without the check"
    assert far_kept < 0.002, far_kept
    # The surface itself survives: most ground-truth points have a cloud point within 5 cm.
    sample = surface.data[:: max(1, surface.n // 20000)]
    assert np.mean(cKDTree(kept).query(sample)[0] < 0.05) > 0.9
    assert kept.dtype == np.float32 and colours.dtype == np.uint8 and colours.shape == kept.shape


def test_ba_grid_outliers_are_dropped(room):
    gt, surface = room
    depths = gt.kf_depths.copy()
    rng = np.random.default_rng(1)
    cells = rng.random(depths.shape) < 0.03  # single corrupted grid cells: jumps to both neighbours
    depths[cells] *= 1.5
    cfg = CloudConfig(depth=KeyframeDepthConfig(source="ba"), min_views=2)
    kept, _ = consistent_cloud(replace(gt, kf_depths=depths), cfg)
    clean, _ = consistent_cloud(gt, cfg)
    assert np.mean(surface.query(kept)[0] > 0.1) < 0.01
    assert len(kept) > 0.7 * len(clean)


def test_colours_come_from_the_keyframe_images(room):
    gt, _ = room
    points, colours = consistent_cloud(gt, CloudConfig(depth=KeyframeDepthConfig(source="prior"), voxel_size=1e-4,
                                                       pixel_stride=1, neighbours=1, min_views=0))
    # With a tiny voxel every point is a pixel (bar chance coincidences): the colours are the images' own.
    assert len(points) == pytest.approx(int((gt.kf_prior_depths > 0).sum()), rel=1e-3)
    assert abs(colours.mean() - gt.kf_images[gt.kf_prior_depths > 0].mean()) < 1.0


def test_voxel_downsample_averages_per_voxel():
    pts = torch.tensor([[0.01, 0.01, 0.01], [0.03, 0.03, 0.03], [0.15, 0.0, 0.0], [-0.01, 0.0, 0.0]])
    cols = torch.tensor([[0, 0, 0], [100, 100, 100], [50, 50, 50], [10, 10, 10]], dtype=torch.uint8)
    p, c = voxel_downsample(pts, cols, 0.1)
    order = torch.argsort(p[:, 0])
    assert len(p) == 3
    torch.testing.assert_close(p[order][1], torch.tensor([0.02, 0.02, 0.02]))
    torch.testing.assert_close(c[order][1], torch.tensor([50.0, 50.0, 50.0]))


def test_bad_cloud_settings():
    with pytest.raises(InputError):
        CloudConfig(min_views=-1)
    with pytest.raises(InputError):
        CloudConfig(rel_threshold=0)


def test_keyframes_without_a_pose_are_skipped(room):
    gt, surface = room
    poses = gt.kf_poses_wc.copy()
    poses[3] = np.nan
    points, _ = consistent_cloud(replace(gt, kf_poses_wc=poses), CloudConfig(depth=KeyframeDepthConfig(source="prior")))
    assert len(points) > 1000 and np.isfinite(points).all()
    assert np.mean(surface.query(points)[0] > 0.05) < 0.002
