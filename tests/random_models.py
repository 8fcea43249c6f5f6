"""Module-scoped fixtures for tests of one Metric3D variant with random weights (no checkpoint needed)."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from metricslam.depth.models.metric3d import build_metric3d


def random_model_fixtures(variant: str, randomise: Callable[[torch.nn.Module], None], image_seed: int,
                          image_shape: tuple[int, int, int, int]) -> tuple[Callable, Callable, Callable]:
    """Fixtures ``model`` (the variant in eval mode, weights set by ``randomise``), ``image`` (a random batch of
    ``image_shape``) and ``outputs`` (the model's forward of it); assign them to these names in the test module."""

    @pytest.fixture(scope="module")
    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        m = build_metric3d(variant).eval()
        randomise(m)
        return m

    @pytest.fixture(scope="module")
    def image() -> torch.Tensor:
        return torch.randn(*image_shape, generator=torch.Generator().manual_seed(image_seed))

    @pytest.fixture(scope="module")
    def outputs(model: torch.nn.Module, image: torch.Tensor):
        with torch.no_grad():
            return model(image)

    return model, image, outputs
