"""The Metric3D v1 networks: ConvNeXt encoder + Hourglass decoder (convnext_tiny, convnext_large)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metricslam.depth.models.convnext import build_convnext
from metricslam.depth.models.hourglass import HourglassDecoder
from metricslam.errors import InputError, MetricSlamError

# Encoder stride 32, and the decoder's UNet halves its stride-4 map three more times.
SIZE_MULTIPLE = 32


@dataclass(frozen=True)
class _VariantLayout:
    encoder: str
    decoder_channels: tuple[int, int, int, int]


_LAYOUTS: dict[str, _VariantLayout] = {
    "convnext_tiny": _VariantLayout("tiny", (64, 64, 128, 256)),
    "convnext_large": _VariantLayout("large", (128, 128, 256, 512)),
}


class ConvNextHourglass(nn.Module):
    """``forward(x)`` on a normalised (B,3,H,W) batch, H and W multiples of 32, returns the decoder's dict:
    'prediction' (B,1,H,W) canonical depth, 'confidence' (B,1,H,W), 'prediction_lowres' and
    'confidence_lowres' (B,1,H/4,W/4).

    The input is converted to channels_last memory format once, so that no layer copies between layouts
    (see convnext.py); outputs with one channel have the same strides in either format.
    """

    def __init__(self, variant: str):
        super().__init__()
        layout = _LAYOUTS.get(variant)
        if layout is None:
            raise MetricSlamError(
                f"'{variant}' is not a ConvNeXt Metric3D variant; choose one of {', '.join(_LAYOUTS)}"
            )
        self.encoder = build_convnext(layout.encoder)
        self.decoder = HourglassDecoder(self.encoder.dims, layout.decoder_channels)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % SIZE_MULTIPLE or x.shape[3] % SIZE_MULTIPLE:
            raise InputError(
                f"ConvNeXt Metric3D input must be (B, 3, H, W) with H and W multiples of {SIZE_MULTIPLE}, "
                f"got {tuple(x.shape)}; pad the image to such a size (the depth predictor does this)"
            )
        return self.decoder(self.encoder(x.contiguous(memory_format=torch.channels_last)))
