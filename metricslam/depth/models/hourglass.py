"""Metric3D's Hourglass decoder: encoder pyramid -> canonical depth by soft classification over log-spaced bins.

Pipeline (all at 1/4 of the input unless said otherwise):
  1. ``decoder_mono``: top-down fusion of the 4 encoder features (nearest x2 upsampling, ELU conv blocks).
  2. ``conv_out_2``: a small 3-level UNet giving 256 depth-feature channels + 1 confidence channel.
  3. ``depth_regressor_2``: 512 bin logits; depth = softmax expectation over the bins.
  4. ``conv_up_2``: a residual from [depth, pixel grid, features], computed at 1/4, upsampled x4 (nearest)
     and refined at full resolution; prediction = nearest x4 depth + 0.1 * residual. Confidence is the raw
     (unsquashed) confidence channel upsampled x4 (nearest). No clamping, as upstream.
Parameter names follow the Metric3D checkpoints. In eval mode every BatchNorm is folded into the conv before it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metricslam.geometry.projective import pixel_grid

NUM_BINS = 512
DEPTH_RANGE = (0.3, 150.0)  # canonical metres covered by the bins
FEATURE_CHANNELS = 256  # depth-feature channels out of the UNet
RESIDUAL_CHANNELS = 16
RESIDUAL_WEIGHT = 0.1
UNET_WIDTH = 128


def depth_bins(
    num_bins: int = NUM_BINS,
    depth_range: tuple[float, float] = DEPTH_RANGE,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The (num_bins,) log-spaced bin centres exp(linspace(log min, log max))."""
    log_min, log_max = math.log(depth_range[0]), math.log(depth_range[1])
    return torch.linspace(log_min, log_max, num_bins, device=device, dtype=torch.float32).exp().to(dtype)


def upsample_nearest(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="nearest")


class ConvBlock(nn.Module):
    """Conv (3x3 with reflection padding, or 1x1) then ELU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        if kernel_size == 3:
            self.conv: nn.Module = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(in_channels, out_channels, 3))
        elif kernel_size == 1:
            self.conv = nn.Conv2d(in_channels, out_channels, 1)
        else:
            raise ValueError(f"ConvBlock kernel_size must be 1 or 3, got {kernel_size}")
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.conv(x))


class ConvBlockDouble(ConvBlock):
    """ConvBlock followed by a 1x1 conv and ELU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size)
        self.conv_2 = nn.Conv2d(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(self.conv_2(super().forward(x)), inplace=True)


class DecoderFeature(nn.Module):
    """Top-down fusion of [f4, f8, f16, f32] into one (num_ch_dec[1])-channel map at stride 4."""

    def __init__(self, feat_channels: Sequence[int], num_ch_dec: Sequence[int]):
        super().__init__()
        self.upconv_3_0 = ConvBlock(feat_channels[3], num_ch_dec[3], kernel_size=1)
        self.upconv_3_1 = ConvBlockDouble(feat_channels[2] + num_ch_dec[3], num_ch_dec[3], kernel_size=1)
        self.upconv_2_0 = ConvBlock(num_ch_dec[3], num_ch_dec[2], kernel_size=3)
        self.upconv_2_1 = ConvBlockDouble(feat_channels[1] + num_ch_dec[2], num_ch_dec[2], kernel_size=3)
        self.upconv_1_0 = ConvBlock(num_ch_dec[2], num_ch_dec[1], kernel_size=3)
        self.upconv_1_1 = ConvBlockDouble(feat_channels[0] + num_ch_dec[1], num_ch_dec[1], kernel_size=3)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        f4, f8, f16, f32 = features
        x = self.upconv_3_1(torch.cat((upsample_nearest(self.upconv_3_0(f32), 2), f16), 1))
        x = self.upconv_2_1(torch.cat((upsample_nearest(self.upconv_2_0(x), 2), f8), 1))
        return self.upconv_1_1(torch.cat((upsample_nearest(self.upconv_1_0(x), 2), f4), 1))


def conv_bn(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """bn(conv(x)). At inference the affine normalisation is folded into the conv's weights and bias, which
    saves a full pass over the (often large) output; the result is the same up to float rounding."""
    if bn.training or bn.running_var is None or bn.running_mean is None:
        return bn(conv(x))
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    if isinstance(conv, nn.ConvTranspose2d):  # weight (in, out, kh, kw)
        weight = conv.weight * scale[:, None, None]
        return F.conv_transpose2d(
            x, weight, shift, conv.stride, conv.padding,  # type: ignore[arg-type]  # never a string here
            conv.output_padding, conv.groups, conv.dilation
        )
    weight = conv.weight * scale[:, None, None, None]
    return F.conv2d(x, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups)


class FoldedSequential(nn.Sequential):
    """nn.Sequential whose Conv + BatchNorm pairs run through ``conv_bn``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        i = 0
        while i < len(layers):
            layer, following = layers[i], layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(following, nn.BatchNorm2d):
                x = conv_bn(layer, following, x)
                i += 2
            else:
                x = layer(x)
                i += 1
        return x


class ConvBnReLU(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(conv_bn(self.conv, self.bn, x), inplace=True)


def _down(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(ConvBnReLU(in_channels, out_channels, stride=2), ConvBnReLU(out_channels, out_channels))


def _up(in_channels: int, out_channels: int) -> nn.Sequential:
    return FoldedSequential(
        nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Three stride-2 levels (widths 128 -> 64 -> 32 -> 16) and back with additive skips, then a 1x1 head.

    Its input sides must be multiples of 8 so that every transposed conv lands exactly on its skip.
    ``width`` (the released models' UNET_WIDTH) is smaller in the small training variant.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = UNET_WIDTH):
        super().__init__()
        w = width
        self.conv0 = ConvBnReLU(in_channels, w)
        self.conv_0 = _down(w, w // 2)
        self.conv_1 = _down(w // 2, w // 4)
        self.conv_2 = _down(w // 4, w // 8)
        self.deconv_2 = _up(w // 8, w // 4)
        self.deconv_1 = _up(w // 4, w // 2)
        self.deconv_0 = _up(w // 2, w)
        self.prob = nn.Conv2d(w, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.conv0(x)
        s1 = self.conv_0(s0)
        s2 = self.conv_1(s1)
        x = self.conv_2(s2)
        x = s2 + self.deconv_2(x)
        x = s1 + self.deconv_1(x)
        x = s0 + self.deconv_0(x)
        return self.prob(x)


class HourglassDecoder(nn.Module):
    """Metric3D Hourglass decoder; ``forward([f4, f8, f16, f32])`` returns a dict (see module docstring):

    prediction (B,1,H,W) canonical depth, confidence (B,1,H,W), prediction_lowres and confidence_lowres
    (B,1,H/4,W/4), where (H, W) = 4 x the size of f4.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        decoder_channels: Sequence[int],
        depth_range: tuple[float, float] = DEPTH_RANGE,
        num_bins: int = NUM_BINS,
        feature_channels: int = FEATURE_CHANNELS,
        unet_width: int = UNET_WIDTH,
    ):
        super().__init__()
        self.depth_range = depth_range
        self.num_bins = num_bins
        self.decoder_mono = DecoderFeature(in_channels, decoder_channels)
        self.conv_out_2 = UNet(decoder_channels[1], feature_channels + 1, unet_width)
        self.depth_regressor_2 = FoldedSequential(
            nn.Conv2d(feature_channels, num_bins, 3, padding=1),
            nn.BatchNorm2d(num_bins),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_bins, num_bins, 1),
        )
        r = RESIDUAL_CHANNELS
        self.conv_up_2 = FoldedSequential(
            nn.Conv2d(1 + 2 + feature_channels, r, 3, padding=1),
            nn.BatchNorm2d(r),
            nn.ReLU(),
            nn.Conv2d(r, r, 3, padding=1),
            nn.Upsample(scale_factor=4, mode="nearest"),
            nn.Conv2d(r, r, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(r, 1, 1),
        )

    def expected_depth(self, features: torch.Tensor) -> torch.Tensor:
        """(B,1,h,w) softmax-weighted mean of the bin depths."""
        # Bins last: the logits come out channels_last, so this permute is free and softmax runs over
        # contiguous memory; a matrix-vector product then takes the expectation.
        prob = self.depth_regressor_2(features).permute(0, 2, 3, 1).softmax(dim=-1)
        bins = depth_bins(self.num_bins, self.depth_range, device=prob.device, dtype=prob.dtype)
        return (prob @ bins).unsqueeze(1)

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        head = self.conv_out_2(self.decoder_mono(features))
        depth_features, confidence = head[:, :-1], head[:, -1:]
        depth = self.expected_depth(depth_features)
        b, _, h, w = depth.shape
        # Pixel coordinates (x, y) of the 1/4 grid, in its own pixel units, as upstream.
        grid = pixel_grid(h, w, device=depth.device, dtype=depth.dtype).permute(2, 0, 1).expand(b, 2, h, w)
        residual = self.conv_up_2(torch.cat((depth, grid, depth_features), 1))
        return {
            "prediction": upsample_nearest(depth, 4) + RESIDUAL_WEIGHT * residual,
            "confidence": upsample_nearest(confidence, 4),
            "prediction_lowres": depth,
            "confidence_lowres": confidence,
        }
