"""Map resolution presets (voxel size, depth cut-off), chosen from the scene's depth range."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metricslam.errors import InputError
from metricslam.slam.reconstruction import Reconstruction

PRESET_NAMES = ("auto", "indoor", "outdoor")
# Scenes whose median keyframe depth is below this (metres) are rooms; above it, streets and landscapes.
INDOOR_MAX_MEDIAN_DEPTH = 5.0


@dataclass(frozen=True)
class MapScale:
    voxel_size: float  # metres
    max_depth: float  # metres; farther depth is not fused


PRESETS = {
    "indoor": MapScale(voxel_size=0.02, max_depth=6.0),
    "outdoor": MapScale(voxel_size=0.10, max_depth=40.0),
}


def median_depth(rec: Reconstruction) -> float:
    """Median of the valid keyframe (BA grid) depths."""
    d = rec.kf_depths[rec.kf_depths > 0]
    if d.size == 0:
        raise InputError("the reconstruction has no valid keyframe depth to map; check the run's keyframes.npz")
    return float(np.median(d))


def choose_preset(rec: Reconstruction, name: str = "auto") -> tuple[str, MapScale]:
    """(preset name, scale) for ``rec``. 'auto' picks indoor or outdoor from the median keyframe depth.

    A run without metric depth has an arbitrary unit, so 'auto' then sizes the map relative to the median depth
    (voxel = median / 100) and reports the preset as 'relative'.
    """
    if name not in PRESET_NAMES:
        raise InputError(f"unknown map preset '{name}'; use one of {', '.join(PRESET_NAMES)}")
    if name != "auto":
        return name, PRESETS[name]
    median = median_depth(rec)
    if not rec.metric:
        return "relative", MapScale(median / 100.0, 3.0 * median)
    name = "indoor" if median < INDOOR_MAX_MEDIAN_DEPTH else "outdoor"
    return name, PRESETS[name]
