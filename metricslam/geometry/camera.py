"""Pinhole intrinsics with optional lens distortion. Every resize or crop of an image goes through here."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import cv2
import numpy as np

# Number of coefficients each distortion model accepts.
DISTORTION_MODELS: dict[str, tuple[int, ...]] = {"none": (0,), "radtan": (4, 5), "equidistant": (4,)}
# Undistorting points inverts the model iteratively; OpenCV's default of 5 iterations is too few for strong lenses.
_POINT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)


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

    def __post_init__(self) -> None:
        counts = DISTORTION_MODELS.get(self.distortion)
        if counts is None:
            raise ValueError(f"unknown distortion model '{self.distortion}'; use one of {', '.join(DISTORTION_MODELS)}")
        coeffs = tuple(float(c) for c in self.dist_coeffs)
        if self.distortion == "none":
            if any(coeffs):
                raise ValueError("distortion 'none' cannot have non-zero coefficients; name the model (radtan, equidistant)")
            coeffs = ()
        elif len(coeffs) not in counts:
            allowed = " or ".join(map(str, counts))
            raise ValueError(f"'{self.distortion}' distortion takes {allowed} coefficients, got {len(coeffs)}")
        # Plain Python numbers keep the dataclass hashable (undistortion maps are cached by it) and printable.
        for name in ("fx", "fy", "cx", "cy"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "dist_coeffs", coeffs)

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
    def from_K(
        cls,
        K: np.ndarray,
        width: int,
        height: int,
        distortion: str = "none",
        dist_coeffs: tuple[float, ...] = (),
    ) -> Intrinsics:
        """From a 3x3 calibration matrix (skew must be zero) and the image size."""
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"K must be 3x3, got shape {K.shape}")
        return cls(
            float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height),
            distortion, tuple(dist_coeffs),
        )

    def scaled(self, sx: float, sy: float | None = None) -> Intrinsics:
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

    def resized(self, width: int, height: int) -> Intrinsics:
        """Intrinsics after resizing the image to exactly ``width`` x ``height``."""
        out = self.scaled(width / self.width, height / self.height)
        return replace(out, width=int(width), height=int(height))

    def cropped(self, left: int, top: int, width: int, height: int) -> Intrinsics:
        """Intrinsics of the sub-image [top:top+height, left:left+width]."""
        return replace(self, cx=self.cx - left, cy=self.cy - top, width=int(width), height=int(height))

    def padded(self, left: int, top: int, right: int, bottom: int) -> Intrinsics:
        """Intrinsics after adding borders of the given sizes."""
        return replace(
            self,
            cx=self.cx + left,
            cy=self.cy + top,
            width=self.width + int(left) + int(right),
            height=self.height + int(top) + int(bottom),
        )

    def undistorted(self) -> Intrinsics:
        """The same pinhole camera with its distortion removed (what an undistorted image uses)."""
        return replace(self, distortion="none", dist_coeffs=())

    def undistortion_maps(self, new: Intrinsics | None = None) -> tuple[np.ndarray, np.ndarray, Intrinsics]:
        """cv2.remap maps (x, y float32, each new.height x new.width) from this camera to the pinhole ``new``.

        ``new`` defaults to the same K and size without distortion. The maps are cached and read-only.
        """
        new = self.undistorted() if new is None else new
        if new.is_distorted:
            raise ValueError("the target camera of an undistortion must have no distortion")
        map_x, map_y = _undistortion_maps(self, new)
        return map_x, map_y, new

    def undistort_image(
        self, img: np.ndarray, new: Intrinsics | None = None, interpolation: int = cv2.INTER_LINEAR
    ) -> np.ndarray:
        """Resample an image of this camera into the pinhole ``new`` (default: same K, no distortion).

        Use ``cv2.INTER_NEAREST`` for depth maps so no depth is invented across edges. Pixels that see outside the
        source image are 0.
        """
        if img.shape[:2] != (self.height, self.width):
            raise ValueError(f"image is {img.shape[1]}x{img.shape[0]} but the camera is {self.width}x{self.height}")
        map_x, map_y, _ = self.undistortion_maps(new)
        return cv2.remap(img, map_x, map_y, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def undistort_points(self, points: np.ndarray, new: Intrinsics | None = None) -> np.ndarray:
        """(N, 2) pixel coordinates in this (distorted) image -> (N, 2) pixels of the pinhole ``new``."""
        new = self.undistorted() if new is None else new
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
        dist = np.asarray(self.dist_coeffs, dtype=np.float64)
        if self.distortion == "equidistant":
            out = cv2.fisheye.undistortPoints(pts, self.K, dist, R=np.eye(3), P=new.K, criteria=_POINT_CRITERIA)
        else:
            out = cv2.undistortPoints(pts, self.K, dist, R=np.eye(3), P=new.K, criteria=_POINT_CRITERIA)
        return out.reshape(-1, 2)


@lru_cache(maxsize=8)
def _undistortion_maps(src: Intrinsics, dst: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    size = (dst.width, dst.height)
    dist = np.asarray(src.dist_coeffs, dtype=np.float64)
    if src.distortion == "equidistant":
        map_x, map_y = cv2.fisheye.initUndistortRectifyMap(src.K, dist, np.eye(3), dst.K, size, cv2.CV_32FC1)
    else:
        map_x, map_y = cv2.initUndistortRectifyMap(src.K, dist, np.eye(3), dst.K, size, cv2.CV_32FC1)
    map_x.flags.writeable = False
    map_y.flags.writeable = False
    return map_x, map_y
