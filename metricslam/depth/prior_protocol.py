"""What every depth prior is: the DepthPrior protocol and the BA weight that network priors share.

The concrete priors live in metricslam.depth.priors (sensor, folder, simulated, none) and
metricslam.depth.metric3d_prior (the network); both import from here, so neither imports the other at load time.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from metricslam.io.frame import Frame

NETWORK_PRIOR_WEIGHT = 0.02  # see PriorConfig.weight


class DepthPrior(Protocol):
    name: str
    metric: bool
    ba_weight: float  # default PriorConfig.weight of this prior

    def __call__(self, frame: Frame) -> tuple[np.ndarray, np.ndarray] | None: ...
