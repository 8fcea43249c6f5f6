"""Depth metrics against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metricslam.errors import InputError
from metricslam.metrics.depth import DepthMetricAccumulator, crop_mask, depth_metrics

# Five valid pixels; the sixth has no ground truth. Ratios max(d/g, g/d): 1.2, 1.5, 1.923, 2.5, 1.
GT = np.array([[1.0, 2.0, 5.0], [10.0, 3.0, 0.0]])
PRED = np.array([[1.2, 3.0, 2.6], [4.0, 3.0, 7.0]])
G, D = [1.0, 2.0, 5.0, 10.0, 3.0], [1.2, 3.0, 2.6, 4.0, 3.0]


def test_hand_computed_values() -> None:
    m = depth_metrics(PRED, GT)
    logs = [math.log(d / g) for d, g in zip(D, G)]
    assert m["num_pixels"] == 5
    assert m["abs_rel"] == pytest.approx((0.2 + 0.5 + 0.48 + 0.6 + 0.0) / 5)
    assert m["sq_rel"] == pytest.approx((0.04 + 0.5 + 1.152 + 3.6 + 0.0) / 5)
    assert m["rmse"] == pytest.approx(math.sqrt((0.04 + 1.0 + 5.76 + 36.0) / 5))
    assert m["rmse_log"] == pytest.approx(math.sqrt(sum(e * e for e in logs) / 5))
    assert m["log10"] == pytest.approx(sum(abs(math.log10(d) - math.log10(g)) for d, g in zip(D, G)) / 5)
    mean = sum(logs) / 5
    assert m["silog"] == pytest.approx(100 * math.sqrt(sum(e * e for e in logs) / 5 - mean * mean))
    assert (m["d1"], m["d2"], m["d3"]) == pytest.approx((2 / 5, 3 / 5, 4 / 5))
    assert m["scale"] == 1.0


def test_torch_input_mask_and_caps() -> None:
    as_torch = depth_metrics(torch.from_numpy(PRED).float()[None, None], torch.from_numpy(GT).float())
    assert as_torch["abs_rel"] == pytest.approx(0.356, rel=1e-6)
    mask = np.ones_like(GT, dtype=bool)
    mask[0, 0] = False
    assert depth_metrics(PRED, GT, mask=mask)["abs_rel"] == pytest.approx((0.5 + 0.48 + 0.6) / 4)
    # gt 10 is not < max_depth 10 and is dropped; gt 1 is not > min_depth 1 and is dropped.
    capped = depth_metrics(PRED, GT, min_depth=1.0, max_depth=10.0)
    assert capped["num_pixels"] == 3 and capped["abs_rel"] == pytest.approx((0.5 + 0.48) / 3)
    # Predictions are clamped into [min_depth, max_depth]: 50 counts as 8.
    clamped = depth_metrics(np.array([[50.0, 0.0]]), np.array([[4.0, 2.0]]), min_depth=1.0, max_depth=8.0)
    assert clamped["abs_rel"] == pytest.approx((4 / 4 + 1 / 2) / 2)
    nonfinite = depth_metrics(np.array([[np.nan, np.inf]]), np.array([[4.0, 2.0]]), min_depth=1.0, max_depth=8.0)
    assert nonfinite["abs_rel"] == pytest.approx((3 / 4 + 6 / 2) / 2)


def test_median_scaling() -> None:
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 20, (30, 40))
    m = depth_metrics(3.0 * gt, gt, median_scaling=True)
    assert m["scale"] == pytest.approx(1 / 3)
    assert m["abs_rel"] == pytest.approx(0, abs=1e-12) and m["d1"] == 1.0
    assert depth_metrics(3.0 * gt, gt)["abs_rel"] == pytest.approx(2.0)


def test_crops() -> None:
    garg = crop_mask(375, 1242, "garg")  # KITTI: rows int(.40810811 H)..int(.99189189 H), same for columns
    rows, cols = np.flatnonzero(garg.any(1)), np.flatnonzero(garg.any(0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (153, 371, 44, 1197)
    eigen = crop_mask(480, 640, "eigen")  # NYU: [45:471, 41:601]
    assert eigen.sum() == 426 * 560 and eigen[45, 41] and eigen[470, 600] and not eigen[44, 41] and not eigen[470, 601]
    gt = np.full((480, 640), 2.0)
    pred = np.full((480, 640), 2.0)
    pred[:45] = 4.0  # outside the crop: must not count
    assert depth_metrics(pred, gt, crop="eigen")["abs_rel"] == 0.0
    assert depth_metrics(pred, gt)["abs_rel"] > 0


def test_accumulator_per_image_and_pooled() -> None:
    acc = DepthMetricAccumulator()
    acc.add(np.array([[2.0]]), np.array([[1.0]]))  # one pixel, abs_rel 1
    acc.add(np.full((1, 3), 5.0), np.full((1, 3), 5.0))  # three exact pixels
    acc.add(np.ones((2, 2)), np.zeros((2, 2)))  # no ground truth: skipped
    s = acc.summary()
    assert s["per_image"]["abs_rel"] == pytest.approx(0.5)
    assert s["pooled"]["abs_rel"] == pytest.approx(0.25)
    assert s["per_image"]["d1"] == pytest.approx(0.5) and s["pooled"]["d1"] == pytest.approx(0.75)
    assert (s["per_image"]["num_images"], s["per_image"]["num_skipped"], s["pooled"]["num_pixels"]) == (2, 1, 4)
    # Pooled SILog is the spread of all log errors together, not the mean of per-image values (both 0 here).
    assert s["per_image"]["silog"] == pytest.approx(0.0)
    assert s["pooled"]["silog"] == pytest.approx(100 * math.sqrt(math.log(2) ** 2 / 4 - (math.log(2) / 4) ** 2))

    single = DepthMetricAccumulator(max_depth=10.0)
    single.add(PRED, GT, max_depth=None)  # per-call override
    assert single.summary()["pooled"]["abs_rel"] == pytest.approx(depth_metrics(PRED, GT)["abs_rel"])
    assert single.summary()["settings"]["max_depth"] == 10.0


def test_bad_input() -> None:
    with pytest.raises(InputError, match="differs from ground truth"):
        depth_metrics(np.ones((4, 5)), np.ones((5, 4)))
    with pytest.raises(InputError, match="unknown depth evaluation crop"):
        depth_metrics(PRED, GT, crop="nyu")
    with pytest.raises(InputError, match="min_depth"):
        DepthMetricAccumulator(min_depth=0.0)
    empty = depth_metrics(np.ones((2, 2)), np.zeros((2, 2)))
    assert empty["num_pixels"] == 0 and math.isnan(empty["abs_rel"])
