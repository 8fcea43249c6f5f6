"""``build_metric3d(variant)``: the released Metric3D networks, named so official checkpoints load strictly.

Checkpoint keys read 'depth_model.encoder.*' / 'depth_model.decoder.*': the returned module holds the
family-specific network under ``depth_model``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metricslam.errors import MetricSlamError


@dataclass(frozen=True)
class VariantInfo:
    family: str  # "convnext" or "vit"
    input_size: tuple[int, int]  # (H, W) of the official recipe
    checkpoint: str  # official file name


VARIANTS: dict[str, VariantInfo] = {
    "convnext_tiny": VariantInfo("convnext", (544, 1216), "convtiny_hourglass_v1.pth"),
    "convnext_large": VariantInfo("convnext", (544, 1216), "convlarge_hourglass_0.3_150_step750k_v1.1.pth"),
    "vit_small": VariantInfo("vit", (616, 1064), "metric_depth_vit_small_800k.pth"),
    "vit_large": VariantInfo("vit", (616, 1064), "metric_depth_vit_large_800k.pth"),
    "vit_giant2": VariantInfo("vit", (616, 1064), "metric_depth_vit_giant2_800k.pth"),
}


class Metric3D(nn.Module):
    """Wrapper giving the 'depth_model.' key prefix; forward returns the family network's output dict."""

    def __init__(self, variant: str, depth_model: nn.Module):
        super().__init__()
        self.variant = variant
        self.depth_model = depth_model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.depth_model(x)


def build_metric3d(variant: str) -> Metric3D:
    """A randomly initialised Metric3D network of ``variant`` (see VARIANTS)."""
    info = VARIANTS.get(variant)
    if info is None:
        raise MetricSlamError(f"unknown Metric3D variant '{variant}'; choose one of {', '.join(VARIANTS)}")
    if info.family == "convnext":
        from metricslam.depth.models.convnext_hourglass import ConvNextHourglass

        return Metric3D(variant, ConvNextHourglass(variant))
    from metricslam.depth.models.vit_raft_dpt import DinoRaftDPT

    return Metric3D(variant, DinoRaftDPT(variant))
