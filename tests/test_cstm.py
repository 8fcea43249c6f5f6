import numpy as np
import pytest
import torch

from metricslam.depth.cstm import (
    CANONICAL_FOCAL,
    MAX_DEPTH,
    focal_length,
    from_canonical,
    to_canonical_image,
    to_canonical_label,
)
from metricslam.geometry.camera import Intrinsics


def test_label_variant_scales_by_canonical_over_real_focal():
    depth = np.array([[2.0, 0.0], [10.0, 50.0]], dtype=np.float32)
    out = to_canonical_label(depth, 500.0)
    np.testing.assert_allclose(out, depth * 2.0)
    assert out.dtype == np.float32
    assert out[0, 1] == 0  # invalid stays invalid


def test_label_variant_per_sample_focal_numpy_and_torch():
    depth = np.ones((2, 1, 3, 4), dtype=np.float32) * 4.0
    focals = np.array([250.0, 2000.0])
    out_np = to_canonical_label(depth, focals)
    np.testing.assert_allclose(out_np[:, 0, 0, 0], [16.0, 2.0])
    out_t = to_canonical_label(torch.from_numpy(depth), torch.tensor(focals))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), out_np)


def test_decanonical_inverts_label_variant_and_uses_resize_ratio():
    depth = np.random.default_rng(0).uniform(0.5, 80.0, (5, 7)).astype(np.float32)
    fx = 721.5
    canonical = to_canonical_label(depth, fx)
    np.testing.assert_allclose(from_canonical(canonical, fx), depth, rtol=1e-6)
    # The network saw the image resized by s: its focal length was fx * s, so the canonical depth
    # it predicts for the same scene is f_c / (fx s) times the metric depth.
    s = 0.37
    seen = to_canonical_label(depth, fx * s)
    np.testing.assert_allclose(from_canonical(seen, fx, resize_ratio=s), depth, rtol=1e-6)


def test_decanonical_clamps_and_matches_between_numpy_and_torch():
    pred = np.array([[-3.0, 100.0, 1e6]], dtype=np.float32)
    out = from_canonical(pred, 2000.0)
    np.testing.assert_allclose(out, [[0.0, 200.0, MAX_DEPTH]])
    out_t = from_canonical(torch.from_numpy(pred)[None], torch.tensor([2000.0]))
    np.testing.assert_allclose(out_t[0].numpy(), out)


def test_focal_modes():
    K = Intrinsics(500.0, 520.0, 320, 240, 640, 480)
    assert focal_length(K) == 500.0
    assert focal_length(K, "mean") == 510.0
    with pytest.raises(ValueError):
        focal_length(K, "max")


@pytest.mark.parametrize("as_torch", [False, True])
def test_image_variant_resizes_to_canonical_focal_without_scaling_labels(as_torch):
    rng = np.random.default_rng(1)
    K = Intrinsics(400.0, 400.0, 159.5, 119.5, 320, 240)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    depth = rng.uniform(1.0, 9.0, (240, 320)).astype(np.float32)
    depth[::7] = 0.0  # invalid rows must not blend into neighbours
    if as_torch:
        img_in, depth_in = torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(depth)
    else:
        img_in, depth_in = image, depth
    img, d, K2 = to_canonical_image(img_in, K, depth_in)
    img, d = (img.permute(1, 2, 0).numpy(), d.numpy()) if as_torch else (img, d)
    assert (K2.width, K2.height) == (800, 600)
    assert img.shape == (600, 800, 3) and d.shape == (600, 800) and img.dtype == np.uint8
    assert K2.fx == pytest.approx(CANONICAL_FOCAL) and K2.fy == pytest.approx(CANONICAL_FOCAL)
    # Labels are resampled, never rescaled: every output depth is one of the input depths.
    assert np.isin(d, depth).all()
    assert d.max() <= depth.max() and (d == 0).mean() == pytest.approx((depth == 0).mean(), abs=0.01)
    # The principal point follows the pixel-centre convention: the image centre stays the centre.
    assert K2.cx == pytest.approx(399.5) and K2.cy == pytest.approx(299.5)
