"""Correlation lookups of the DROID network: against explicit dot products, and the two implementations."""
import math

import pytest
import torch
import torch.nn.functional as F

from metricslam.slam.correspondence.droid import LocalCorr, VolumeCorr, build_corr, corr_channels, pixel_grid

LEVELS, RADIUS = 4, 3


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only add overhead


def random_case(n=3, c=32, h=13, w=19, seed=0):
    """Random per-frame features, edges sharing frames (both directions and a repeat) and their targets:
    smooth motion for edges 0..2 (shifted so that some windows leave the image), random targets spread over and
    beyond the image (-6 .. size + 6) for edges 3 and 4."""
    g = torch.Generator().manual_seed(seed)
    fmaps = torch.randn(n, c, h, w, generator=g)
    ii = torch.tensor([0, 1, 0, 2, 2])
    jj = torch.tensor([1, 0, 2, 1, 1])
    grid = pixel_grid(h, w)
    smooth = grid + torch.sin(grid.flip(-1) / 3) + torch.tensor([[-4.0, 1.5], [2.5, -3.0], [0.3, 0.6]])[:, None, None]
    wild = torch.rand(2, h, w, 2, generator=g) * torch.tensor([w + 12.0, h + 12.0]) - 6.0
    return fmaps, ii, jj, torch.cat([smooth, wild])


# LocalCorr options: at 13x19 the default patch (20) covers whole levels (dense path); tile 2 / patch 9 sends level 0
# through the tiled path (patches where the windows fit, per-query gathers elsewhere).
LOCAL_TILED = {"tile": 2, "patch": 9}


def make_corr(kind, fmaps, ii, jj):
    if kind == "local-tiled":
        return LocalCorr.build(fmaps, ii, jj, **LOCAL_TILED)
    return build_corr(kind, fmaps, ii, jj)


def bilinear_zero_padded(img, x, y):
    """Value of img (H, W) at (x, y) by bilinear interpolation, pixels outside the image count as zero."""
    hgt, wid = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    fx, fy = x - x0, y - y0
    value = 0.0
    for xi, yi, wgt in ((x0, y0, (1 - fx) * (1 - fy)), (x0 + 1, y0, fx * (1 - fy)),
                        (x0, y0 + 1, (1 - fx) * fy), (x0 + 1, y0 + 1, fx * fy)):
        if 0 <= xi < wid and 0 <= yi < hgt:
            value += wgt * float(img[yi, xi])
    return value


def reference_features(f1, f2, coords, y, x):
    """The 196 features of pixel (y, x) of one edge, computed the upstream way, one number at a time.

    All-pairs volume f1 . f2 / 16, pooled 2x2 over the second image per level, sampled at coords / 2^l + (dx, dy),
    channel l * 49 + (dx + 3) * 7 + (dy + 3).
    """
    c, h, w = f1.shape
    volume = torch.einsum("cp,cq->pq", f1.double().reshape(c, -1), f2.double().reshape(c, -1)) / 16.0
    level_map = volume[y * w + x].reshape(1, 1, h, w)
    out = []
    cx, cy = coords[y, x].double().tolist()
    for level in range(LEVELS):
        if level:
            level_map = F.avg_pool2d(level_map, 2, stride=2)
        for dx in range(-RADIUS, RADIUS + 1):
            for dy in range(-RADIUS, RADIUS + 1):
                out.append(bilinear_zero_padded(level_map[0, 0], cx / 2**level + dx, cy / 2**level + dy))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["volume", "local", "local-tiled"])
def test_lookup_equals_explicit_bilinear_dot_products(kind):
    fmaps, ii, jj, coords = random_case()
    coords[3, 0, 0] = torch.tensor([4.0, 3.0])  # an exact integer position
    coords[3, 0, 1] = torch.tensor([-3.5, 15.25])  # window partly left of and below the image
    feats = make_corr(kind, fmaps, ii, jj)(coords)
    assert feats.shape == (len(ii), corr_channels(), 13, 19) and corr_channels() == 196
    g = torch.Generator().manual_seed(1)
    picks = [(3, 0, 0), (3, 0, 1), (0, 0, 0), (1, 12, 18)] + [
        (int(torch.randint(len(ii), (1,), generator=g)), int(torch.randint(13, (1,), generator=g)),
         int(torch.randint(19, (1,), generator=g))) for _ in range(12)]
    zeros_seen = 0
    for e, y, x in picks:
        ref = reference_features(fmaps[ii[e]], fmaps[jj[e]], coords[e], y, x)
        torch.testing.assert_close(feats[e, :, y, x].double(), ref, atol=1e-5, rtol=1e-5)
        zeros_seen += int((ref == 0).sum())
    assert zeros_seen > 0  # the picks did exercise the zero padding


@pytest.mark.parametrize("kind", ["volume", "local", "local-tiled"])
def test_channel_order_is_x_offset_major(kind):
    """A single matching feature 2 px right of the target lights channel (dx + 3) * 7 + (dy + 3) = 38 on level 0."""
    h, w = 16, 16
    fmaps = torch.zeros(2, 8, h, w)
    fmaps[0, 0] = 1.0
    fmaps[1, 0, 5, 9] = 16.0  # frame 1 has the feature at x = 9, y = 5
    coords = torch.zeros(1, h, w, 2)
    coords[0, 5, 5] = torch.tensor([7.0, 5.0])  # pixel (5, 5) of frame 0 looks at (x=7, y=5) of frame 1
    feats = make_corr(kind, fmaps, torch.tensor([0]), torch.tensor([1]))(coords)
    level0 = feats[0, :49, 5, 5]
    assert int(level0.argmax()) == (2 + 3) * 7 + (0 + 3)
    assert float(level0.max()) == pytest.approx(1.0)
    assert float(level0.abs().sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("options", [{}, {"tile": 4, "patch": 16}, {"tile": 3, "patch": 10}, {"tile": 1, "patch": 8}])
def test_implementations_agree(options):
    """48x64 grid: levels 0 and 1 (and 2 for small patches) go through tiles, the rest through dense volumes."""
    fmaps, ii, jj, coords = random_case(c=64, h=48, w=64, seed=3)
    volume = VolumeCorr.build(fmaps, ii, jj)
    local = LocalCorr.build(fmaps, ii, jj, chunk_elements=1 << 20, **options)  # small chunks: many steps
    a, b = volume(coords), local(coords)
    assert a.abs().max() > 0.5  # not trivially zero
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_far_and_nan_targets_read_nothing():
    fmaps, ii, jj, coords = random_case(seed=4)
    coords[1] = 1e7
    coords[2] = float("nan")
    for kind in ("volume", "local", "local-tiled"):
        feats = make_corr(kind, fmaps, ii, jj)(coords)
        assert feats[1:3].abs().max() == 0 and feats[0].abs().max() > 0


def test_local_stores_no_volumes():
    fmaps, ii, jj, _ = random_case(c=128, h=48, w=64)
    volume, local = VolumeCorr.build(fmaps, ii, jj), LocalCorr.build(fmaps, ii, jj)
    per_edge_volume = 4 * (48 * 64) ** 2 * (1 + 1 / 4 + 1 / 16 + 1 / 64)
    assert volume.nbytes() == pytest.approx(len(ii) * per_edge_volume, rel=0.01)
    assert local.nbytes() < 1.4 * fmaps.numel() * 4  # the frames' feature pyramid and the edge ids only


@pytest.mark.parametrize("kind", ["volume", "local", "local-tiled"])
def test_select_and_cat_keep_edges_consistent(kind):
    fmaps, ii, jj, coords = random_case(seed=5)
    full = make_corr(kind, fmaps, ii, jj)
    keep = torch.tensor([True, False, True, True, False])
    torch.testing.assert_close(full.select(keep)(coords[keep]), full(coords)[keep])
    first, rest = make_corr(kind, fmaps, ii[:2], jj[:2]), make_corr(kind, fmaps, ii[2:], jj[2:])
    torch.testing.assert_close(first.cat(rest)(coords), full(coords), atol=1e-6, rtol=0)
    # Sharing the same frames, selections of one block concatenate without copying the pyramid.
    joined = full.select(torch.tensor([0, 1])).cat(full.select(torch.tensor([4])))
    torch.testing.assert_close(joined(coords[[0, 1, 4]]), full(coords)[[0, 1, 4]])


def test_bad_inputs_are_rejected():
    fmaps, ii, jj, coords = random_case()
    with pytest.raises(ValueError, match="coords must have shape"):
        build_corr("local", fmaps, ii, jj)(coords[:, :5])
    with pytest.raises(ValueError, match="too small"):
        build_corr("volume", fmaps[..., :7, :7], ii, jj)
    with pytest.raises(ValueError, match="frame indices"):
        build_corr("local", fmaps, ii, jj + 5)
    with pytest.raises(ValueError, match="unknown correlation"):
        build_corr("cuda", fmaps, ii, jj)


def test_identity_targets_peak_at_zero_offset():
    """Frame correlated with itself at its own pixels: level 0 peaks at the centre channel (dx = dy = 0)."""
    g = torch.Generator().manual_seed(2)
    fmaps = torch.randn(1, 128, 16, 24, generator=g)
    coords = pixel_grid(16, 24)[None]
    feats = LocalCorr.build(fmaps, torch.tensor([0]), torch.tensor([0]))(coords)
    centre = (0 + 3) * 7 + (0 + 3)
    assert (feats[0, :49].argmax(dim=0) == centre).float().mean() > 0.99
