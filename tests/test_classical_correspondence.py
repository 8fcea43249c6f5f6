"""Classical correspondences: DIS flow on the BA grid and its confidences, against a known image motion."""
from __future__ import annotations

import numpy as np
import pytest

from metricslam.errors import MetricSlamError
from metricslam.slam.config import FlowConfig
from metricslam.slam.correspondence.classical import ClassicalCorrespondence, block_mean

H, W, STRIDE = 192, 256, 8


def _texture(seed: int = 0) -> np.ndarray:
    """Smooth random texture: blurred noise on several scales, uint8."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((H + 64, W + 64), np.float32)
    for sigma in (1.5, 4.0, 10.0):
        img += cv2.GaussianBlur(rng.normal(size=img.shape).astype(np.float32), (0, 0), sigma) * sigma
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.astype(np.uint8)


def _shifted_pair(dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    """img0 and img1 = img0 moved by (dx, dy) pixels: a pixel at x in img0 is at x + dx in img1."""
    big = _texture()
    img0 = big[32 : 32 + H, 32 : 32 + W]
    img1 = big[32 - dy : 32 - dy + H, 32 - dx : 32 - dx + W]
    return np.ascontiguousarray(img0), np.ascontiguousarray(img1)


def _grid(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([xs, ys], axis=-1)


def test_block_mean_is_the_exact_mean_of_each_block():
    x = np.random.default_rng(1).normal(size=(16, 24, 2)).astype(np.float32)
    expected = x.reshape(2, 8, 3, 8, 2).mean(axis=(1, 3))
    assert np.allclose(block_mean(x, 8), expected, atol=1e-5)


def test_targets_follow_a_known_shift_and_out_of_view_pixels_lose_confidence():
    dx, dy = 11, -6
    img0, img1 = _shifted_pair(dx, dy)
    corr = ClassicalCorrespondence(FlowConfig(), STRIDE)
    t01, w01, t10, w10 = corr.pair(img0, img1)
    h, w = H // STRIDE, W // STRIDE
    assert t01.shape == (h, w, 2) and w01.shape == (h, w, 2)
    expected = _grid(h, w) + np.array([dx, dy], np.float32) / STRIDE
    # Grid pixels whose block stays inside the other image, away from its border.
    inside = np.zeros((h, w), bool)
    inside[2:-2, 3:-3] = True
    err = np.abs(t01 - expected)[inside]
    assert np.median(err) < 0.02 and np.percentile(err, 95) < 0.1  # grid px: 0.16 / 0.8 image px
    assert w01[inside].mean() > 0.7
    # Blocks of img0 that leave img1 (the right-most 11 px, the top 6 px) have no valid target.
    leaving = np.zeros((h, w), bool)
    leaving[:, -1] = True
    assert w01[leaving].mean() < 0.3
    # The reverse edge is the inverse motion.
    back = _grid(h, w) - np.array([dx, dy], np.float32) / STRIDE
    assert np.median(np.abs(t10 - back)[inside]) < 0.02


def test_photometric_disagreement_lowers_confidence():
    img0, img1 = _shifted_pair(5, 3)
    corr = ClassicalCorrespondence(FlowConfig(), STRIDE)
    _, clean, _, _ = corr.pair(img0, img1)
    # A patch of img1 replaced by another texture: its flow cannot be right there and its colours disagree.
    spoiled = img1.copy()
    spoiled[64:128, 96:160] = _texture(seed=7)[:64, :64]
    _, w01, _, _ = corr.pair(img0, spoiled)
    patch = (slice(64 // STRIDE + 1, 128 // STRIDE - 1), slice(96 // STRIDE + 1, 160 // STRIDE - 1))
    assert w01[patch].mean() < 0.5 * clean[patch].mean()
    rest = np.ones(w01.shape[:2], bool)
    rest[6:18, 10:22] = False
    assert w01[rest].mean() > 0.8 * clean[rest].mean()


@pytest.mark.parametrize("dx", [0, 20])
def test_tracking_reports_the_mean_flow_in_grid_pixels(dx):
    img0, img1 = _shifted_pair(dx, 0)
    corr = ClassicalCorrespondence(FlowConfig(), STRIDE)
    _, weights, mean_flow = corr.track(img0, img1)
    assert mean_flow == pytest.approx(dx / STRIDE, abs=0.15)
    assert weights.shape == (H // STRIDE, W // STRIDE, 2) and weights[2:-2, 3:-3].mean() > 0.7


def test_concurrent_pairs_match_the_same_pairs_one_by_one():
    """Edges run on several threads each get their own DIS solver and come back in order."""
    shifts = [(11, -6), (-4, 3), (7, 9), (0, -12)]
    jobs = [(*_shifted_pair(dx, dy), None, None) for dx, dy in shifts]
    together = ClassicalCorrespondence(FlowConfig(workers=2), STRIDE).pairs(jobs)
    alone = ClassicalCorrespondence(FlowConfig(workers=1), STRIDE)
    h, w = H // STRIDE, W // STRIDE
    for (dx, dy), got, job in zip(shifts, together, jobs):
        for a, b in zip(got, alone.pair(*job)):
            assert np.array_equal(a, b)
        expected = _grid(h, w) + np.array([dx, dy], np.float32) / STRIDE
        assert np.median(np.abs(got[0] - expected)[2:-2, 3:-3]) < 0.02


def test_flow_workers_must_be_positive():
    with pytest.raises(MetricSlamError, match="flow.workers=0"):
        FlowConfig(workers=0)
