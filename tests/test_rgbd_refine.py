"""Direct RGB-D refinement: odometry pairs, keyframe pose graph, non-keyframe alignment, and its wiring."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metricslam.config import apply_overrides
from metricslam.errors import MetricSlamError
from metricslam.geometry import se3
from metricslam.geometry.camera import Intrinsics
from metricslam.io.frame import Frame
from metricslam.io.synthetic.poses import look_poses
from metricslam.io.synthetic.render import render
from metricslam.io.synthetic.room import build_room
from metricslam.slam.backend import segment_ids
from metricslam.slam.config import RgbdRefineConfig, SlamConfig
from metricslam.slam.rgbd_refine import RgbdAligner, odometry_pairs, refine_keyframe_poses
from metricslam.slam.system import Slam

pytestmark = pytest.mark.usefixtures("one_thread")

CAMERA = Intrinsics(200.0, 200.0, 127.5, 95.5, 256, 192)


@pytest.fixture(scope="module")
def walk():
    """12 views 4 cm and 1.5 degrees apart in the synthetic room: T_wc (N, 4, 4), RGB and depth."""
    n = 12
    positions = np.stack([np.linspace(2.6, 3.04, n), np.linspace(2.4, 2.6, n), np.full(n, 1.4)], axis=1)
    poses = look_poses(positions, np.deg2rad(np.linspace(25.0, 42.0, n)), np.full(n, -0.1))
    scene = build_room(0)
    views = [render(scene, p, CAMERA) for p in poses]
    return poses, [v[0] for v in views], [v[1].astype(np.float32) for v in views]


def _translation_errors(poses_wc: np.ndarray, truth_wc: np.ndarray) -> np.ndarray:
    """Position error (m) of every camera after expressing both trajectories relative to their first camera."""
    est = np.linalg.inv(poses_wc[0]) @ poses_wc
    ref = np.linalg.inv(truth_wc[0]) @ truth_wc
    return np.linalg.norm(est[:, :3, 3] - ref[:, :3, 3], axis=1)


def test_odometry_pairs_stay_inside_segments():
    pairs = odometry_pairs(segment_ids([0, 4], 7), (1, 2), [(0, 3), (1, 5), (4, 6)])
    assert (0, 3) in pairs and (1, 2) in pairs and (4, 6) in pairs
    assert (1, 5) not in pairs and (3, 4) not in pairs and (2, 4) not in pairs
    assert pairs == sorted(set(pairs))


def test_unknown_method_is_a_user_error():
    with pytest.raises(MetricSlamError, match="rgbd_refine.method: 'icp' is not one of hybrid, color"):
        apply_overrides(SlamConfig(), ["rgbd_refine.method=icp"])


def test_pose_graph_removes_keyframe_pose_noise(walk):
    truth, rgb, depth = walk
    rng = np.random.default_rng(0)
    noisy = truth.copy()
    noisy[1:, :3, 3] += rng.normal(0.0, 0.02, (len(truth) - 1, 3))  # 2 cm per axis, as the flow BA leaves it
    poses_cw = se3.inverse(torch.from_numpy(noisy))
    cfg = RgbdRefineConfig()
    aligner = RgbdAligner(CAMERA, cfg, depth[0])
    pairs = odometry_pairs([0] * len(truth), cfg.gaps, [])
    refined, stats = refine_keyframe_poses(aligner, rgb, depth, poses_cw, pairs, [0])
    assert stats.edges >= 0.9 * len(pairs)
    after = _translation_errors(se3.inverse(refined).numpy(), truth)
    before = _translation_errors(noisy, truth)
    assert before.max() > 0.03
    assert after.max() < 0.005, after  # against 2-6 cm before
    assert torch.allclose(refined[0], poses_cw[0], atol=1e-9)  # the segment's first keyframe is the gauge


def test_aligner_rejects_a_result_far_from_its_start(walk):
    truth, rgb, depth = walk
    cfg = RgbdRefineConfig()
    aligner = RgbdAligner(CAMERA, cfg, depth[0])
    a, b = aligner.image(rgb[0], depth[0]), aligner.image(rgb[2], depth[2])
    start = np.linalg.inv(truth[0]) @ truth[2]
    found = aligner.align(b, a, start)
    assert found is not None and np.linalg.norm(found[0][:3, 3] - start[:3, 3]) < 0.005
    assert found[1].shape == (6, 6)
    blank = aligner.image(np.full_like(rgb[0], 90), np.zeros_like(depth[0]))
    assert aligner.align(blank, a, start) is None


def _track(frames, *overrides: str) -> Slam:
    slam = Slam(apply_overrides(SlamConfig(), ["prior.kind=sensor", *overrides]))
    for f in frames:
        slam.track(f)
    return slam


def test_slam_refines_sensor_runs_and_can_switch_it_off(walk):
    truth, rgb, depth = walk
    frames = [Frame(index=i, timestamp=0.1 * i, rgb=rgb[i], intrinsics=CAMERA, depth=depth[i])
              for i in range(len(truth))]
    on, off = _track(frames), _track(frames, "rgbd_refine.enabled=false")
    rec_on, rec_off = on.finish(), off.finish()
    assert on.rgbd_stats is not None and on.rgbd_stats.edges >= 1
    assert off.rgbd_stats is None
    # Non-keyframes were placed by RGB-D odometry: their records carry no flow for the filler.
    kf = set(rec_on.kf_frame_indices.tolist())
    non_kf = [r for r in on.records if r.index not in kf]
    assert non_kf and all(r.targets is None for r in non_kf)
    err_on, err_off = _translation_errors(rec_on.poses_wc, truth), _translation_errors(rec_off.poses_wc, truth)
    assert err_on.max() < 0.008, err_on  # flow alone: 1.5-1.8 cm at the end of this 45 cm walk
    assert np.sqrt((err_on**2).mean()) < 0.5 * np.sqrt((err_off**2).mean())
