"""The depth prior that a SLAM config's prior section names (``metricslam.slam.config.PriorConfig.kind``)."""
from __future__ import annotations

from metricslam.depth.prior_protocol import DepthPrior
from metricslam.depth.priors import FolderPrior, NoPrior, SensorPrior, SimulatedPrior
from metricslam.errors import MetricSlamError
from metricslam.slam.config import PRIOR_NAMES, PriorConfig


def make_prior(config: PriorConfig) -> DepthPrior:
    """Instantiate the prior named by ``config.kind``."""
    kind = config.kind
    if kind == "none":
        return NoPrior()
    if kind == "sensor":
        return SensorPrior()
    if kind == "simulated":
        return SimulatedPrior(config.simulated)
    if kind == "folder":
        if not config.folder:
            raise MetricSlamError("--prior folder needs the depth maps: pass --depth DIR (or set prior.folder)")
        return FolderPrior(config.folder, config.depth_scale)
    if kind == "metric3d":
        # The network's modules load only for the runs that use it.
        from metricslam.depth.metric3d_prior import make_metric3d_prior

        return make_metric3d_prior(config)
    raise MetricSlamError(f"unknown prior '{kind}'; choose one of {', '.join(PRIOR_NAMES)}")
