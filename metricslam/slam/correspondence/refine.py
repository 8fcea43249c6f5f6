"""Patch alignment that refines an edge's grid targets: inverse-compositional Lucas-Kanade with gain and bias.

Dense flow (DIS) fits patches jointly under a smoothness term, so its error is spatially correlated and does not
average out over a keyframe's grid. Here every grid cell's own patch, centred on the cell's centre in the source
image, is aligned to the target image independently, starting from the dense flow's target:

- warp: translation t of the patch (the grid target's position at processing resolution); photometric model
  I_j(x + t) ~ gain * T(x) + bias, fitted in closed form per patch and iteration, so exposure changes between
  keyframes do not move the match;
- inverse compositional: the template T's gradients and its 2x2 Hessian H (Gaussian-windowed) are computed once;
  each iteration samples the target image at the current positions (one cv2.remap for all patches), maps it
  back to the template's brightness, and steps t by -H^-1 sum(grad T (I_w' - T));
- weight: a patch whose H has a small eigenvalue constrains the match in one direction only (an edge) or in
  none (a flat wall); the cell's weight is lmin / (lmin + texture^2) with lmin the smaller eigenvalue of the
  window-normalised H in grey levels per pixel, the same scale as the block texture weight it replaces;
- acceptance: a patch that moves more than ``max_shift`` px from the dense target, leaves the image, or whose
  final normalised cross-correlation with the template is below ``min_ncc`` keeps the dense target and has its
  weight multiplied by ``reject_weight``.
Everything is vectorised over the cells of an edge (numpy + OpenCV, which releases the GIL for the flow threads).
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from metricslam.slam.config import PatchRefineConfig


@lru_cache(maxsize=4)
def _patch_layout(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets (size^2,) in x and y of a patch's pixels from its centre, and their Gaussian window weights."""
    r = size // 2
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    window = np.exp(-(ox * ox + oy * oy) / (2.0 * (size / 3.0) ** 2)).astype(np.float32)
    return ox.reshape(-1), oy.reshape(-1), window.reshape(-1) / window.sum()


def _sample(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` at (N, P) coordinates (borders replicated)."""
    return cv2.remap(img, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _wmean(values: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Window-weighted mean of each row. einsum, not a matrix product: for these thin products BLAS's thread
    hand-offs cost more than the arithmetic."""
    return np.einsum("np,p->n", values, window)


def _standardised(values: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Each row minus its window-weighted mean, divided by its window-weighted standard deviation."""
    mean = _wmean(values, window)
    centred = values - mean[:, None]
    std = np.sqrt(np.maximum(_wmean(centred * centred, window), 1e-6))
    return centred / std[:, None]


def refine_targets(grey_i: np.ndarray, grey_j: np.ndarray, targets: np.ndarray, stride: int,
                   config: PatchRefineConfig, texture: float) -> tuple[np.ndarray, np.ndarray]:
    """Refined grid targets (h, w, 2) of edge i -> j from dense targets (grid units), and each cell's weight
    (h, w) from its patch Hessian (``texture``: grey-level gradient at which it halves; 0 = weight 1)."""
    h, w = targets.shape[:2]
    H, W = grey_i.shape
    ox, oy, window = _patch_layout(config.size)
    img_i = grey_i.astype(np.float32)
    img_j = grey_j.astype(np.float32)
    # Cell centres and dense targets at processing resolution (pixel-centre convention of the grid).
    half = (stride - 1) / 2.0
    vs, us = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = (us * stride + half).reshape(-1), (vs * stride + half).reshape(-1)
    seed = targets.reshape(-1, 2) * stride + half
    px, py = cx[:, None] + ox, cy[:, None] + oy

    template = _sample(img_i, px, py)
    gx = _sample(cv2.Sobel(img_i, cv2.CV_32F, 1, 0, ksize=3, scale=0.125), px, py)
    gy = _sample(cv2.Sobel(img_i, cv2.CV_32F, 0, 1, ksize=3, scale=0.125), px, py)
    # Photometric fit against the template's own zero-mean part: the gradient step must ignore the mean.
    t_mean = _wmean(template, window)
    t_centred = template - t_mean[:, None]
    hxx, hyy, hxy = _wmean(gx * gx, window), _wmean(gy * gy, window), _wmean(gx * gy, window)
    det = hxx * hyy - hxy * hxy
    half_trace = 0.5 * (hxx + hyy)
    lmin = half_trace - np.sqrt(np.maximum(half_trace**2 - det, 0.0))
    solvable = det > 1e-8 * np.maximum(half_trace, 1e-12) ** 2

    t = seed.copy()
    for _ in range(config.iters):
        warped = _sample(img_j, t[:, 0:1] + ox, t[:, 1:2] + oy)
        # Map the target's patch to the template's brightness: warped ~ gain * template + bias.
        w_mean = _wmean(warped, window)
        w_centred = warped - w_mean[:, None]
        gain = _wmean(w_centred * t_centred, window) / np.maximum(_wmean(t_centred * t_centred, window), 1e-6)
        gain = np.where(np.abs(gain) > 1e-3, gain, 1.0)
        error = w_centred / gain[:, None] - t_centred  # in template grey levels
        bx, by = _wmean(gx * error, window), _wmean(gy * error, window)
        step_x = np.where(solvable, (hyy * bx - hxy * by) / np.where(solvable, det, 1.0), 0.0)
        step_y = np.where(solvable, (hxx * by - hxy * bx) / np.where(solvable, det, 1.0), 0.0)
        # Inverse compositional: the template moved by the step, so the target position moves back by it.
        t[:, 0] -= step_x
        t[:, 1] -= step_y
        t[:, 0] = np.clip(t[:, 0], -1.0, W)
        t[:, 1] = np.clip(t[:, 1], -1.0, H)

    final = _sample(img_j, t[:, 0:1] + ox, t[:, 1:2] + oy)
    ncc = _wmean(_standardised(final, window) * _standardised(template, window), window)
    shift = np.hypot(t[:, 0] - seed[:, 0], t[:, 1] - seed[:, 1])
    r = config.size // 2
    inside = (t[:, 0] >= r) & (t[:, 0] <= W - 1 - r) & (t[:, 1] >= r) & (t[:, 1] <= H - 1 - r)
    ok = solvable & inside & (shift <= config.max_shift) & (ncc >= config.min_ncc)
    out = np.where(ok[:, None], (t - half) / stride, targets.reshape(-1, 2)).astype(np.float32)
    weight = lmin / (lmin + texture * texture) if texture > 0 else np.ones_like(lmin)
    weight = np.where(ok, weight, weight * config.reject_weight).astype(np.float32)
    return out.reshape(h, w, 2), weight.reshape(h, w)
