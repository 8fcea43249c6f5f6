"""Metric3D v2 ViT networks (DINOv2-reg + RAFTDepthNormalDPT5): checkpoint layout, strict loading, forward
semantics against a literal re-statement of the upstream operation order (random weights, no download)."""
import math

import pytest
import torch
import torch.nn.functional as F

from metricslam.depth.models.dinov2 import DinoVisionTransformer
from metricslam.depth.models.metric3d import build_metric3d
from metricslam.depth.models.vit_raft_dpt import SIZE_MULTIPLE, VIT_CONFIGS, DinoRaftDPT
from metricslam.errors import MetricSlamError
from random_models import random_model_fixtures
from spec_keys import METRIC3D_SPEC_FILES, VIT_TRAINING_ONLY_KEY, assert_matches_spec, read_spec

VARIANTS = ("vit_small", "vit_large", "vit_giant2")
# Independent of the spec files (counted from them once, mask token excluded): tensors, parameters (M).
EXPECTED_COUNTS = {"vit_small": (361, 37.495243), "vit_large": (529, 411.942427), "vit_giant2": (753, 1377.675867)}
MIN_DEPTH, MAX_DEPTH = 0.1, 200.0
H, W = 3 * SIZE_MULTIPLE, 4 * SIZE_MULTIPLE  # outputs come back at the input size


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Layer scales start at 1e-5 (blocks near identity): make them O(1) so the transformer matters, and sharpen
    the bin logits so the depth depends on the input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".gamma"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
        model.depth_model.decoder.depth_regressor[2].weight.mul_(10.0)


model, image, outputs = random_model_fixtures("vit_small", lambda m: randomise(m, 1), 5, (2, 3, H, W))


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_matches_spec(variant):
    with torch.device("meta"):
        sd = build_metric3d(variant).state_dict()
    spec = read_spec(METRIC3D_SPEC_FILES[variant])
    assert VIT_TRAINING_ONLY_KEY in spec  # the spec has it; official checkpoints do not
    del spec[VIT_TRAINING_ONLY_KEY]
    assert_matches_spec(sd, spec, ordered=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_counts_without_spec(variant):
    with torch.device("meta"):
        sd = build_metric3d(variant).state_dict()
    n_tensors, n_params = EXPECTED_COUNTS[variant]
    assert len(sd) == n_tensors
    assert sum(t.numel() for t in sd.values()) / 1e6 == pytest.approx(n_params, abs=1e-6)
    assert not any("mask_token" in k for k in sd)
    assert f"depth_model.encoder.blocks.0.{VIT_CONFIGS[variant].depth - 1}.ls2.gamma" in sd


def test_official_checkpoint_loads_strictly_and_round_trips(model, image, outputs, tmp_path):
    path = tmp_path / "metric_depth_vit_small_800k.pth"
    torch.save({"model_state_dict": model.state_dict()}, path)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        other = build_metric3d("vit_small").eval()
    other = other.to_empty(device="cpu")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    other.load_state_dict(ckpt["model_state_dict"], strict=True)
    loaded = other.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded[key], value), key
    with torch.inference_mode():
        again = other(image)
    for key in ("prediction", "confidence", "prediction_normal"):
        assert torch.equal(again[key], outputs[key])
    bad = dict(ckpt["model_state_dict"])
    bad["depth_model.encoder.mask_token"] = torch.zeros(1, 384)
    with pytest.raises(RuntimeError, match="mask_token"):
        other.load_state_dict(bad, strict=True)


def test_output_shapes_and_ranges(model, outputs):
    assert outputs["prediction"].shape == (2, 1, H, W)
    assert outputs["confidence"].shape == (2, 1, H, W)
    normal = outputs["prediction_normal"]
    assert normal.shape == (2, 4, H, W)
    assert torch.allclose(normal[:, :3].norm(dim=1), torch.ones(2, H, W), atol=1e-5)
    assert (normal[:, 3] >= 0.01).all()
    depth = outputs["prediction"]
    assert torch.isfinite(depth).all() and torch.isfinite(outputs["confidence"]).all()
    assert depth.min() >= MIN_DEPTH and depth.max() <= MAX_DEPTH
    assert depth.std() > 1.0  # sharpened bins: the depth varies with the input, not a constant
    assert not torch.allclose(depth[0], depth[1])  # each batch element sees its own image
    assert len(outputs["predictions_list"]) == 1  # inference upsamples the last iteration only


def test_training_mode_returns_every_iteration(model, image, outputs):
    model.train()
    try:
        with torch.no_grad():
            out = model(image)
    finally:
        model.eval()
    iters = VIT_CONFIGS["vit_small"].iters
    assert len(out["predictions_list"]) == len(out["confidence_list"]) == len(out["normal_out_list"]) == iters + 1
    assert out["predictions_list"][0].shape == (2, 1, H, W)  # bilinear-upsampled initial estimate first
    low_depth, low_conf, low_normal = out["low_resolution_init"]
    assert low_depth.shape == (2, 1, H // 4, W // 4) and low_normal.shape == (2, 4, H // 4, W // 4)
    torch.testing.assert_close(out["prediction"], outputs["prediction"], rtol=0, atol=1e-4)


def test_depth_bins_are_log_spaced_made_on_the_input_device_and_not_saved(model):
    decoder = model.depth_model.decoder
    bins = decoder.depth_bins(torch.device("cpu"))
    assert bins.shape == (256,)
    assert bins[0].item() == pytest.approx(MIN_DEPTH) and bins[-1].item() == pytest.approx(MAX_DEPTH, rel=1e-6)
    ratios = bins[1:] / bins[:-1]
    assert torch.allclose(ratios, ratios.mean().expand_as(ratios), rtol=1e-4)
    assert decoder.depth_bins(torch.device("meta")).device.type == "meta"
    assert not any("anchor" in k or "bins" in k for k in model.state_dict())
    assert len(list(model.buffers())) == 0


def test_unknown_variant_is_a_user_error():
    with pytest.raises(MetricSlamError, match="vit_small"):
        DinoRaftDPT("vit_base")


# --- oracle: the upstream forward restated literally (its op order, naive attention, in-place ReLUs) ---


def _lin(p, k, x, bias=True):
    return F.linear(x, p[k + ".weight"], p[k + ".bias"] if bias else None)


def _conv(p, k, x):
    w = p[k + ".weight"]
    return F.conv2d(x, w, p[k + ".bias"], padding=w.shape[-1] // 2)


def _literal_encoder(p, x, heads):
    e = "depth_model.encoder."
    b, _, h, w = x.shape
    ph, pw = (14 - h % 14) % 14, (14 - w % 14) % 14
    if ph + pw:
        x = F.interpolate(x, (h + ph, w + pw), mode="bilinear")
    h, w = x.shape[2:]
    t = F.conv2d(x, p[e + "patch_embed.proj.weight"], p[e + "patch_embed.proj.bias"], stride=14)
    t = torch.cat((p[e + "cls_token"].expand(b, -1, -1), t.flatten(2).transpose(1, 2)), 1)
    pos, dim = p[e + "pos_embed"], t.shape[-1]
    if not (t.shape[1] == pos.shape[1] and h == w):
        s = math.sqrt(pos.shape[1] - 1)
        grid = pos[:, 1:].reshape(1, int(s), int(s), dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((h // 14 + 0.1) / s, (w // 14 + 0.1) / s), mode="bicubic")
        pos = torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)), 1)
    t = t + pos
    t = torch.cat((t[:, :1], p[e + "register_tokens"].expand(b, -1, -1), t[:, 1:]), 1)
    n = t.shape[1]
    i = 0
    while f"{e}blocks.0.{i}.norm1.weight" in p:
        k = f"{e}blocks.0.{i}."
        y = F.layer_norm(t, (dim,), p[k + "norm1.weight"], p[k + "norm1.bias"], 1e-6)
        qkv = _lin(p, k + "attn.qkv", y).reshape(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        attn = ((qkv[0] * (dim // heads) ** -0.5) @ qkv[1].transpose(-2, -1)).softmax(-1)
        t = t + _lin(p, k + "attn.proj", (attn @ qkv[2]).transpose(1, 2).reshape(b, n, dim)) * p[k + "ls1.gamma"]
        y = F.layer_norm(t, (dim,), p[k + "norm2.weight"], p[k + "norm2.bias"], 1e-6)
        if k + "mlp.w12.weight" in p:  # SwiGLU (giant): silu(first half) * second half
            x1, x2 = _lin(p, k + "mlp.w12", y).chunk(2, dim=-1)
            y = _lin(p, k + "mlp.w3", F.silu(x1) * x2)
        else:
            y = _lin(p, k + "mlp.fc2", F.gelu(_lin(p, k + "mlp.fc1", y)))
        t = t + y * p[k + "ls2.gamma"]
        i += 1
    t = F.layer_norm(t, (dim,), p[e + "norm.weight"], p[e + "norm.bias"], 1e-6)
    return t, h // 14, w // 14


def _literal_decoder(p, t, gh, gw, iters, lo=MIN_DEPTH, hi=MAX_DEPTH):
    d = "depth_model.decoder."
    b, _, c = t.shape
    patches, learned = t[:, 5:].reshape(b, gh, gw, c), t[:, :5].reshape(b, 1, 1, 5 * c)

    def read(name):
        k = f"{d}token2feature.{name}."
        x = F.gelu(_lin(p, k + "readoper.project_patch", patches) + _lin(p, k + "readoper.project_learn", learned, False))
        x = x.permute(0, 3, 1, 2).contiguous()
        if name == "read_1":
            x = F.conv_transpose2d(x, p[k + "sample.weight"], p[k + "sample.bias"], stride=2)
        if name == "read_0":
            x = _conv(p, k + "sample.0", F.interpolate(x, scale_factor=3.5, mode="nearest"))
        return x

    x3, x2, x1, x0 = (read(n) for n in ("read_3", "read_2", "read_1", "read_0"))

    def convblock(k, x):
        out = F.relu(x, inplace=True)  # mutates the caller's tensor, as upstream does
        return x + _conv(p, k + "conv2", F.relu(_conv(p, k + "conv1", out)))

    def fuse(k, a, skip=None, scale=None):
        if skip is not None:
            a = a + convblock(k + "way_branch.", skip)
        out = convblock(k + "way_trunk.", a)
        if scale:
            out = F.interpolate(out, scale_factor=scale, mode="bilinear", align_corners=True)
        return _conv(p, k + "out_conv", out)

    m = d + "decoder_mono."
    ref = fuse(m + "upconv_1.", fuse(m + "upconv_2.", fuse(m + "upconv_3.", x3), x2, 2), x1, 7 / 4)
    feat = ref[:, :-2]

    def clamp(x):
        return hi - F.relu(hi - (F.relu(x - lo) + lo))

    def norm_normalize(x):
        nx, ny, nz, kappa = torch.split(x, 1, dim=1)
        n = torch.sqrt(nx**2.0 + ny**2.0 + nz**2.0) + 1e-10
        return torch.cat([nx / n, ny / n, nz / n, F.elu(kappa) + 1.0 + 0.01], 1)

    prob = _conv(p, d + "depth_regressor.2", F.relu(_conv(p, d + "depth_regressor.0", feat))).softmax(1)
    bins = torch.exp(torch.linspace(math.log(lo), math.log(hi), 256))
    depth = (clamp(torch.sum(prob * bins.view(1, -1, 1, 1), 1).unsqueeze(1)) - hi) / 100.0
    k = d + "normal_predictor."
    normal = F.relu(_conv(p, k + "4", F.relu(_conv(p, k + "2", F.relu(_conv(p, k + "0", feat))))))
    normal = norm_normalize(torch.cat([_conv(p, k + "6", normal), ref[:, -1:]], 1))
    coords1 = torch.cat((depth, ref[:, -2:-1], normal), 1)

    def resblock(k, x):
        def ln(name, z):
            z = F.layer_norm(z.permute(0, 2, 3, 1), z.shape[1:2], p[k + name + ".weight"], p[k + name + ".bias"])
            return z.permute(0, 3, 1, 2)

        y = F.relu(ln("norm2", _conv(p, k + "conv2", F.relu(ln("norm1", _conv(p, k + "conv1", x))))))
        return F.relu(ln("norm3", _conv(p, k + "downsample.0", x)) + y)

    ce = d + "context_feature_encoder."
    cnet = [
        [_conv(p, f"{ce}{lvl}.{j}.1", resblock(f"{ce}{lvl}.{j}.0.", x)) for j in range(2)]
        for lvl, x in zip(("outputs04", "outputs08", "outputs16"), (x0, x1, x2))
    ]
    net = [torch.tanh(c[0]) for c in cnet]
    inp = [_conv(p, f"{d}context_zqr_convs.{i}", F.relu(c[1])).chunk(3, 1) for i, c in enumerate(cnet)]

    def gru(name, h, cz, cr, cq, *xs):
        k = f"{d}update_block.{name}."
        x = torch.cat(xs, 1)
        hx = torch.cat([h, x], 1)
        z = torch.sigmoid(_conv(p, k + "convz", hx) + cz)
        r = torch.sigmoid(_conv(p, k + "convr", hx) + cr)
        q = torch.tanh(_conv(p, k + "convq", torch.cat([r * h, x], 1)) + cq)
        return (1 - z) * h + z * q

    def pool(x):
        return F.avg_pool2d(x, 3, stride=2, padding=1)

    def to(x, dst):
        return F.interpolate(x, dst.shape[2:], mode="bilinear", align_corners=True)

    u = d + "update_block."
    for _ in range(iters):
        flow = coords1
        for level in (32, 16, 8):  # slow-fast: the last pass runs all three GRUs
            net[2] = gru("gru32", net[2], *inp[2], pool(net[1]))
            if level <= 16:
                net[1] = gru("gru16", net[1], *inp[1], to(pool(net[0]), net[1]), to(net[2], net[1]))
        net[0] = gru("gru08", net[0], *inp[0], flow, to(net[1], net[0]))
        h0 = net[0]
        delta_d = _conv(p, u + "flow_head.conv2d", F.relu(_conv(p, u + "flow_head.conv1d", h0)))
        delta_n = _conv(p, u + "flow_head.conv2n", F.relu(_conv(p, u + "flow_head.conv1n", h0)))
        mask = 0.25 * _conv(p, u + "mask.2", F.relu(_conv(p, u + "mask.0", h0)))
        coords1 = coords1 + torch.cat((delta_d, delta_n), 1)
    n, ch, hh, ww = coords1.shape
    weights = torch.softmax(mask.view(n, 1, 9, 4, 4, hh, ww), dim=2)
    up = torch.sum(weights * F.unfold(coords1, [3, 3], padding=1).view(n, ch, 9, 1, 1, hh, ww), dim=2)
    up = up.permute(0, 1, 4, 2, 5, 3).reshape(n, ch, 4 * hh, 4 * ww)
    return clamp(up[:, :1] * 100.0 + hi), up[:, 1:2], norm_normalize(up[:, 2:])


@pytest.mark.parametrize("size", [(H, W), (70, 94)])  # 70x94: stretched to 70x98, 5x7 tokens
def test_forward_matches_upstream_operation_order(model, image, outputs, size):
    params = dict(model.state_dict())
    with torch.inference_mode():
        if size == (H, W):
            x, out = image[:1], {k: outputs[k][:1] for k in ("prediction", "confidence", "prediction_normal")}
        else:
            x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(7))
            out = model(x)
        tokens, gh, gw = _literal_encoder(params, x, heads=6)
        depth, conf, normal = _literal_decoder(params, tokens, gh, gw, VIT_CONFIGS["vit_small"].iters)
    expected_hw = (4 * math.floor(3.5 * gh), 4 * math.floor(3.5 * gw))
    assert out["prediction"].shape[2:] == expected_hw
    assert depth.std() > 1.0
    torch.testing.assert_close(out["prediction"], depth, rtol=0, atol=2e-3)
    torch.testing.assert_close(out["confidence"], conf, rtol=0, atol=2e-5)
    torch.testing.assert_close(out["prediction_normal"], normal, rtol=0, atol=2e-5)


def test_swiglu_encoder_matches_literal_form():
    """The giant model's SwiGLU blocks, on a small ViT of the same design (the full one is 1.1B parameters)."""
    torch.manual_seed(3)
    encoder = DinoVisionTransformer(embed_dim=64, depth=2, num_heads=4, ffn="swiglu").eval()
    assert encoder.blocks[0][0].mlp.w12.weight.shape == (2 * 176, 64)  # (int(256 * 2/3) + 7) // 8 * 8 = 176
    params = {"depth_model.encoder." + k: v for k, v in encoder.state_dict().items()}
    with torch.no_grad():
        for name, value in params.items():
            if name.endswith(".gamma"):
                value.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 56, 84, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        tokens, grid = encoder(x)
        expected, gh, gw = _literal_encoder(params, x, heads=4)
    assert grid == (gh, gw) == (4, 6)
    torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)
