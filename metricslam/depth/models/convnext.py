"""ConvNeXt backbone (Liu et al. 2022) as used by Metric3D: four stages, features at strides 4, 8, 16, 32.

Parameter names follow the Metric3D checkpoints ('downsample_layers.i', 'stages.i.j'); there is no
classification head and no final norm. Stochastic depth is a training-only regulariser and is omitted.

Layout: every norm and block works on a (B, H, W, C) view for its LayerNorm and pointwise linears. On a
channels_last input those permutes are free (no copies) and every feature comes out channels_last; the values do
not depend on the memory format.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-6
LAYER_SCALE_INIT = 1e-6


@dataclass(frozen=True)
class ConvNeXtSpec:
    depths: tuple[int, int, int, int]
    dims: tuple[int, int, int, int]


CONVNEXT_SPECS: dict[str, ConvNeXtSpec] = {
    "tiny": ConvNeXtSpec((3, 3, 9, 3), (96, 192, 384, 768)),
    "large": ConvNeXtSpec((3, 3, 27, 3), (192, 384, 768, 1536)),
}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of a (B, C, H, W) tensor (ConvNeXt's 'channels_first' norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """x + gamma * Linear(GELU(Linear(LayerNorm(DepthwiseConv7x7(x))))), the MLP acting per pixel."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), LAYER_SCALE_INIT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.pwconv2(self.act(self.pwconv1(y)))
        return torch.addcmul(x, self.gamma[:, None, None], y.permute(0, 3, 1, 2))


class ConvNeXt(nn.Module):
    """ConvNeXt feature pyramid: ``forward(x)`` returns [f4, f8, f16, f32] with channels ``dims``."""

    def __init__(self, depths: Sequence[int], dims: Sequence[int], in_channels: int = 3):
        super().__init__()
        self.dims = tuple(dims)
        stem = nn.Sequential(
            nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4),
            LayerNorm2d(dims[0], eps=LAYER_NORM_EPS),
        )
        downsamples = [
            nn.Sequential(LayerNorm2d(dims[i], eps=LAYER_NORM_EPS), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
            for i in range(3)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downsamples])
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(depth))) for depth, dim in zip(depths, dims)
        )
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
            features.append(x)
        return features


def build_convnext(size: str) -> ConvNeXt:
    """ConvNeXt of ``size`` 'tiny' or 'large' (see CONVNEXT_SPECS), randomly initialised."""
    spec = CONVNEXT_SPECS[size]
    return ConvNeXt(spec.depths, spec.dims)


def _init_weights(module: nn.Module) -> None:
    # ConvNeXt's initialisation: N(0, 0.02) truncated to [-2, 2], zero biases. The bounds lie 100 std out, so a
    # plain normal draw is the same distribution, without trunc_normal_'s slow rejection loop.
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
