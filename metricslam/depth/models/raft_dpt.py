"""RAFTDepthNormalDPT5: Metric3D v2's depth-and-normal decoder for ViT tokens.

A DPT-style readout turns the final ViT tokens into 1/14, 1/7 and 1/4 feature maps; a fusion decoder
gives an initial depth (softmax expectation over log-spaced bins), depth confidence and normal at 1/4
resolution; a three-level ConvGRU (RAFT-Stereo style, slow-fast schedule) refines the six channels
[depth, confidence, normal xyz, normal kappa] and convex upsampling brings them to full resolution.
Parameter names follow the released checkpoints.

Where the code departs from the upstream order of operations it is an exact algebraic rewrite
(e.g. 1x1 convolutions moved before interpolations they commute with); results agree to float32 rounding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

REGRESS_SCALE = 100.0  # the refined depth channel is stored as (depth - max_depth) / REGRESS_SCALE
MIN_KAPPA = 0.01
UPSAMPLE = 4  # convex upsampling factor of the GRU field (1/4 -> full resolution)


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


def interp_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, ref.shape[2:], mode="bilinear", align_corners=True)


def pool2x(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=2, padding=1)


def normalize_normal(x: torch.Tensor) -> torch.Tensor:
    """(B,4,H,W) raw [nx, ny, nz, kappa] -> unit normal and a positive concentration kappa."""
    xyz, kappa = x[:, :3], x[:, 3:]
    norm = torch.sqrt((xyz**2).sum(dim=1, keepdim=True)) + 1e-10
    return torch.cat((xyz / norm, F.elu(kappa) + 1.0 + MIN_KAPPA), dim=1)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B,C,H,W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Readout(nn.Module):
    """DPT 'project' readout: patch tokens plus a projection of class and register tokens, GELU."""

    def __init__(self, dim: int, num_register_tokens: int):
        super().__init__()
        self.project_patch = nn.Linear(dim, dim)
        self.project_learn = nn.Linear((1 + num_register_tokens) * dim, dim, bias=False)

    def forward(self, patches: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
        """patches (B,h,w,D), learned (B,1,1,(1+R)D) -> (B,D,h,w) (channels-last strides)."""
        return F.gelu(self.project_patch(patches) + self.project_learn(learned)).permute(0, 3, 1, 2)


class Token2Feature(nn.Module):
    """Readout then resampling by ``scale``: 1 (none), 2 (transposed conv) or 3.5 (1x1 conv + nearest)."""

    def __init__(self, dim: int, out_channels: int, scale: float, num_register_tokens: int):
        super().__init__()
        self.scale = scale
        self.readoper = Readout(dim, num_register_tokens)
        if scale == 2:
            self.sample: nn.Module = nn.ConvTranspose2d(dim, out_channels, kernel_size=2, stride=2)
        elif scale == 3.5:
            self.sample = nn.Sequential(nn.Conv2d(dim, out_channels, 1))
        elif scale != 1:
            raise ValueError(f"unsupported readout scale {scale}")

    def forward(self, patches: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
        x = self.readoper(patches, learned)
        if self.scale == 1:
            return x
        x = self.sample(x)
        if self.scale == 3.5:
            # Upstream upsamples (nearest) before the 1x1 conv; nearest copies pixels, so the two commute
            # and the conv runs on 12x fewer pixels here.
            x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return x


class EncoderFeature(nn.Module):
    def __init__(self, dim: int, feature_channels: list[int], num_register_tokens: int):
        super().__init__()
        r = num_register_tokens
        self.read_3 = Token2Feature(dim, feature_channels[3], 1, r)
        self.read_2 = Token2Feature(dim, feature_channels[2], 1, r)
        self.read_1 = Token2Feature(dim, feature_channels[1], 2, r)
        self.read_0 = Token2Feature(dim, feature_channels[0], 3.5, r)

    def forward(self, patches: torch.Tensor, learned: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """-> maps at 1/14, 1/14, 1/7 and 1/4 of the input (all read from the same final tokens)."""
        return tuple(read(patches, learned) for read in (self.read_3, self.read_2, self.read_1, self.read_0))


class ConvBlock(nn.Module):
    """Pre-activation residual unit. Upstream's in-place ReLU rectifies the skip path too, so the
    block computes relu(x) + conv2(relu(conv1(relu(x))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return x + self.conv2(F.relu(self.conv1(x)))


class FuseBlock(nn.Module):
    def __init__(self, cin: int, cout: int, fuse: bool = True, scale: float | None = 2.0):
        super().__init__()
        self.scale = scale
        self.way_trunk = ConvBlock(cin)
        if fuse:
            self.way_branch = ConvBlock(cin)
        self.out_conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.way_branch(skip)
        # Upstream interpolates, then applies the 1x1 conv; bilinear weights sum to one, so the order
        # can be swapped, and the cheaper side (fewer pixels, fewer channels) goes first.
        x = self.out_conv(self.way_trunk(x))
        if self.scale is not None:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=True)
        return x


class DecoderFeature(nn.Module):
    def __init__(self, decoder_channels: list[int]):
        super().__init__()
        c = decoder_channels
        self.upconv_3 = FuseBlock(c[4], c[3], fuse=False, scale=None)
        self.upconv_2 = FuseBlock(c[3], c[2], scale=2.0)
        self.upconv_1 = FuseBlock(c[2], c[1] + 2, scale=7 / 4)

    def forward(self, f14a: torch.Tensor, f14b: torch.Tensor, f7: torch.Tensor) -> torch.Tensor:
        """-> 1/4-resolution map: c[1] shared features, depth confidence, normal confidence."""
        return self.upconv_1(self.upconv_2(self.upconv_3(f14a), f14b), f7)


class ResidualBlock(nn.Module):
    """RAFT residual block with channel LayerNorm (stride 1)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = conv3x3(cin, cout)
        self.conv2 = conv3x3(cout, cout)
        self.norm1 = LayerNorm2d(cout)
        self.norm2 = LayerNorm2d(cout)
        if cin != cout:
            self.norm3 = LayerNorm2d(cout)
            self.downsample: nn.Module | None = nn.Sequential(nn.Conv2d(cin, cout, 1), self.norm3)
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class ContextFeatureEncoder(nn.Module):
    """Per level (1/4, 1/7, 1/14): one head for the GRU's initial hidden state, one for its context."""

    def __init__(self, in_dims: list[int], hidden_dim: int):
        super().__init__()

        def heads(cin: int) -> nn.ModuleList:
            return nn.ModuleList(
                nn.Sequential(ResidualBlock(cin, hidden_dim), conv3x3(hidden_dim, hidden_dim)) for _ in range(2)
            )

        self.outputs04 = heads(in_dims[0])
        self.outputs08 = heads(in_dims[1])
        self.outputs16 = heads(in_dims[2])

    def forward(self, *maps: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        levels = (self.outputs04, self.outputs08, self.outputs16)
        return [(hid(x), ctx(x)) for (hid, ctx), x in zip(levels, maps)]


class ConvGRU(nn.Module):
    def __init__(self, hidden_dim: int, input_dim: int):
        super().__init__()
        self.convz = conv3x3(hidden_dim + input_dim, hidden_dim)
        self.convr = conv3x3(hidden_dim + input_dim, hidden_dim)
        self.convq = conv3x3(hidden_dim + input_dim, hidden_dim)

    def forward(self, h: torch.Tensor, context: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """``context``: the precomputed (B,3C,H,W) context terms for z, r, q in that channel order."""
        c = h.shape[1]
        hx = torch.cat((h, *inputs), dim=1)
        # z and r read the same input: one convolution with stacked weights.
        zr = F.conv2d(
            hx,
            torch.cat((self.convz.weight, self.convr.weight)),
            torch.cat((self.convz.bias, self.convr.bias)),  # type: ignore[arg-type]  # built with biases
            padding=1,
        )
        z, r = torch.sigmoid(zr + context[:, : 2 * c]).split(c, dim=1)
        q = torch.tanh(self.convq(torch.cat((r * h, *inputs), dim=1)) + context[:, 2 * c :])
        return (1 - z) * h + z * q


class FlowHead(nn.Module):
    """Residual update of the six refined channels: 2 (depth, confidence) + 4 (normal, kappa)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1d = conv3x3(dim, dim)
        self.conv2d = conv3x3(dim, 2)
        self.conv1n = conv3x3(dim, dim)
        self.conv2n = conv3x3(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv1d.out_channels
        hidden = F.conv2d(
            x,
            torch.cat((self.conv1d.weight, self.conv1n.weight)),
            torch.cat((self.conv1d.bias, self.conv1n.bias)),  # type: ignore[arg-type]  # built with biases
            padding=1,
        )
        hd, hn = F.relu(hidden).split(c, dim=1)
        return torch.cat((self.conv2d(hd), self.conv2n(hn)), dim=1)


class BasicMultiUpdateBlock(nn.Module):
    """GRUs at 1/4 (gru08), 1/7 (gru16) and 1/14 (gru32); names kept from RAFT-Stereo."""

    STATE_CHANNELS = 6

    def __init__(self, hidden_dim: int):
        super().__init__()
        h = hidden_dim
        self.gru08 = ConvGRU(h, self.STATE_CHANNELS + h)
        self.gru16 = ConvGRU(h, 2 * h)
        self.gru32 = ConvGRU(h, h)
        self.flow_head = FlowHead(h)
        self.mask = nn.Sequential(conv3x3(h, h), nn.ReLU(inplace=True), nn.Conv2d(h, 9 * UPSAMPLE**2, 1))

    def forward(
        self, net: list[torch.Tensor], ctx: list[torch.Tensor], state: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One refinement iteration with the slow-fast schedule (coarse GRUs run 3x / 2x per step).
        Returns the new hidden states and the state increment."""
        h4, h7, h14 = net
        fine_pooled = interp_like(pool2x(h4), h7)  # h4 is constant until the last sub-step
        h14 = self.gru32(h14, ctx[2], pool2x(h7))
        for _ in range(2):
            h14 = self.gru32(h14, ctx[2], pool2x(h7))
            h7 = self.gru16(h7, ctx[1], fine_pooled, interp_like(h14, h7))
        h4 = self.gru08(h4, ctx[0], state, interp_like(h7, h4))
        return [h4, h7, h14], self.flow_head(h4)

    def upsample_mask(self, h4: torch.Tensor) -> torch.Tensor:
        """Convex-upsampling logits from the finest hidden state (scaled by 1/4 as trained)."""
        return 0.25 * self.mask(h4)


def convex_upsample(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,D,H,W) field -> (N,D,4H,4W): each fine pixel is a softmax-weighted mix of its 3x3 coarse neighbours."""
    n, d, h, w = x.shape
    f = UPSAMPLE
    weights = mask.view(n, 1, 9, f, f, h, w).softmax(dim=2)
    neighbours = F.unfold(x, 3, padding=1).view(n, d, 9, 1, 1, h, w)
    up = (weights * neighbours).sum(dim=2)  # (n, d, f, f, h, w)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(n, d, f * h, f * w)


class RAFTDepthNormalDPT5(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        feature_channels: list[int],
        decoder_channels: list[int],
        hidden_dim: int,
        iters: int,
        num_register_tokens: int = 4,
        depth_range: tuple[float, float] = (0.1, 200.0),
        num_bins: int = 256,
    ):
        super().__init__()
        self.iters = iters
        self.num_register_tokens = num_register_tokens
        self.min_depth, self.max_depth = depth_range
        self.num_bins = num_bins
        shared = decoder_channels[1]
        self.token2feature = EncoderFeature(embed_dim, feature_channels, num_register_tokens)
        self.decoder_mono = DecoderFeature(decoder_channels)
        self.depth_regressor = nn.Sequential(
            conv3x3(shared, num_bins), nn.ReLU(inplace=True), nn.Conv2d(num_bins, num_bins, 1)
        )
        self.normal_predictor = nn.Sequential(
            conv3x3(shared, 128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 128, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 128, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 3, 1),
        )
        self.context_feature_encoder = ContextFeatureEncoder(feature_channels[:3], hidden_dim)
        self.context_zqr_convs = nn.ModuleList(conv3x3(hidden_dim, 3 * hidden_dim) for _ in range(3))
        self.update_block = BasicMultiUpdateBlock(hidden_dim)
        # NHWC end to end (the readout already yields NHWC strides): oneDNN convolutions then need no layout
        # reorders on CPU. Loading a checkpoint copies into these tensors and keeps the layout.
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stub

    def depth_bins(self, device: torch.device) -> torch.Tensor:
        """Log-spaced bin centres (metres in the canonical camera); made on the fly, never saved."""
        lin = torch.linspace(math.log(self.min_depth), math.log(self.max_depth), self.num_bins, device=device)
        return torch.exp(lin)

    def regress_depth(self, feature: torch.Tensor) -> torch.Tensor:
        prob = self.depth_regressor(feature).softmax(dim=1)
        # expectation over the bins; with NHWC memory the bin axis is innermost, so this is a plain GEMV
        depth = torch.matmul(prob.permute(0, 2, 3, 1), self.depth_bins(feature.device)).unsqueeze(1)
        return (depth.clamp(self.min_depth, self.max_depth) - self.max_depth) / REGRESS_SCALE

    def decode_state(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """6-channel refinement state -> (depth clamped to the bin range, confidence, normal+kappa)."""
        depth = (state[:, :1] * REGRESS_SCALE + self.max_depth).clamp(self.min_depth, self.max_depth)
        return depth, state[:, 1:2], normalize_normal(state[:, 2:])

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """tokens (B, 1+R+h*w, D) from the ViT, grid (h, w) -> dict of outputs at 4x the 1/4 grid
        (= the input size when its sides are multiples of 28)."""
        b, _, d = tokens.shape
        r = 1 + self.num_register_tokens
        patches = tokens[:, r:].reshape(b, grid[0], grid[1], d)
        learned = tokens[:, :r].reshape(b, 1, 1, r * d)
        f14a, f14b, f7, f4 = self.token2feature(patches, learned)
        # Upstream's DPT blocks rectify their inputs in place, so the context encoder receives the
        # rectified 1/14 and 1/7 maps; the released weights expect exactly that.
        f14b, f7 = F.relu(f14b), F.relu(f7)

        ref = self.decoder_mono(f14a, f14b, f7)
        feature, depth_conf, normal_conf = ref[:, :-2], ref[:, -2:-1], ref[:, -1:]
        normal = normalize_normal(torch.cat((self.normal_predictor(feature), normal_conf), dim=1))
        state = torch.cat((self.regress_depth(feature), depth_conf, normal), dim=1)
        state = state.contiguous(memory_format=torch.channels_last)

        levels = self.context_feature_encoder(f4, f7, f14b)
        net = [torch.tanh(hid) for hid, _ in levels]
        ctx = [conv(F.relu(c)) for conv, (_, c) in zip(self.context_zqr_convs, levels)]

        lists: tuple[list[torch.Tensor], ...] = ([], [], [])  # depth, confidence, normal per emitted step

        def emit(full_res_state: torch.Tensor) -> None:
            for lst, value in zip(lists, self.decode_state(full_res_state)):
                lst.append(value)

        out: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        if self.training:  # the sequence loss also supervises the initial estimate
            out["low_resolution_init"] = list(self.decode_state(state))
            emit(F.interpolate(state, scale_factor=UPSAMPLE, mode="bilinear", align_corners=True))
        for i in range(self.iters):
            net, delta = self.update_block(net, ctx, state)
            state = state + delta
            # Intermediate iterations only feed the training loss; inference skips their mask and upsampling.
            if self.training or i == self.iters - 1:
                emit(convex_upsample(state, self.update_block.upsample_mask(net[0])))
        depths, confs, normals = lists
        out.update(
            prediction=depths[-1],
            confidence=confs[-1],
            prediction_normal=normals[-1],
            predictions_list=depths,
            confidence_list=confs,
            normal_out_list=normals,
        )
        return out
