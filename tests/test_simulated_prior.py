"""Simulated metric depth prior: requested accuracy, seeded determinism, error components and confidence."""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from metricslam.depth.simulated import SimulatedMetricDepth, SimulatedPriorConfig, solve_gain
from metricslam.io.synthetic import SyntheticSequence

W, H = 160, 120


@pytest.fixture(scope="module")
def depths() -> dict[str, list[np.ndarray]]:
    out = {}
    for name in ("room", "street"):
        seq = SyntheticSequence(name, frames=12, width=W, height=H, seed=0)
        out[name] = [seq[i].depth for i in (0, 5, 11)]
    return out


def abs_rel(pred: np.ndarray, gt: np.ndarray) -> float:
    v = (pred > 0) & (gt > 0)
    return float(np.mean(np.abs(pred[v] - gt[v]) / gt[v]))


@pytest.mark.parametrize("scene", ["room", "street"])
@pytest.mark.parametrize("target", [0.08, 0.15])
def test_requested_abs_rel_is_met(depths, scene, target):
    model = SimulatedMetricDepth(SimulatedPriorConfig(abs_rel=target, seed=3))
    for index, gt in enumerate(depths[scene]):
        pred, _ = model.predict(gt, index)
        assert abs_rel(pred, gt) == pytest.approx(target, rel=0.1)
        assert abs_rel(pred, gt) > 0.5 * target  # really corrupted, not a copy of the ground truth


def test_default_target_is_008(depths):
    gt = depths["room"][0]
    assert abs_rel(SimulatedMetricDepth().predict(gt, 0)[0], gt) == pytest.approx(0.08, rel=0.1)


def test_deterministic_given_seed_and_frame(depths):
    gt = depths["room"][1]
    a = SimulatedMetricDepth(SimulatedPriorConfig(seed=7))
    b = SimulatedMetricDepth(SimulatedPriorConfig(seed=7))
    pa, ca = a.predict(gt, 4)
    pb, cb = b.predict(gt, 4)
    assert np.array_equal(pa, pb) and np.array_equal(ca, cb)
    assert not np.array_equal(a.predict(gt, 5)[0], pa)
    assert not np.array_equal(SimulatedMetricDepth(SimulatedPriorConfig(seed=8)).predict(gt, 4)[0], pa)


def test_sequence_scale_bias_is_applied_on_top(depths):
    gt = depths["street"][0]
    cfg = SimulatedPriorConfig(seed=1)
    base, _ = SimulatedMetricDepth(cfg).predict(gt, 2)
    biased, _ = SimulatedMetricDepth(replace(cfg, scale_bias=0.1)).predict(gt, 2)
    assert np.allclose(biased, 1.1 * base, rtol=1e-5)
    v = base > 0
    assert np.median(biased[v] / gt[v]) == pytest.approx(1.1 * np.median(base[v] / gt[v]), rel=1e-4)


def test_invalid_pixels_and_holes(depths):
    gt = depths["street"][1]
    assert (gt == 0).any()  # sky
    cfg = SimulatedPriorConfig(holes=0.05, seed=2)
    pred, conf = SimulatedMetricDepth(cfg).predict(gt, 0)
    assert pred.dtype == np.float32 and conf.dtype == np.float32 and pred.shape == gt.shape
    assert np.all(pred[gt == 0] == 0)
    valid = gt > 0
    assert np.mean(pred[valid] == 0) == pytest.approx(0.05, abs=0.01)
    holes = (pred == 0) & valid
    # Holes come in blobs: most hole pixels have hole neighbours.
    grown = cv2.erode(holes.astype(np.uint8), np.ones((3, 3), np.uint8))
    assert grown.sum() > 0.3 * holes.sum()
    assert np.all(conf[pred == 0] == 0) and conf.min() >= 0 and conf.max() <= 1
    assert np.all(conf[pred > 0] > 0)
    none, _ = SimulatedMetricDepth(replace(cfg, holes=0.0)).predict(gt, 0)
    assert np.array_equal(none > 0, valid)


def test_error_has_frame_scale_and_low_frequency_components(depths):
    gt = depths["room"][0]
    model = SimulatedMetricDepth(SimulatedPriorConfig(seed=4))
    medians = []
    for index in range(8):
        pred, _ = model.predict(gt, index)
        v = pred > 0
        log_err = np.log(np.where(v, pred, 1) / np.where(v, gt, 1))
        medians.append(np.median(log_err[v]))
    assert np.std(medians) > 0.01  # per-frame scale jitter
    # Low-frequency distortion: heavy smoothing keeps a large share of the error (white noise would vanish).
    smooth = cv2.GaussianBlur(log_err.astype(np.float32), (0, 0), 8)
    assert np.std(smooth[v]) > 0.3 * np.std(log_err[v])


def test_depth_edges_are_blurred_and_less_confident(depths):
    gt = depths["room"][0]
    pred, conf = SimulatedMetricDepth(SimulatedPriorConfig(seed=5, holes=0.0)).predict(gt, 0)
    log_gt = np.log(np.where(gt > 0, gt, 1)).astype(np.float32)
    grad = np.hypot(cv2.Sobel(log_gt, cv2.CV_32F, 1, 0), cv2.Sobel(log_gt, cv2.CV_32F, 0, 1)) / 8
    edge = cv2.dilate((grad > 0.05).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    far = ~(cv2.dilate(edge.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0)
    assert edge.mean() > 0.01 and far.mean() > 0.3
    assert conf[edge].mean() < 0.6 * conf[far].mean()
    err = np.abs(pred / np.where(gt > 0, gt, 1) - 1)
    assert np.median(err[edge]) > np.median(err[far])


def test_confidence_is_lower_where_noise_is_stronger(depths):
    gt = depths["street"][2]
    pred, conf = SimulatedMetricDepth(SimulatedPriorConfig(seed=6, holes=0.0, edge_blur=0.0)).predict(gt, 3)
    v = pred > 0
    log_err = np.log(np.where(v, pred, 1) / np.where(v, gt, 1)).astype(np.float32)
    roughness = np.abs(log_err - cv2.GaussianBlur(log_err, (0, 0), 2))
    low, high = np.quantile(conf[v], [1 / 3, 2 / 3])
    assert roughness[v & (conf <= low)].mean() > 1.5 * roughness[v & (conf >= high)].mean()


def test_gain_solver():
    rng = np.random.default_rng(0)
    r = rng.standard_normal(10000)
    g = solve_gain(np.zeros_like(r), r, 0.1)
    assert np.mean(np.abs(np.expm1(g * r))) == pytest.approx(0.1, rel=1e-3)
    fixed = np.full_like(r, 0.2)  # already above the target: nothing to add
    assert solve_gain(fixed, r, 0.1) == 0.0


def test_all_invalid_input_gives_empty_prior():
    pred, conf = SimulatedMetricDepth().predict(np.zeros((8, 8), np.float32), 0)
    assert not pred.any() and not conf.any()
