"""``DinoRaftDPT(variant)``: the Metric3D v2 ViT networks (DINOv2-reg encoder + RAFTDepthNormalDPT5)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metricslam.depth.models.dinov2 import DinoVisionTransformer, FfnKind
from metricslam.depth.models.raft_dpt import RAFTDepthNormalDPT5
from metricslam.errors import MetricSlamError

# Input sides that are multiples of this come back at the input size: 14-pixel patches, then x3.5 and x4 to the
# output. Other multiples of 14 give outputs a few pixels short (upstream behaviour, kept).
SIZE_MULTIPLE = 28


@dataclass(frozen=True)
class VitRaftConfig:
    embed_dim: int
    depth: int
    num_heads: int
    ffn: FfnKind
    feature_channels: tuple[int, int, int, int]  # readouts at 1/4, 1/7, 1/14, 1/14
    decoder_channels: tuple[int, int, int, int, int]
    hidden_dim: int  # GRU hidden and context width
    iters: int  # refinement iterations
    depth_range: tuple[float, float] = (0.1, 200.0)  # canonical-camera bin range (upstream depth_normalize)


VIT_CONFIGS: dict[str, VitRaftConfig] = {
    "vit_small": VitRaftConfig(384, 12, 6, "mlp", (96, 192, 384, 768), (48, 96, 192, 384, 384), 48, 4),
    "vit_large": VitRaftConfig(1024, 24, 16, "mlp", (256, 512, 1024, 1024), (128, 256, 512, 1024, 1024), 128, 8),
    "vit_giant2": VitRaftConfig(
        1536, 40, 24, "swiglu", (384, 768, 1536, 1536), (192, 384, 768, 1536, 1536), 192, 8
    ),
}


class DinoRaftDPT(nn.Module):
    """``forward(x)`` on a normalised (B,3,H,W) batch returns a dict with ``prediction`` (B,1,H,W canonical
    depth, clamped to the bin range), ``confidence`` (B,1,H,W), ``prediction_normal`` (B,4,H,W: unit
    normal xyz + kappa) and the per-iteration lists ``predictions_list``, ``confidence_list``,
    ``normal_out_list`` (in training mode also the upsampled initial estimate first, and
    ``low_resolution_init``). Sides that are multiples of SIZE_MULTIPLE (e.g. 616x1064) give outputs of the input
    size; other sizes are first stretched up to multiples of 14, as upstream does, and the outputs follow its grid."""

    def __init__(self, variant: str):
        super().__init__()
        cfg = VIT_CONFIGS.get(variant)
        if cfg is None:
            raise MetricSlamError(f"unknown Metric3D ViT variant '{variant}'; choose one of {', '.join(VIT_CONFIGS)}")
        self.variant = variant
        self.encoder = DinoVisionTransformer(cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.ffn)
        self.decoder = RAFTDepthNormalDPT5(
            cfg.embed_dim,
            list(cfg.feature_channels),
            list(cfg.decoder_channels),
            cfg.hidden_dim,
            cfg.iters,
            num_register_tokens=self.encoder.num_register_tokens,
            depth_range=cfg.depth_range,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        tokens, grid = self.encoder(x)
        return self.decoder(tokens, grid)
