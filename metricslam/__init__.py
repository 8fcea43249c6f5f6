"""metricslam: metric 3D reconstruction from one ordinary camera.

Metric3D depth priors feed a DROID-style dense bundle adjustment, so trajectories and maps come out in metres.
CPU first, CUDA when present.

The names a script needs are importable from here::

    import metricslam as ms

    seq = ms.open_sequence("path/to/dataset")
    cfg = ms.preset_config("handheld")
    cfg.prior.kind = "sensor"
    slam = ms.Slam(cfg)
    for frame in seq:
        slam.track(frame)
    rec = slam.finish()
    print(ms.evaluate_trajectory(seq.gt_trajectory(), rec.trajectory()))

They are imported on first use, so ``import metricslam`` stays cheap (torch, Open3D and OpenCV load only when a
name that needs them is touched).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    # SLAM
    "Slam": "metricslam.slam.system",
    "SlamConfig": "metricslam.slam.config",
    "Reconstruction": "metricslam.slam.reconstruction",
    "preset_config": "metricslam.slam.presets",
    "choose_preset": "metricslam.slam.presets",
    "resolve_preset": "metricslam.slam.presets",
    # input
    "open_sequence": "metricslam.io.sequences",
    # depth priors and the network
    "PriorConfig": "metricslam.slam.config",
    "make_prior": "metricslam.slam.prior_factory",
    "NoPrior": "metricslam.depth.priors",
    "SensorPrior": "metricslam.depth.priors",
    "FolderPrior": "metricslam.depth.priors",
    "SimulatedPrior": "metricslam.depth.priors",
    "Metric3DPrior": "metricslam.depth.metric3d_prior",
    "Metric3DPredictor": "metricslam.depth.predictor",
    # evaluation
    "evaluate_trajectory": "metricslam.metrics.trajectory",
    # meshes and clouds
    "MappingConfig": "metricslam.mapping.export",
    "write_map": "metricslam.mapping.export",
}

__all__ = [
    "FolderPrior", "MappingConfig", "Metric3DPredictor", "Metric3DPrior", "NoPrior", "PriorConfig", "Reconstruction",
    "SensorPrior", "SimulatedPrior", "Slam", "SlamConfig", "__version__", "choose_preset", "evaluate_trajectory",
    "make_prior", "open_sequence", "preset_config", "resolve_preset", "write_map",
]

if TYPE_CHECKING:
    from metricslam.depth.metric3d_prior import Metric3DPrior
    from metricslam.depth.predictor import Metric3DPredictor
    from metricslam.depth.priors import FolderPrior, NoPrior, SensorPrior, SimulatedPrior
    from metricslam.io.sequences import open_sequence
    from metricslam.mapping.export import MappingConfig, write_map
    from metricslam.metrics.trajectory import evaluate_trajectory
    from metricslam.slam.config import PriorConfig, SlamConfig
    from metricslam.slam.presets import choose_preset, preset_config, resolve_preset
    from metricslam.slam.prior_factory import make_prior
    from metricslam.slam.reconstruction import Reconstruction
    from metricslam.slam.system import Slam


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metricslam' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
