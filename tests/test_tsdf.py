"""TSDF fusion of keyframes: grid-depth upsampling, the depth sources, presets, and the mesh against ground truth."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from metricslam.depth.priors import SimulatedPrior
from metricslam.depth.simulated import SimulatedPriorConfig
from metricslam.errors import InputError, MetricSlamError
from metricslam.geometry.camera import Intrinsics
from metricslam.mapping.depthmaps import KeyframeDepthConfig, keyframe_depth, resolve_source, upsample_grid_depth
from metricslam.mapping.measure import geometry_points, map_scores, ray_coverage, sample_surface
from metricslam.mapping.presets import PRESETS, choose_preset
from metricslam.mapping.tsdf import TSDFConfig, fuse_reconstruction, open3d_device

W, H, FRAMES, EVERY = 192, 144, 60, 4  # 15 keyframes spread over 2 s of the hand-held room scan
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def room(oracle_room):
    _, gt = oracle_room(W, H, FRAMES, keyframe_every=EVERY, seed=0)
    _, sim = oracle_room(W, H, FRAMES, keyframe_every=EVERY, seed=0, prior=SimulatedPrior(SimulatedPriorConfig()))
    reference = fuse_reconstruction(gt, TSDFConfig(depth=KeyframeDepthConfig(source="prior")))
    return gt, sim, geometry_points(reference.mesh, 0.01)


def _fscore(rec, source, reference):
    mesh = fuse_reconstruction(rec, TSDFConfig(depth=KeyframeDepthConfig(source=source))).mesh
    return map_scores(geometry_points(mesh, 0.01), reference, 0.05), mesh


def test_upsampling_is_exact_on_planes_and_drops_depth_edges():
    grid = Intrinsics(10.0, 10.0, 7.5, 5.5, 16, 12)
    image = grid.scaled(8.0)
    v, u = np.mgrid[0:12, 0:16]
    inv = 0.4 + 0.01 * u + 0.02 * v  # a plane: inverse depth is affine in the pixel coordinates
    depth, conf = upsample_grid_depth(1.0 / inv, np.ones_like(inv), grid, image)
    V, U = np.mgrid[0 : image.height, 0 : image.width]
    gu = (U - image.cx) * grid.fx / image.fx + grid.cx
    gv = (V - image.cy) * grid.fy / image.fy + grid.cy
    inside = (gu >= 0) & (gu <= 15) & (gv >= 0) & (gv <= 11)
    expected = 1.0 / (0.4 + 0.01 * gu + 0.02 * gv)
    assert (depth.numpy()[inside] > 0).all()
    np.testing.assert_allclose(depth.numpy()[inside], expected[inside], rtol=1e-5)
    assert conf.min() == 1.0

    step = np.where(u < 8, 1.0, 2.0).astype(np.float32)  # a wall at 1 m in front of one at 2 m
    depth, _ = upsample_grid_depth(step, np.ones_like(step), grid, image)
    d = depth.numpy()
    between = (gu > 7) & (gu < 8)
    assert (d[between] == 0).all(), "pixels between the two surfaces must be dropped"
    assert np.allclose(d[gu <= 7], 1.0) and np.allclose(d[gu >= 8], 2.0)
    assert (d > 0).mean() > 0.9


def test_both_rescales_the_prior_to_the_ba_depth(room):
    gt, _, _ = room
    biased = replace(gt, kf_prior_depths=gt.kf_prior_depths * 1.25)
    ba, _ = keyframe_depth(gt, 3, KeyframeDepthConfig(source="ba"))
    both, weight = keyframe_depth(biased, 3, KeyframeDepthConfig(source="both"))
    truth = torch.from_numpy(gt.kf_prior_depths[3])
    ok = (both > 0) & (truth > 0)
    assert ok.float().mean() > 0.9 and (weight[ok] > 0).all()
    assert float(torch.median(both[ok] / truth[ok])) == pytest.approx(1.0, abs=0.01)
    assert (both > 0).sum() >= (ba > 0).sum(), "the prior fills what the BA depth leaves out"


def test_mesh_from_ground_truth_depth_is_accurate_and_closed(room):
    gt, _, reference = room
    scores, mesh = _fscore(gt, "ba", reference)
    assert len(mesh.triangles) > 10000 and mesh.has_vertex_colors()
    assert scores.fscore > 0.9, scores
    assert scores.accuracy < 0.02 and scores.completeness < 0.03
    # Closed where the scene is: rays through the pixels that were fused hit the mesh at the true depth.
    fused = np.stack([keyframe_depth(gt, k, KeyframeDepthConfig(source="ba"))[0].numpy() > 0
                      for k in range(gt.num_keyframes)])
    assert fused.mean() > 0.8
    observed = np.where(fused, gt.kf_prior_depths, 0)
    coverage = ray_coverage(mesh, gt.intrinsics, gt.kf_poses_wc, observed, 0.05)
    assert coverage > 0.95, coverage
    holes = mesh.__copy__()
    holes.remove_triangles_by_mask(np.arange(len(mesh.triangles)) % 3 == 0)
    assert ray_coverage(holes, gt.intrinsics, gt.kf_poses_wc, observed, 0.05) < 0.8, "the check must see holes"
    colours = np.asarray(mesh.vertex_colors)
    assert abs(colours.mean() - gt.kf_images.mean() / 255) < 0.08


def test_simulated_prior_with_ba_depth(room):
    gt, sim, reference = room
    # As a run keeps them: BA depth (here the ground truth on the grid) and the noisy single-view prior.
    kept = replace(gt, kf_prior_depths=sim.kf_prior_depths)
    both, _ = _fscore(kept, "both", reference)
    prior_only, _ = _fscore(kept, "prior", reference)
    assert both.fscore > 0.8, both
    assert prior_only.fscore < 0.6, "the raw prior (AbsRel 8 %) alone cannot make a 5 cm map"


def test_presets_follow_the_depth_range(room):
    gt, _, _ = room
    assert choose_preset(gt) == ("indoor", PRESETS["indoor"])
    far = replace(gt, kf_depths=gt.kf_depths * 8.0)
    assert choose_preset(far)[0] == "outdoor"
    name, scale = choose_preset(replace(gt, metric=False))
    median = float(np.median(gt.kf_depths[gt.kf_depths > 0]))
    assert name == "relative" and scale.voxel_size == pytest.approx(median / 100)
    result = fuse_reconstruction(gt, TSDFConfig(voxel_size=0.05))
    assert (result.voxel_size, result.truncation, result.preset) == (0.05, 0.2, "indoor")


def test_auto_source_fuses_sensor_depth_itself(room):
    gt, sim, _ = room
    # Measured depth is sharper than the BA's grid; network-like priors are combined with the BA depth.
    assert resolve_source(replace(gt, prior="sensor"), "auto") == "prior"
    assert resolve_source(replace(sim, prior="simulated"), "auto") == "both"
    assert resolve_source(replace(gt, kf_prior_depths=None), "auto") == "ba"
    auto, _ = keyframe_depth(replace(gt, prior="sensor"), 3, KeyframeDepthConfig(source="auto"))
    prior, _ = keyframe_depth(gt, 3, KeyframeDepthConfig(source="prior"))
    assert torch.equal(auto, prior)


def test_bad_settings_are_user_errors(room):
    gt, _, _ = room
    with pytest.raises(InputError, match="voxel size"):
        TSDFConfig(voxel_size=-0.01)
    with pytest.raises(InputError, match="depth source"):
        KeyframeDepthConfig(source="lidar")
    with pytest.raises(InputError, match="prior depth maps"):
        fuse_reconstruction(replace(gt, kf_prior_depths=None), TSDFConfig(depth=KeyframeDepthConfig(source="prior")))
    with pytest.raises(InputError, match="max-depth"):
        fuse_reconstruction(gt, TSDFConfig(max_depth=0.1))
    if not torch.cuda.is_available():
        assert open3d_device("auto")[1].get_type().name == "CPU"
        with pytest.raises(MetricSlamError):
            open3d_device("cuda")


def test_surface_sampling_is_uniform_by_area():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 1], [0, 3, 1]], float)
    triangles = np.array([[0, 1, 2], [3, 4, 5]])  # areas 0.5 and 4.5
    pts = sample_surface(vertices, triangles, 20000, seed=1)
    upper = pts[:, 2] > 0.5
    assert upper.mean() == pytest.approx(0.9, abs=0.01)
    assert (pts[~upper, :2].sum(1) <= 1 + 1e-9).all() and (pts[upper, :2].sum(1) <= 3 + 1e-9).all()


def test_keyframes_without_a_pose_are_skipped(room):
    gt, _, reference = room
    poses = gt.kf_poses_wc.copy()
    poses[4] = np.nan  # SLAM lost this keyframe
    result = fuse_reconstruction(replace(gt, kf_poses_wc=poses), TSDFConfig())
    scores = map_scores(geometry_points(result.mesh, 0.01), reference, 0.05)
    assert scores.precision > 0.97 and scores.recall > 0.9
