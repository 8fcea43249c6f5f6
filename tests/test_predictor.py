"""Metric3DPredictor: canonical-camera invariances, padding, batching, loading; Metric3DPrior caching.

Pre/post-processing is checked exactly with a pointwise stand-in network (its output at a pixel depends only on
that pixel's colour, so any padding or resizing mistake is visible); the real vit_small architecture (random
weights) checks the same contract end to end.
"""
import json

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from metricslam.depth.metric3d_prior import Metric3DPrior
from metricslam.depth.models.metric3d import build_metric3d
from metricslam.depth.predictor import (
    PAD_COLOUR,
    RGB_MEAN,
    RGB_STD,
    Metric3DPredictor,
    resolve_variant,
    valid_input_size,
)
from metricslam.errors import InputError, MetricSlamError, WeightsError
from metricslam.geometry.camera import Intrinsics
from metricslam.io.frame import Frame
from shared_paths import DATA

DEMO = DATA / "metric3d_demo"


class Pointwise(nn.Module):
    """Canonical depth = 20 + 5 * normalised red; confidence = sigmoid(normalised green); records its input."""

    def __init__(self, normals: bool = False):
        super().__init__()
        self.head = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[0, 0] = 5.0
            self.head.weight[1, 1] = 1.0
            self.head.bias.copy_(torch.tensor([20.0, 0.0]))
        self.normals = normals
        self.seen = None

    def forward(self, x):
        self.seen = x.clone()
        out = self.head(x)
        result = {"prediction": out[:, :1], "confidence": torch.sigmoid(out[:, 1:])}
        if self.normals:
            result["prediction_normal"] = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        return result


def canonical_of(rgb_value):
    return 20.0 + 5.0 * (rgb_value[0] - RGB_MEAN[0]) / RGB_STD[0]


def standin(variant="convnext_tiny", input_size=(64, 96), normals=False, **kw):
    net = Pointwise(normals)
    return Metric3DPredictor(variant, net.state_dict(), input_size=input_size, model=net, device="cpu", **kw), net


def smooth_image(h, w, seed=0):
    """A low-frequency colour image (interpolation-friendly)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(30, 230, (4, 5, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    model = build_metric3d("vit_small")
    return Metric3DPredictor("vit_small", model.state_dict(), device="cpu", input_size=(56, 112), model=model)


@pytest.mark.parametrize("shape", [(50, 200), (150, 60), (64, 96)])
def test_padding_never_leaks_into_the_output(shape):
    predictor, net = standin()
    colour = (200, 30, 90)
    rgb = np.empty(shape + (3,), dtype=np.uint8)
    rgb[:] = colour
    K = Intrinsics(300.0, 300.0, shape[1] / 2, shape[0] / 2, shape[1], shape[0])
    out = predictor.predict(rgb, K)
    s = min(64 / shape[0], 96 / shape[1])
    expected = canonical_of(colour) * 300.0 * s / 1000.0
    # The pad region's canonical depth (about 20) differs from the image's (about 26.5): a border row or column
    # of padding kept by a wrong unpad would pull the edge values away from the constant.
    assert out.depth.shape == shape
    np.testing.assert_allclose(out.depth, expected, rtol=1e-5)
    # The network input: resized image in the middle, the mean colour (as upstream's uint8 border) around it.
    rh, rw = int(shape[0] * s), int(shape[1] * s)
    top, left = (64 - rh) // 2, (96 - rw) // 2
    pad_value = (PAD_COLOUR[0] - RGB_MEAN[0]) / RGB_STD[0]
    inside = np.zeros((64, 96), dtype=bool)
    inside[top:top + rh, left:left + rw] = True
    red = net.seen[0, 0].numpy()
    np.testing.assert_allclose(red[~inside], pad_value, atol=1e-6)
    np.testing.assert_allclose(red[inside], (colour[0] - RGB_MEAN[0]) / RGB_STD[0], atol=1e-5)


def test_resizing_the_image_with_its_intrinsics_keeps_metric_depth():
    predictor, _ = standin(input_size=(96, 128))
    rgb = smooth_image(120, 160)
    K = Intrinsics(180.0, 180.0, 79.5, 59.5, 160, 120)
    small = predictor.predict(rgb, K).depth
    big_rgb = cv2.resize(rgb, (320, 240), interpolation=cv2.INTER_CUBIC)
    big = predictor.predict(big_rgb, K.resized(320, 240)).depth
    # Pixel (u, v) of the small image covers pixels 2u..2u+1 of the big one: compare after area averaging.
    big_down = cv2.resize(big, (160, 120), interpolation=cv2.INTER_AREA)
    rel = np.abs(big_down - small) / small
    assert np.median(rel) < 0.005 and rel[4:-4, 4:-4].max() < 0.03


def test_canonical_invariances_real_network(vit):
    rgb = smooth_image(168, 336, seed=3)
    K = Intrinsics(250.0, 250.0, 167.5, 83.5, 336, 168)
    K2 = Intrinsics(500.0, 250.0, 167.5, 83.5, 336, 168)
    big_rgb = cv2.resize(rgb, (672, 336), interpolation=cv2.INTER_CUBIC)
    a, b, big = vit.predict_batch([rgb, rgb, big_rgb], [K, K2, K.resized(672, 336)])
    assert np.isfinite(a.depth).all() and (a.depth > 0).all() and a.depth.max() < 150
    # Doubling fx doubles the metric depth (the network input is identical).
    np.testing.assert_allclose(b.depth, 2.0 * a.depth, rtol=1e-5)
    np.testing.assert_allclose(b.confidence, a.confidence, rtol=1e-5)
    # The image at twice the size with its intrinsics scaled reaches the network at the same size: only the two
    # image resamplings differ, so the metric depth at corresponding pixels agrees.
    big_down = cv2.resize(big.depth, (336, 168), interpolation=cv2.INTER_AREA)
    assert np.median(np.abs(big_down - a.depth) / a.depth) < 0.01
    assert a.normals.shape == (168, 336, 3)
    np.testing.assert_allclose(np.linalg.norm(a.normals, axis=-1), 1.0, atol=1e-4)


def test_focal_mode_mean_uses_average_focal():
    predictor, _ = standin(focal_mode="mean")
    rgb = np.full((64, 96, 3), 200, dtype=np.uint8)
    depth = predictor.predict(rgb, Intrinsics(300.0, 500.0, 48, 32, 96, 64)).depth
    np.testing.assert_allclose(depth, canonical_of((200,)) * 400.0 / 1000.0, rtol=1e-5)


def test_batch_matches_single_images_in_order():
    predictor, _ = standin(batch_size=2)
    images = [smooth_image(40, 60, 1), smooth_image(80, 50, 2), smooth_image(40, 60, 3), smooth_image(40, 60, 4)]
    cams = [Intrinsics(100.0 + 10 * i, 100.0, im.shape[1] / 2, im.shape[0] / 2, im.shape[1], im.shape[0])
            for i, im in enumerate(images)]
    batch = predictor.predict_batch(images, cams)
    for im, K, out in zip(images, cams, batch):
        np.testing.assert_allclose(out.depth, predictor.predict(im, K).depth, rtol=1e-6)


def test_normals_output_for_vit_family():
    predictor, _ = standin("vit_small", input_size=(56, 84), normals=True)
    out = predictor.predict(smooth_image(40, 60), Intrinsics(80.0, 80.0, 30, 20, 60, 40))
    assert out.normals.shape == (40, 60, 3) and out.normals.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out.normals, axis=-1), 1.0, atol=1e-5)
    assert standin()[0].predict(smooth_image(40, 60), Intrinsics(80.0, 80.0, 30, 20, 60, 40)).normals is None


def test_input_size_rounded_to_valid_multiples():
    assert valid_input_size("vit_small") == (616, 1064)
    assert valid_input_size("convnext_large") == (544, 1216)
    assert valid_input_size("vit_small", (300, 500)) == (308, 504)  # multiples of 28: the ViT returns full size
    assert valid_input_size("convnext_tiny", (300, 500)) == (288, 512)
    assert valid_input_size("convnext_tiny", (5, 500)) == (32, 512)
    with pytest.raises(MetricSlamError):
        valid_input_size("vit_tiny")


def test_bad_images_and_intrinsics_are_input_errors():
    predictor, _ = standin()
    with pytest.raises(InputError, match="intrinsics are for 60x40"):
        predictor.predict(smooth_image(50, 60), Intrinsics(80.0, 80.0, 30, 20, 60, 40))
    with pytest.raises(InputError, match="RGB uint8"):
        predictor.predict(np.zeros((40, 60), np.uint8), Intrinsics(80.0, 80.0, 30, 20, 60, 40))


def test_official_layout_and_bare_state_dict_files_load(tmp_path):
    net = Pointwise()
    with torch.no_grad():
        net.head.bias[0] = 33.0
    official = tmp_path / "official.pth"
    torch.save({"model_state_dict": {"module." + k: v for k, v in net.state_dict().items()}, "iter": 5}, official)
    bare = tmp_path / "bare.pth"
    torch.save(net.state_dict(), bare)
    for file in (official, bare):
        target = Pointwise()
        p = Metric3DPredictor("convnext_tiny", file, input_size=(64, 96), model=target, device="cpu")
        assert torch.equal(target.head.bias, net.head.bias)
        assert str(file.resolve()) in p.weights_id


def test_mismatched_corrupt_and_missing_weights_give_one_line_errors(tmp_path):
    wrong = tmp_path / "metric_depth_vit_small_800k.pth"
    torch.save({"model_state_dict": {"depth_model.encoder.x": torch.zeros(2), "head.weight": torch.zeros(4, 3, 1, 1)}},
               wrong)
    with pytest.raises(WeightsError) as err:
        Metric3DPredictor("convnext_tiny", wrong, model=Pointwise(), device="cpu")
    msg = str(err.value)
    assert "\n" not in msg and str(wrong) in msg and "convnext_tiny" in msg
    assert "missing" in msg and "unexpected" in msg and "wrong shape" in msg

    corrupt = tmp_path / "corrupt.pth"
    data = (tmp_path / "ok.pth")
    torch.save(Pointwise().state_dict(), data)
    corrupt.write_bytes(data.read_bytes()[:200])
    with pytest.raises(WeightsError, match="corrupt or truncated") as err:
        Metric3DPredictor("convnext_tiny", corrupt, model=Pointwise(), device="cpu")
    assert "\n" not in str(err.value) and str(corrupt) in str(err.value)

    with pytest.raises(WeightsError, match="no weights given"):
        Metric3DPredictor("convnext_tiny", None, model=Pointwise())
    assert Metric3DPredictor("convnext_tiny", None, model=Pointwise(), allow_random=True).weights_id is None
    with pytest.raises(WeightsError, match="not found"):
        Metric3DPredictor("convnext_tiny", tmp_path / "nope.pth", model=Pointwise())


def test_variant_inferred_from_official_names():
    assert resolve_variant("/x/metric_depth_vit_large_800k.pth", None) == "vit_large"
    assert resolve_variant("convnext_large", None) == "convnext_large"
    assert resolve_variant("/x/mine.pth", "vit_small") == "vit_small"
    with pytest.raises(MetricSlamError, match="--variant"):
        resolve_variant("/x/mine.pth", None)


def test_prior_caches_predictions_on_disk(tmp_path):
    predictor, _ = standin()
    prior = Metric3DPrior(predictor, cache_dir=tmp_path / "cache")
    rgb = smooth_image(48, 64, 5)
    K = Intrinsics(70.0, 70.0, 32, 24, 64, 48)
    frame = Frame(0, 0.0, rgb, K)
    depth, conf = prior(frame)
    assert prior.network_calls == 1 and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    assert depth.dtype == np.float32 and conf.min() >= 0 and conf.max() <= 1
    # A new prior object (a rerun) reads the cache instead of running the network.
    rerun = Metric3DPrior(predictor, cache_dir=tmp_path / "cache")
    depth2, conf2 = rerun.predict(frame)
    assert rerun.network_calls == 0
    np.testing.assert_array_equal(depth2, depth)
    np.testing.assert_array_equal(conf2, conf)
    # Another focal length or image is another key.
    rerun.predict(Frame(0, 0.0, rgb, Intrinsics(140.0, 140.0, 32, 24, 64, 48)))
    rerun.predict(Frame(1, 0.0, rgb[::-1].copy(), K))
    assert rerun.network_calls == 2
    # Random weights have no identity: nothing is cached.
    random = Metric3DPrior(Metric3DPredictor("convnext_tiny", None, input_size=(64, 96), model=Pointwise(),
                                             allow_random=True), cache_dir=tmp_path / "r")
    random(frame)
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())


def test_predictor_on_metric3d_demo_annotations(vit):
    if not DEMO.is_dir():
        pytest.skip("shared metric3d_demo data not available")
    from metricslam.io.images import read_depth, read_rgb
    from metricslam.training.data import read_annotation

    # KITTI here (wide images, sparse LiDAR); NYU runs through eval_depth.py in test_depth_cli.py.
    json_path = DEMO / "data" / "kitti_demo" / "test_annotations.json"
    entries = read_annotation(json_path)
    assert len(entries) == len(json.loads(json_path.read_text())["files"]) == 3
    rgbs = [read_rgb(e.rgb) for e in entries]
    cams = [Intrinsics(*e.cam_in, rgb.shape[1], rgb.shape[0]) for e, rgb in zip(entries, rgbs)]
    outs = vit.predict_batch(rgbs, cams)
    for e, out in zip(entries, outs):
        gt = read_depth(e.depth, e.depth_scale)
        assert out.depth.shape == gt.shape == out.confidence.shape == (375, 1242)
        assert np.isfinite(out.depth).all() and out.depth.min() >= 0 and out.depth.max() <= 300
        assert 1.0 < gt.max() < 120.0  # the scale was applied: metres, not raw units


def test_slam_prior_config_without_weights_is_a_clear_error():
    from metricslam.slam.config import PriorConfig
    from metricslam.slam.prior_factory import make_prior

    with pytest.raises(MetricSlamError, match="--weights"):
        make_prior(PriorConfig(kind="metric3d"))
    with pytest.raises(MetricSlamError, match="--variant"):
        make_prior(PriorConfig(kind="metric3d", weights=__file__))
