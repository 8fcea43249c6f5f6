"""Depth accuracy: AbsRel, SqRel, RMSE, RMSE_log, log10, SILog, d1..d3 (definitions of BTS / Metric3D).

With d = predicted and g = ground-truth depth (metres) over the evaluated pixels:
  abs_rel = mean(|d - g| / g)           sq_rel = mean((d - g)^2 / g)        rmse = sqrt(mean((d - g)^2))
  rmse_log = sqrt(mean((ln d - ln g)^2)) (natural log)                      log10 = mean(|log10 d - log10 g|)
  silog = 100 * sqrt(mean(e^2) - mean(e)^2) with e = ln d - ln g            dk = mean(max(d/g, g/d) < 1.25^k)
Evaluated pixels: finite ground truth with min_depth < g (< max_depth when given), inside the optional crop and
mask. Predictions are clamped to [min_depth, max_depth] first (as BTS does), after the optional median scaling
(d *= median(g) / median(d) over the evaluated pixels, as monodepth2 / Metric3D's "median match").
Crops: 'garg' (KITTI, Garg et al.: rows 0.40810811..0.99189189 H, cols 0.03594771..0.96405229 W) and 'eigen'
(NYU, Eigen et al.: rows 45:471, cols 41:601 of a 480x640 image; other sizes use the same fractions).
Per-image results average each image's metric over images (Metric3D's convention); pooled results compute each
metric once over all pixels of all images.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from metricslam.errors import InputError

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3")
CROPS = ("garg", "eigen")
# Sums over evaluated pixels from which every metric follows; they add up across images for pooled results.
_SUMS = ("n", "abs_rel", "sq_rel", "sq", "sq_log", "abs_log10", "log", "d1", "d2", "d3")

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class DepthEvalSettings:
    min_depth: float = 1e-3
    max_depth: float | None = None
    crop: str | None = None
    median_scaling: bool = False

    def __post_init__(self) -> None:
        if not self.min_depth > 0:
            raise InputError(f"min_depth {self.min_depth} must be > 0 (predictions are clamped to it before logs)")
        if self.max_depth is not None and not self.max_depth > self.min_depth:
            raise InputError(f"max_depth {self.max_depth} must exceed min_depth {self.min_depth}, or be None")
        if self.crop is not None and self.crop not in CROPS:
            raise InputError(f"unknown depth evaluation crop '{self.crop}'; use one of {', '.join(CROPS)} or none")


def crop_mask(height: int, width: int, crop: str | None) -> np.ndarray:
    """Boolean (H, W) mask of the evaluation crop ('garg', 'eigen' or None for the whole image)."""
    mask = np.zeros((height, width), dtype=bool)
    if crop is None:
        mask[:] = True
    elif crop == "garg":
        top, bottom = int(0.40810811 * height), int(0.99189189 * height)
        left, right = int(0.03594771 * width), int(0.96405229 * width)
        mask[top:bottom, left:right] = True
    elif crop == "eigen":
        top, bottom = round(45 / 480 * height), round(471 / 480 * height)
        left, right = round(41 / 640 * width), round(601 / 640 * width)
        mask[top:bottom, left:right] = True
    else:
        raise InputError(f"unknown depth evaluation crop '{crop}'; use one of {', '.join(CROPS)} or none")
    return mask


def _to_numpy(x: ArrayLike) -> np.ndarray:
    """float64 numpy array; leading singleton (batch, channel) axes are dropped, so (1, 1, H, W) gives (H, W)."""
    a = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a


def _valid_pairs(
    pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None, settings: DepthEvalSettings
) -> tuple[np.ndarray, np.ndarray, float]:
    """Prediction and ground truth at the evaluated pixels (flat), and the median-scaling factor applied."""
    d, g = _to_numpy(pred), _to_numpy(gt)
    if d.shape != g.shape or g.ndim != 2:
        raise InputError(
            f"prediction shape {d.shape} differs from ground truth {g.shape}; resize the prediction to the "
            "ground-truth image size before evaluating"
        )
    valid = np.isfinite(g) & (g > settings.min_depth) & crop_mask(g.shape[0], g.shape[1], settings.crop)
    if settings.max_depth is not None:
        valid &= g < settings.max_depth
    if mask is not None:
        valid &= _to_numpy(mask).astype(bool)
    # A non-finite prediction is the method's error, not a reason to skip the pixel: as BTS, NaN and -inf
    # become the nearest admissible depth and +inf the farthest (through the clamp below).
    d, g = np.nan_to_num(d[valid], nan=-np.inf, posinf=np.inf, neginf=-np.inf), g[valid]
    scale = 1.0
    if settings.median_scaling and len(g):
        scale = float(np.median(g) / np.median(d))
        d = d * scale
    upper = np.inf if settings.max_depth is None else settings.max_depth
    return np.clip(d, settings.min_depth, upper), g, scale


def _sums(d: np.ndarray, g: np.ndarray) -> dict[str, float]:
    diff, log_err = d - g, np.log(d) - np.log(g)
    ratio = np.maximum(d / g, g / d)
    return {
        "n": float(len(g)),
        "abs_rel": float(np.sum(np.abs(diff) / g)),
        "sq_rel": float(np.sum(diff**2 / g)),
        "sq": float(np.sum(diff**2)),
        "sq_log": float(np.sum(log_err**2)),
        "abs_log10": float(np.sum(np.abs(log_err)) / np.log(10.0)),
        "log": float(np.sum(log_err)),
        "d1": float(np.sum(ratio < 1.25)),
        "d2": float(np.sum(ratio < 1.25**2)),
        "d3": float(np.sum(ratio < 1.25**3)),
    }


def _metrics(s: dict[str, float]) -> dict[str, float]:
    n = s["n"]
    if n == 0:
        return dict.fromkeys(METRICS, float("nan"))
    mean_log, mean_sq_log = s["log"] / n, s["sq_log"] / n
    return {
        "abs_rel": s["abs_rel"] / n,
        "sq_rel": s["sq_rel"] / n,
        "rmse": float(np.sqrt(s["sq"] / n)),
        "rmse_log": float(np.sqrt(mean_sq_log)),
        "log10": s["abs_log10"] / n,
        # max(., 0): the variance can come out a rounding error below zero when every log error is equal.
        "silog": float(100.0 * np.sqrt(max(mean_sq_log - mean_log**2, 0.0))),
        "d1": s["d1"] / n,
        "d2": s["d2"] / n,
        "d3": s["d3"] / n,
    }


def depth_metrics(
    pred: ArrayLike,
    gt: ArrayLike,
    mask: ArrayLike | None = None,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
    crop: str | None = None,
    median_scaling: bool = False,
) -> dict[str, float]:
    """Metrics of one (H, W) depth map against ground truth (numpy or torch, any device), metres.

    Returns the METRICS plus 'num_pixels' and 'scale' (the median-scaling factor, 1 without it).
    With no evaluated pixel the metrics are NaN and num_pixels is 0.
    """
    settings = DepthEvalSettings(min_depth, max_depth, crop, median_scaling)
    d, g, scale = _valid_pairs(pred, gt, mask, settings)
    return {**_metrics(_sums(d, g)), "num_pixels": len(g), "scale": scale}


class DepthMetricAccumulator:
    """Collects depth metrics over many images: per-image averages and pooled-over-pixels values.

    Settings given here apply to every image; ``add`` may override them for one image by keyword.
    Images without any evaluated pixel are counted in 'num_skipped' and left out of both averages.
    """

    def __init__(
        self,
        min_depth: float = 1e-3,
        max_depth: float | None = None,
        crop: str | None = None,
        median_scaling: bool = False,
    ) -> None:
        self.settings = DepthEvalSettings(min_depth, max_depth, crop, median_scaling)
        self._per_image: list[dict[str, float]] = []
        self._scales: list[float] = []
        self._total = dict.fromkeys(_SUMS, 0.0)
        self._skipped = 0

    def add(self, pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None, **overrides) -> dict[str, float]:
        """Add one image; returns its metrics (as depth_metrics)."""
        d, g, scale = _valid_pairs(pred, gt, mask, replace(self.settings, **overrides))
        sums = _sums(d, g)
        result = {**_metrics(sums), "num_pixels": len(g), "scale": scale}
        if not len(g):
            self._skipped += 1
            return result
        self._per_image.append(result)
        self._scales.append(scale)
        for key, value in sums.items():
            self._total[key] += value
        return result

    def summary(self) -> dict:
        """{'per_image': metrics averaged over images, 'pooled': metrics over all pixels, 'settings': ...}."""
        images = len(self._per_image)
        per_image = {k: float(np.mean([m[k] for m in self._per_image])) if images else float("nan") for k in METRICS}
        return {
            "per_image": {**per_image, "num_images": images, "num_skipped": self._skipped},
            "pooled": {**_metrics(self._total), "num_pixels": int(self._total["n"])},
            "settings": {
                **asdict(self.settings),
                "median_scale_mean": float(np.mean(self._scales)) if images else None,
            },
        }
