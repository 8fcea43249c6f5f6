"""The networks a training run builds: a released Metric3D variant, or a small ConvNeXt-Hourglass for CPU training.

The small variant is the released v1 architecture (ConvNeXt encoder, Hourglass decoder, the same forward code) with
fewer blocks, channels and depth bins, so a CPU trains it in minutes. Its state dict has the official key layout
('depth_model.encoder.*', 'depth_model.decoder.*'), so its checkpoints load strictly like the released ones.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from metricslam.depth.models.convnext import ConvNeXt
from metricslam.depth.models.convnext_hourglass import ConvNextHourglass
from metricslam.depth.models.hourglass import HourglassDecoder
from metricslam.depth.models.metric3d import VARIANTS, Metric3D, build_metric3d
from metricslam.errors import MetricSlamError

SMALL_VARIANT = "small"
# The predictor needs a released variant of the same family for its pre-processing (size multiple of 32).
SMALL_FAMILY_VARIANT = "convnext_tiny"


@dataclass
class SmallModelConfig:
    depths: tuple[int, int, int, int] = (1, 1, 3, 1)
    dims: tuple[int, int, int, int] = (24, 48, 96, 192)
    decoder_channels: tuple[int, int, int, int] = (24, 24, 48, 96)
    feature_channels: int = 64
    unet_width: int = 32
    num_bins: int = 128
    # Canonical metres covered by the bins: twice the released (0.3, 150), since short focal lengths (300 px)
    # make the canonical depth of an 80 m LiDAR-range label about 270.
    depth_range: tuple[float, float] = (0.3, 300.0)


class SmallConvNextHourglass(ConvNextHourglass):
    """ConvNextHourglass with a configurable (small) encoder and decoder; forward is the released one."""

    def __init__(self, cfg: SmallModelConfig):
        # The parent constructor only knows the released layouts; this builds the same two parts at other sizes.
        nn.Module.__init__(self)
        self.encoder = ConvNeXt(cfg.depths, cfg.dims)
        self.decoder = HourglassDecoder(
            self.encoder.dims,
            cfg.decoder_channels,
            depth_range=(cfg.depth_range[0], cfg.depth_range[1]),
            num_bins=cfg.num_bins,
            feature_channels=cfg.feature_channels,
            unet_width=cfg.unet_width,
        )


def build_small_metric3d(cfg: SmallModelConfig | None = None) -> Metric3D:
    """A randomly initialised small Metric3D (see SmallModelConfig)."""
    return Metric3D(SMALL_VARIANT, SmallConvNextHourglass(cfg or SmallModelConfig()))


def build_model(variant: str, small: SmallModelConfig | dict | None = None) -> Metric3D:
    """``variant`` 'small' (with ``small`` as its config) or a released variant (see VARIANTS)."""
    if variant == SMALL_VARIANT:
        cfg = SmallModelConfig(**small) if isinstance(small, dict) else small
        return build_small_metric3d(cfg)
    if variant not in VARIANTS:
        raise MetricSlamError(f"unknown model variant '{variant}'; use '{SMALL_VARIANT}' or one of {', '.join(VARIANTS)}")
    return build_metric3d(variant)


def family_variant(variant: str) -> str:
    """The released variant whose family (input size multiple, pre-processing) ``variant`` shares."""
    return SMALL_FAMILY_VARIANT if variant == SMALL_VARIANT else variant


def model_description(variant: str, small: SmallModelConfig | None) -> dict:
    """What a checkpoint records to rebuild its network: {'variant', 'small' (config dict or None)}."""
    return {"variant": variant, "small": asdict(small) if variant == SMALL_VARIANT and small is not None else None}
