"""Convex upsampling of 1/8-resolution fields with the update operator's 576-channel mask (as DROID-SLAM).

Every full-resolution pixel is a convex combination of the 3x3 neighbourhood of the grid pixel it lies in.
Mask channel ``k * 64 + a * 8 + b`` scores neighbour ``k`` (row-major over dy, dx in -1..1) for the sub-pixel
(row ``a``, column ``b``) of the 8x8 block; a softmax over the 9 neighbours turns scores into weights.
Neighbours outside the grid are zeros, exactly as upstream (it unfolds with zero padding): on the outermost
grid ring the result is pulled toward 0 unless the mask gives those neighbours no weight.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FACTOR = 8
MASK_CHANNELS = 9 * FACTOR * FACTOR


def convex_upsample(field: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Upsample ``field`` (N, C, h, w) by 8 with ``mask`` (N, 576, h, w) -> (N, C, 8h, 8w).

    Values are not rescaled: multiply a flow field by 8 yourself; inverse depth needs no rescaling.
    """
    n, c, h, w = field.shape
    if mask.shape != (n, MASK_CHANNELS, h, w):
        raise ValueError(f"mask must have shape {(n, MASK_CHANNELS, h, w)}, got {tuple(mask.shape)}")
    weights = torch.softmax(mask.view(n, 1, 9, FACTOR, FACTOR, h, w), dim=2)
    neighbours = F.unfold(field, kernel_size=3, padding=1).view(n, c, 9, 1, 1, h, w)
    up = (weights * neighbours).sum(dim=2)  # (n, c, a, b, y, x)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(n, c, FACTOR * h, FACTOR * w)


def upsample_field(field: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Upsample a scalar field (N, h, w), e.g. keyframe inverse depths, to (N, 8h, 8w)."""
    return convex_upsample(field.unsqueeze(1), mask).squeeze(1)
