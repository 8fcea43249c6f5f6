"""Loading the released DROID-SLAM checkpoint (droid.pth) into ``DroidNet``."""
from __future__ import annotations

import os

import torch

from metricslam.device import resolve_device
from metricslam.slam.correspondence.droid.net import DroidNet
from metricslam.weights import load_strict, read_checkpoint, resolve_weights

# droid.pth was trained with a third output channel on these two heads that inference never reads.
_THREE_CHANNEL_HEADS = ("update.weight.2.", "update.delta.2.")


def _two_channel_heads(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v[:2] if k.startswith(_THREE_CHANNEL_HEADS) and v.shape[0] == 3 else v) for k, v in state.items()}


def load_droid_weights(path: str | os.PathLike, device: str | torch.device | None = None) -> DroidNet:
    """A ``DroidNet`` in eval mode on ``device`` (default: CUDA if present) with the weights of ``path``.

    ``path`` is a checkpoint file or the registry name 'droid'. 'module.' prefixes are stripped and the 3-channel
    heads sliced to 2; anything that then does not match the network exactly raises a one-line WeightsError.
    """
    file = resolve_weights(path)
    state = _two_channel_heads(read_checkpoint(file))
    model = DroidNet()
    load_strict(model, state, str(file), "the DROID-SLAM network (official file droid.pth)")
    return model.to(resolve_device(device)).eval()
