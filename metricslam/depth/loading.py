"""A ``--weights`` value to a ready predictor, whatever wrote the file.

Official Metric3D files are told apart by their name (or ``variant``); checkpoints written by `metricslam train`
record their network (variant, and the small model's config), so they load without ``variant``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from metricslam.depth.predictor import Metric3DPredictor, resolve_variant
from metricslam.errors import WeightsError
from metricslam.training.small_model import build_model, family_variant
from metricslam.weights import recorded_model, resolve_weights


def load_predictor(
    weights: str | os.PathLike,
    variant: str | None = None,
    device: str | torch.device | None = None,
    input_size: Sequence[int] | None = None,
    **kwargs: Any,
) -> Metric3DPredictor:
    """The predictor for a checkpoint path or registry name (see the module docstring); ``kwargs`` go to
    Metric3DPredictor (focal_mode, batch_size, ...)."""
    file = resolve_weights(weights)
    try:
        described = recorded_model(file)
    except WeightsError:  # unreadable: the predictor reports it, after saying which variant it needs
        described = None
    if described is None:
        return Metric3DPredictor(resolve_variant(weights, variant), file, device=device, input_size=input_size,
                                 **kwargs)
    trained = described["variant"]
    if variant is not None and variant not in (trained, family_variant(trained)):
        raise WeightsError(f"{file}: this checkpoint holds a '{trained}' network, not '{variant}'; drop --variant "
                           "(the checkpoint names its network)")
    model = build_model(trained, described.get("small"))
    return Metric3DPredictor(family_variant(trained), file, device=device, input_size=input_size, model=model,
                             **kwargs)
