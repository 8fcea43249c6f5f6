"""Metric3D ConvNeXt + Hourglass networks: checkpoint layout, strict loading, forward semantics (random weights)."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from metricslam.depth.models.convnext import LayerNorm2d
from metricslam.depth.models.hourglass import conv_bn, depth_bins
from metricslam.depth.models.metric3d import build_metric3d
from metricslam.errors import InputError
from random_models import random_model_fixtures
from spec_keys import METRIC3D_SPEC_FILES, assert_matches_spec, read_spec

# Independent of the spec files: tensor counts, and parameter counts of the published ConvNeXt-T / -L
# (28.59M / 197.77M) minus their classification head and final norm, which Metric3D drops.
EXPECTED_COUNTS = {"convnext_tiny": (280, 27.82), "convnext_large": (442, 196.23)}
H, W = 64, 128


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Move the weights away from the initialisation, which makes every ConvNeXt block near-identity (layer scale
    1e-6), every BatchNorm the identity and every depth bin about equally likely."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked") or t.ndim != 1:
                continue  # conv / linear weights keep their random initialisation
            if name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:  # layer scales, norm scales, running variances
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.5)
        model.depth_model.decoder.depth_regressor_2[3].weight.mul_(20.0)  # peaked, input-dependent bin choice


model, image, outputs = random_model_fixtures("convnext_tiny", lambda m: randomise(m, 3), 11, (2, 3, H, W))


@pytest.mark.parametrize("variant", ["convnext_tiny", "convnext_large"])
def test_state_dict_matches_spec(variant):
    with torch.device("meta"):
        sd = build_metric3d(variant).state_dict()
    count, encoder_millions = EXPECTED_COUNTS[variant]
    assert len(sd) == count
    assert round(sum(v.numel() for k, v in sd.items() if ".encoder." in k) / 1e6, 2) == encoder_millions
    assert sd["depth_model.decoder.depth_regressor_2.3.weight"].shape == (512, 512, 1, 1)  # 512 bins
    assert_matches_spec(sd, read_spec(METRIC3D_SPEC_FILES[variant]))


def test_official_checkpoint_layout_loads_strictly_and_round_trips(model, image, outputs, tmp_path):
    path = tmp_path / "convtiny_hourglass_v1.pth"
    torch.save({"model_state_dict": model.state_dict(), "optimizer": {}}, path)
    loaded = build_metric3d("convnext_tiny").eval()
    loaded.load_state_dict(torch.load(path, map_location="cpu")["model_state_dict"], strict=True)
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    with torch.no_grad():
        assert torch.equal(loaded(image)["prediction"], outputs["prediction"])
    del ours["depth_model.decoder.conv_up_2.7.bias"]
    with pytest.raises(RuntimeError, match="conv_up_2.7.bias"):
        loaded.load_state_dict(ours, strict=True)


def test_forward_outputs(outputs):
    out = outputs
    assert out["prediction"].shape == out["confidence"].shape == (2, 1, H, W)
    assert out["prediction_lowres"].shape == out["confidence_lowres"].shape == (2, 1, H // 4, W // 4)
    for t in out.values():
        assert t.dtype == torch.float32 and t.device.type == "cpu" and torch.isfinite(t).all()
    low = out["prediction_lowres"]
    # A softmax expectation over bins in [0.3, 150] m stays inside them, and these weights spread it widely.
    assert low.min() >= 0.3 and low.max() <= 150.0 and low.max() - low.min() > 1.0
    # Upstream does not clamp the refined prediction: it is the upsampled expectation plus a small residual.
    pred = out["prediction"]
    assert pred.min() >= 0.3 and pred.max() <= 150.0
    residual = pred - F.interpolate(low, scale_factor=4, mode="nearest")
    assert 0 < residual.abs().max() < 0.1


def test_changing_the_input_changes_the_output_and_forward_is_deterministic(model, image, outputs):
    with torch.no_grad():
        again = model(image)
        other = model(torch.stack((image[1], image[0].flip(-1))))
    for key in outputs:
        assert torch.equal(again[key], outputs[key])
    # Batch items are independent (eval-mode BatchNorm): image 1 gives the same result in another batch.
    assert torch.allclose(other["prediction"][0], outputs["prediction"][1], atol=1e-4)
    assert (other["prediction"][1] - outputs["prediction"][0]).abs().mean() > 0.1
    assert not torch.allclose(other["confidence"][1], outputs["confidence"][0])


def test_other_multiples_of_32_and_bad_sizes():
    torch.manual_seed(1)
    with torch.device("meta"):
        m = build_metric3d("convnext_large").eval()
        out = m(torch.empty(1, 3, 544, 1216))  # the official input size, shapes only
        assert out["prediction"].shape == (1, 1, 544, 1216)
        assert out["prediction_lowres"].shape == (1, 1, 136, 304)
        assert m(torch.empty(3, 3, 96, 160))["confidence"].shape == (3, 1, 96, 160)
        for shape in [(1, 3, 60, 128), (1, 3, 64, 100), (3, 64, 128), (1, 1, 64, 128)]:
            with pytest.raises(InputError, match="multiples of 32"):
                m(torch.empty(shape))


def test_encoder_pyramid_and_channels_first_norm(model, image):
    with torch.no_grad():
        feats = model.depth_model.encoder(image)
    strides = (4, 8, 16, 32)
    assert [tuple(f.shape) for f in feats] == [(2, c, H // s, W // s) for c, s in zip((96, 192, 384, 768), strides)]
    norm = LayerNorm2d(5, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 6.0))
        norm.bias.copy_(torch.arange(5.0) / 10)
    x = torch.randn(2, 5, 3, 4)
    mean, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-6) * norm.weight[:, None, None] + norm.bias[:, None, None]
    assert torch.allclose(norm(x), expected, atol=1e-5)


def identity_batchnorm(bn: torch.nn.BatchNorm2d) -> None:
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0)
    bn.weight.fill_(1.0)
    bn.bias.zero_()


def set_decoder_head(decoder, confidence: float) -> None:
    """Bins 100 inside and 200 on the border ring of the 1/4 grid, a constant confidence, and a residual branch
    that outputs x + 100 y of the pixel grid."""
    with torch.no_grad():
        head = decoder.conv_out_2.prob  # -> 256 depth-feature channels + confidence: constant 1, 0..., confidence
        head.weight.zero_()
        head.bias.zero_()
        head.bias[0] = 1.0
        head.bias[-1] = confidence
        regressor = decoder.depth_regressor_2
        for i in (0, 3):
            regressor[i].weight.zero_()
            regressor[i].bias.zero_()
        # A 3x3 sum of ones with zero padding: 9 inside, 6 or 4 on the border; logits are one-hot after softmax.
        regressor[0].weight[0, 0] = 1.0
        identity_batchnorm(regressor[1])
        regressor[3].weight[100, 0] = 100.0
        regressor[3].bias[200] = 750.0
        up = decoder.conv_up_2
        for i in (0, 3, 5, 7):
            up[i].weight.zero_()
            up[i].bias.zero_()
        up[0].weight[0, 1, 1, 1] = 1.0  # input channels: [depth, x, y, features...]
        up[0].weight[1, 2, 1, 1] = 1.0
        identity_batchnorm(up[1])
        for i in (3, 5):
            up[i].weight[:, :, 1, 1] = torch.eye(16)
        up[7].weight[0, :2, 0, 0] = torch.tensor([1.0, 100.0])


def test_bins_pixel_grid_and_upsampling_follow_upstream(model, image):
    m = copy.deepcopy(model)
    set_decoder_head(m.depth_model.decoder, confidence=-0.7)
    with torch.no_grad():
        out = m(image[:1])
    bins = [math.exp(math.log(0.3) + k / 511 * (math.log(150.0) - math.log(0.3))) for k in (100, 200)]
    low = torch.full((H // 4, W // 4), bins[1])
    low[1:-1, 1:-1] = bins[0]
    assert torch.allclose(out["prediction_lowres"][0, 0], low, rtol=1e-6)
    # Nearest-neighbour x4 upsampling of the depth, plus 0.1 x the residual, which sees the 1/4-resolution pixel
    # grid (x then y, in its own pixels), goes through BatchNorm (eps 1e-5) and is upsampled by nearest neighbour.
    v, u = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    v, u = v.div(4, rounding_mode="floor"), u.div(4, rounding_mode="floor")
    expected = low[v, u] + 0.1 * (u + 100 * v).float() / math.sqrt(1 + 1e-5)
    assert torch.allclose(out["prediction"][0, 0], expected, rtol=1e-6, atol=1e-4)
    assert torch.equal(out["confidence"], torch.full((1, 1, H, W), -0.7))


def test_depth_bins():
    bins = depth_bins()
    assert bins.shape == (512,) and bins.dtype == torch.float32
    assert bins[0].item() == pytest.approx(0.3) and bins[-1].item() == pytest.approx(150.0)
    ratios = bins[1:] / bins[:-1]
    assert torch.allclose(ratios, torch.full_like(ratios, (150 / 0.3) ** (1 / 511)), rtol=1e-5)
    assert depth_bins(device="meta").device.type == "meta"


@pytest.mark.parametrize(
    "conv",
    [
        torch.nn.Conv2d(6, 5, 3, stride=2, padding=1, bias=False),
        torch.nn.Conv2d(6, 5, 1),
        torch.nn.ConvTranspose2d(6, 5, 3, stride=2, padding=1, output_padding=1, bias=False),
    ],
)
def test_batchnorm_folding_matches_conv_then_batchnorm(conv):
    g = torch.Generator().manual_seed(5)
    bn = torch.nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(5, generator=g))
        bn.running_var.copy_(torch.rand(5, generator=g) + 0.1)
        bn.weight.copy_(torch.randn(5, generator=g))
        bn.bias.copy_(torch.randn(5, generator=g))
    x = torch.randn(2, 6, 8, 12, generator=g)
    conv.eval(), bn.eval()
    with torch.no_grad():
        assert torch.allclose(conv_bn(conv, bn, x), bn(conv(x)), atol=1e-5)
    # Training keeps BatchNorm's batch statistics and running-average updates.
    conv.train(), bn.train()
    mean_before = bn.running_mean.clone()
    y = conv_bn(conv, bn, x)
    assert torch.allclose(y.mean((0, 2, 3)), bn.bias, atol=1e-5)
    assert not torch.equal(bn.running_mean, mean_before)
