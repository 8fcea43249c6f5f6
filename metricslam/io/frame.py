"""The unit every sequence reader yields."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metricslam.geometry.camera import Intrinsics


@dataclass
class Frame:
    """One input image with what is known about it.

    rgb: HxWx3 uint8. depth: HxW float32 metres (0 = invalid) or None. pose_wc: 4x4 float64 camera-to-world
    ground truth or None. intrinsics belong to this image's resolution (after any resize/undistortion).
    """

    index: int
    timestamp: float
    rgb: np.ndarray
    intrinsics: Intrinsics
    depth: np.ndarray | None = None
    pose_wc: np.ndarray | None = None
    name: str = ""

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])
