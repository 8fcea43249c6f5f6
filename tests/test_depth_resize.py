"""Depth maps resized for processing stay registered with the colour image and invent no depth."""
from __future__ import annotations

import numpy as np
import pytest

from metricslam.io.images import resize_depth


@pytest.mark.parametrize("src_w, dst_w", [(540, 256), (640, 512), (1241, 805)])
def test_each_pixel_takes_the_depth_at_its_own_centre(src_w, dst_w):
    # Depth equal to the source column: the value read back says where each output pixel sampled.
    src_h, dst_h = 12, 6
    depth = np.tile(np.arange(src_w, dtype=np.float32), (src_h, 1))
    out = resize_depth(depth, (dst_w, dst_h))
    assert out.shape == (dst_h, dst_w)
    centre = (np.arange(dst_w) + 0.5) * src_w / dst_w - 0.5  # source column under each output pixel's centre
    assert np.abs(out[0] - centre).max() <= 0.5 + 1e-6


def test_holes_stay_holes_and_no_depth_is_invented():
    rng = np.random.default_rng(0)
    depth = rng.choice(np.array([0.0, 1.0, 4.0], np.float32), size=(360, 540))
    out = resize_depth(depth, (256, 192))
    assert set(np.unique(out)) <= {0.0, 1.0, 4.0}
    assert abs((out == 0).mean() - (depth == 0).mean()) < 0.02
