"""Pinhole intrinsics with optional lens distortion. Every resize or crop of an image goes through here."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera of an image of ``width`` x ``height`` pixels.

    Pixel centres are at integer coordinates (OpenCV convention). ``distortion`` is ``"none"``, ``"radtan"``
    (k1 k2 p1 p2 [k3]) or ``"equidistant"`` (k1 k2 k3 k4), with coefficients in ``dist_coeffs``.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: str = "none"
    dist_coeffs: tuple[float, ...] = field(default_factory=tuple)

    @property
    def K(self) -> np.ndarray:
        """3x3 calibration matrix (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def params(self) -> np.ndarray:
        """[fx, fy, cx, cy] as float64."""
        return np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float64)

    @property
    def is_distorted(self) -> bool:
        return self.distortion != "none" and any(abs(c) > 0 for c in self.dist_coeffs)

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int) -> "Intrinsics":
        K = np.asarray(K, dtype=np.float64)
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height))

    def scaled(self, sx: float, sy: float | None = None) -> "Intrinsics":
        """Intrinsics after resizing the image by (sx, sy); the size is rounded to whole pixels.

        Uses the pixel-centre convention of cv2.resize: u' = (u + 0.5) * s - 0.5.
        """
        sy = sx if sy is None else sy
        return replace(
            self,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=int(round(self.width * sx)),
            height=int(round(self.height * sy)),
        )

    def resized(self, width: int, height: int) -> "Intrinsics":
        """Intrinsics after resizing the image to exactly ``width`` x ``height``."""
        out = self.scaled(width / self.width, height / self.height)
        return replace(out, width=int(width), height=int(height))

    def cropped(self, left: int, top: int, width: int, height: int) -> "Intrinsics":
        """Intrinsics of the sub-image [top:top+height, left:left+width]."""
        return replace(self, cx=self.cx - left, cy=self.cy - top, width=int(width), height=int(height))

    def padded(self, left: int, top: int, right: int, bottom: int) -> "Intrinsics":
        """Intrinsics after adding borders of the given sizes."""
        return replace(
            self,
            cx=self.cx + left,
            cy=self.cy + top,
            width=self.width + int(left) + int(right),
            height=self.height + int(top) + int(bottom),
        )

    def undistorted(self) -> "Intrinsics":
        """The same pinhole camera with its distortion removed (what an undistorted image uses)."""
        return replace(self, distortion="none", dist_coeffs=())
