"""A simulated zero-shot metric depth network: ground-truth depth corrupted by a realistic error model.

The prediction is  gt * exp(e_blur + g * R) * (1 + scale_bias)  on valid pixels, where
- e_blur = log(blur(gt) / gt): the network smooths depth across discontinuities (large only at depth edges);
- R = low_freq * L + frame_jitter * j + depth_trend * T + noise * s * N: a smooth random distortion field L,
  a per-frame global log-scale j, a systematic trend T in log depth (far things too near or too far), and
  pixel noise N whose local level s varies smoothly over the image;
- g >= 0 is solved per frame by bisection so that AbsRel over the valid pixels equals ``abs_rel`` (AbsRel is
  convex in g and the blur alone stays below the target, so the root is unique); if the blur alone already
  exceeds the target, g = 0;
- scale_bias is a separate per-sequence term applied on top (AbsRel then moves away from the target).
Holes (blobs of invalid pixels) are cut out afterwards; where the ground truth is invalid the prior is too.
The confidence falls near depth edges and where the pixel noise is strong, as a network's would.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_MAX_SOLVE_PIXELS = 65536


@dataclass
class SimulatedPriorConfig:
    """Error model of the simulated metric depth prior (weights are relative; ``abs_rel`` sets the size)."""

    abs_rel: float = 0.08  # AbsRel per frame, before scale_bias
    scale_bias: float = 0.0  # per-sequence multiplicative bias applied on top: depth *= 1 + scale_bias
    frame_jitter: float = 0.5  # weight of the per-frame global log-scale
    low_freq: float = 1.0  # weight of the smooth distortion field
    depth_trend: float = 0.4  # weight of the error growing with log depth
    noise: float = 0.7  # weight of the per-pixel multiplicative noise
    edge_blur: float = 0.01  # blur sigma at depth edges, as a fraction of the image width (0 = off)
    holes: float = 0.03  # fraction of valid pixels made invalid, in blobs
    seed: int = 0


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Unit-variance-ish random field varying over about ``cells`` cells across the wider image side."""
    h, w = shape
    gh, gw = (max(2, round(cells * h / w)), cells) if w >= h else (cells, max(2, round(cells * w / h)))
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _blur_valid(depth: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over valid pixels only (normalised convolution)."""
    weight = cv2.GaussianBlur(valid.astype(np.float32), (0, 0), sigma)
    total = cv2.GaussianBlur(np.where(valid, depth, 0).astype(np.float32), (0, 0), sigma)
    return np.where(weight > 1e-3, total / np.maximum(weight, 1e-3), depth)


def _abs_rel(e_fixed: np.ndarray, r: np.ndarray, gain: float) -> float:
    return float(np.mean(np.abs(np.expm1(e_fixed + gain * r))))


def solve_gain(e_fixed: np.ndarray, r: np.ndarray, target: float, tol: float = 1e-4) -> float:
    """Smallest g >= 0 with mean|exp(e_fixed + g r) - 1| = target (bisection; 0 if already above target)."""
    if _abs_rel(e_fixed, r, 0.0) >= target or not np.any(r):
        return 0.0
    hi = 1.0
    while _abs_rel(e_fixed, r, hi) < target:
        hi *= 2.0
    lo = 0.0
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        if _abs_rel(e_fixed, r, mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class SimulatedMetricDepth:
    """Metric depth 'predictions' with a controlled AbsRel, deterministic given (config.seed, frame_index)."""

    def __init__(self, config: SimulatedPriorConfig | None = None):
        self.config = config or SimulatedPriorConfig()
        if not self.config.abs_rel >= 0:
            raise ValueError(f"abs_rel must be >= 0, got {self.config.abs_rel}")
        if not self.config.scale_bias > -1:
            raise ValueError(f"scale_bias must be > -1, got {self.config.scale_bias}")

    def predict(self, depth_gt: np.ndarray, frame_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(prior depth float32 metres with 0 = invalid, confidence float32 in [0, 1]) for one frame."""
        cfg = self.config
        gt = np.asarray(depth_gt, np.float32)
        if gt.ndim != 2:
            raise ValueError(f"depth must be HxW, got shape {gt.shape}")
        h, w = gt.shape
        valid = np.isfinite(gt) & (gt > 0)
        out_depth = np.zeros((h, w), np.float32)
        out_conf = np.zeros((h, w), np.float32)
        if not valid.any():
            return out_depth, out_conf
        rng = np.random.default_rng([cfg.seed, int(frame_index)])
        log_gt = np.log(np.where(valid, gt, 1.0))

        if cfg.edge_blur > 0:
            e_blur = np.log(np.maximum(_blur_valid(gt, valid, cfg.edge_blur * w), 1e-6)) - log_gt
        else:
            e_blur = np.zeros((h, w), np.float32)

        level = np.exp(0.5 * _smooth_field(rng, (h, w), 3))
        level /= level.min()  # noise level >= 1; the quietest place has level 1
        white = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.7)
        white /= max(float(white.std()), 1e-6)
        trend = log_gt - log_gt[valid].mean()
        trend /= max(float(trend[valid].std()), 1e-6)
        r = (cfg.low_freq * _smooth_field(rng, (h, w), 4) + cfg.frame_jitter * rng.standard_normal()
             + cfg.depth_trend * trend + cfg.noise * level / level[valid].mean() * white)

        holes = _smooth_field(rng, (h, w), 10)
        if cfg.holes > 0:
            valid_out = valid & (holes < np.quantile(holes[valid], 1 - cfg.holes))
        else:
            valid_out = valid

        sel = np.flatnonzero(valid_out)
        if len(sel) > _MAX_SOLVE_PIXELS:
            sel = sel[:: -(-len(sel) // _MAX_SOLVE_PIXELS)]
        gain = solve_gain(e_blur.reshape(-1)[sel], r.reshape(-1)[sel], cfg.abs_rel)

        pred = gt * np.exp(e_blur + gain * r) * (1.0 + cfg.scale_bias)
        out_depth[valid_out] = pred[valid_out]
        edge = np.clip(np.abs(e_blur) / 0.02, 0.0, 1.0)
        conf = (1.0 - 0.8 * edge) / level
        out_conf[valid_out] = np.clip(conf[valid_out], 0.0, 1.0)
        return out_depth, out_conf
