"""Per-frame DROID encodings of uint8 images at the processing resolution."""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from metricslam.slam.correspondence.droid.net import DroidNet


class FrameFeatures(NamedTuple):
    """Encodings of N frames at 1/8 resolution, each (N, 128, h, w)."""

    fmap: torch.Tensor  # correlation features
    net: torch.Tensor  # initial hidden state of the edges leaving the frame
    inp: torch.Tensor  # context input of those edges


def model_device(model: DroidNet) -> torch.device:
    return next(model.parameters()).device


def image_batch(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """Equally sized uint8 images, RGB (H, W, 3) or grey (H, W), as an RGB batch (N, 3, H, W) on ``device``.

    Grey images are repeated over the three channels (the network was trained on colour)."""
    rgb = [im if im.ndim == 3 else np.repeat(im[..., None], 3, axis=-1) for im in images]
    return torch.from_numpy(np.stack(rgb)).to(device).permute(0, 3, 1, 2)


def encode(model: DroidNet, images: Sequence[np.ndarray]) -> FrameFeatures:
    """Correlation features and context of ``images`` (see ``image_batch``), without autograd."""
    with torch.no_grad():
        return FrameFeatures(*model.extract(image_batch(images, model_device(model))))
