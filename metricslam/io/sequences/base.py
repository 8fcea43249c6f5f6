"""The interface every sequence reader implements: a random-access, lazily loaded list of Frames."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np

from metricslam.geometry.camera import Intrinsics
from metricslam.io.frame import Frame
from metricslam.io.trajectory import Trajectory


class Sequence(ABC):
    """Frames of one camera, all with the same intrinsics.

    Subclasses implement ``__len__``, ``__getitem__``, ``intrinsics`` and ``timestamps``; ``name``,
    ``has_depth``, ``has_gt`` and ``gt_trajectory`` default to an unnamed sequence without depth or ground truth.
    """

    name: str = ""

    @abstractmethod
    def __len__(self) -> int:
        """Number of frames (after any start/end/stride selection)."""

    @abstractmethod
    def __getitem__(self, i: int) -> Frame:
        """Frame ``i`` (0 <= i < len), loaded on demand."""

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]

    @property
    @abstractmethod
    def intrinsics(self) -> Intrinsics:
        """Intrinsics of the frames this sequence yields (after undistortion and resizing)."""

    @property
    @abstractmethod
    def timestamps(self) -> np.ndarray:
        """(len,) float64 seconds, one per frame."""

    @property
    def has_depth(self) -> bool:
        return False

    @property
    def has_gt(self) -> bool:
        return False

    def gt_trajectory(self) -> Trajectory | None:
        """Ground-truth T_wc of the frames that have one, with their timestamps; None without ground truth."""
        return None

    def __repr__(self) -> str:
        cam = self.intrinsics
        return (
            f"{type(self).__name__}(name={self.name!r}, frames={len(self)}, size={cam.width}x{cam.height}, "
            f"depth={self.has_depth}, gt={self.has_gt})"
        )
