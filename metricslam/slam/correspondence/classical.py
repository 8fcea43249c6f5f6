"""Classical dense correspondences: OpenCV DIS optical flow sampled on the BA grid, with confidences.

For an edge i -> j the output is, for every grid pixel of frame i, its target coordinates in frame j (grid units)
and a confidence per coordinate built from forward-backward consistency, photometric agreement and image bounds.
Grid pixel (u, v) is the centre of an ``stride`` x ``stride`` block of the processing image (pixel-centre
convention: x_grid = (x + 0.5) / stride - 0.5), so block-averaged flow is the flow of the grid pixel.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import cv2
import numpy as np

from metricslam.geometry.projective import pixel_grid
from metricslam.slam.config import FlowConfig
from metricslam.slam.correspondence.refine import refine_targets

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 grey image from RGB (DIS works on one channel)."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb


class DenseFlow:
    """DIS optical flow with reusable solver objects (creating one costs more than a small flow)."""

    def __init__(self, preset: str):
        if preset not in PRESETS:
            raise ValueError(f"unknown DIS preset '{preset}'; use one of {', '.join(PRESETS)}")
        self._dis = cv2.DISOpticalFlow_create(PRESETS[preset])
        self._dis_init = cv2.DISOpticalFlow_create(PRESETS[preset])
        if hasattr(self._dis_init, "setUseInitialFlow"):  # OpenCV 4; OpenCV 5 uses a given flow as the start
            self._dis_init.setUseInitialFlow(True)

    def __call__(self, img0: np.ndarray, img1: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
        """Flow (H, W, 2) float32 from grey img0 to grey img1, optionally starting from ``init``."""
        if init is None:
            return self._dis.calc(img0, img1, None)
        return self._dis_init.calc(img0, img1, np.ascontiguousarray(init, dtype=np.float32))


def block_mean(x: np.ndarray, stride: int) -> np.ndarray:
    """Average over stride x stride blocks (H, W[, C]) -> (H/stride, W/stride[, C]); partial blocks are dropped."""
    h, w = x.shape[0] // stride, x.shape[1] // stride
    x = x[: h * stride, : w * stride]
    if x.dtype in (np.float32, np.float64) and (x.ndim == 2 or x.shape[2] <= 4):
        # Area interpolation by an integer factor is the exact block mean, and far faster than numpy's reduction.
        return cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA)
    return x.reshape(h, stride, w, stride, *x.shape[2:]).mean(axis=(1, 3))


def _warp(img: np.ndarray, map_xy: np.ndarray) -> np.ndarray:
    return cv2.remap(img, map_xy[..., 0], map_xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@lru_cache(maxsize=8)
def _pixel_grid(height: int, width: int, step: int = 1) -> np.ndarray:
    """(ceil(H/step), ceil(W/step), 2) float32 coordinates (x, y) of every ``step``-th pixel; cached because
    every flow of a run has the same size."""
    grid = (pixel_grid(-(-height // step), -(-width // step)) * step).numpy()
    grid.flags.writeable = False
    return grid


def texture_weight(grey_img: np.ndarray, stride: int, scale: float) -> np.ndarray:
    """Per grid cell (h, w) weight in [0, 1): how well its block's texture constrains flow in every direction."""
    gx = cv2.Sobel(grey_img, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(grey_img, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    xx, yy, xy = block_mean(gx * gx, stride), block_mean(gy * gy, stride), block_mean(gx * gy, stride)
    half_trace = 0.5 * (xx + yy)
    lmin = half_trace - np.sqrt(np.maximum(half_trace**2 - (xx * yy - xy * xy), 0.0))
    return (lmin / (lmin + scale * scale)).astype(np.float32)


class ClassicalCorrespondence:
    """Targets and confidences for graph edges from dense optical flow."""

    reads_colour = False  # flow runs on grey images

    def __init__(self, config: FlowConfig | None = None, stride: int = 8):
        self.config = config or FlowConfig()
        self.stride = stride
        self.filter_flow = DenseFlow(self.config.filter_preset)
        # Tracking asks for the same keyframe's texture on every frame: remember the last image and its weight.
        self._last_texture: tuple[np.ndarray, np.ndarray] | None = None
        # A DIS object keeps its pyramids while it computes: each thread needs its own.
        self._per_thread = threading.local()
        workers = min(self.config.workers, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="flow") if workers > 1 else None

    @property
    def flow(self) -> DenseFlow:
        """The graph-edge flow solver of the calling thread."""
        solver = getattr(self._per_thread, "flow", None)
        if solver is None:
            solver = self._per_thread.flow = DenseFlow(self.config.preset)
        return solver

    def _confidence(self, grey_i: np.ndarray, warped_j: np.ndarray, tgt: np.ndarray, size: tuple[int, int]
                    ) -> np.ndarray:
        """Per-pixel confidence of a flow with targets ``tgt`` from photometric agreement (``warped_j``: image j
        sampled at the targets; ``grey_i`` at the same pixels) and the bounds of the (H, W) image."""
        H, W = size
        photo = np.abs(grey_i.astype(np.float32) - warped_j.astype(np.float32))
        b = self.config.border
        inside = (tgt[..., 0] >= b) & (tgt[..., 0] <= W - 1 - b) & (tgt[..., 1] >= b) & (tgt[..., 1] <= H - 1 - b)
        return inside / (1.0 + (photo / self.config.photo_sigma) ** 2)

    def _sample_step(self) -> int:
        """Confidences are averaged over every other pixel of a block (4x less work; they are smooth weights)."""
        return 2 if self.stride % 2 == 0 else 1

    def _grid_targets(self, fw: np.ndarray) -> np.ndarray:
        """Block-averaged flow as target coordinates of the grid pixels (grid units)."""
        s = self.stride
        flow_grid = block_mean(fw, s)
        h, w = flow_grid.shape[:2]
        return (_pixel_grid(h, w) + flow_grid / s).astype(np.float32)

    def _targets(self, grey_i: np.ndarray, grey_j: np.ndarray, fw: np.ndarray, bw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid targets and confidences of i -> j from the forward flow fw (i -> j) and backward flow bw."""
        q = self._sample_step()
        fw_q = fw[::q, ::q]
        tgt = _pixel_grid(*grey_i.shape, q) + fw_q
        # Two remaps (flow, image) cost a third of stacking both into one image first.
        bw_at_tgt = _warp(bw, tgt)
        # Forward-backward: following bw from the target must come back to the start.
        fb = fw_q + bw_at_tgt
        photo = self._confidence(grey_i[::q, ::q], _warp(grey_j, tgt), tgt, grey_i.shape)
        conf = block_mean((np.exp(-((fb / self.config.fb_sigma) ** 2)) * photo[..., None]).astype(np.float32),
                          self.stride // q)
        if self.config.patch.enabled:
            targets, patch_weight = refine_targets(grey_i, grey_j, self._grid_targets(fw), self.stride,
                                                   self.config.patch, self.config.texture)
            return targets, conf * patch_weight[..., None]
        return self._grid_targets(fw), self._textured(conf, grey_i)

    def _textured(self, conf: np.ndarray, grey_i: np.ndarray) -> np.ndarray:
        tex = self.texture(grey_i)
        return conf if tex is None else conf * tex[..., None]

    def texture(self, grey_i: np.ndarray) -> np.ndarray | None:
        """Texture weight (h, w) of a source image's grid cells, None when disabled."""
        if self.config.texture <= 0:
            return None
        last = self._last_texture  # read once: flow threads may replace it meanwhile
        if last is None or last[0] is not grey_i:
            last = self._last_texture = (grey_i, texture_weight(grey_i, self.stride, self.config.texture))
        return last[1]

    def pair(
        self, grey_i: np.ndarray, grey_j: np.ndarray, init_ij: np.ndarray | None = None, init_ji: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Targets (h, w, 2) in grid units and confidences (h, w, 2) for both edges i -> j and j -> i.

        ``init_ij`` / ``init_ji`` are optional full-resolution initial flows (e.g. predicted by reprojection),
        which let DIS handle baselines larger than its search range.
        """
        return self.pairs([(grey_i, grey_j, init_ij, init_ji)])[0]

    def pairs(self, jobs: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]]
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """``pair`` for each (grey_i, grey_j, init_ij, init_ji) in ``jobs``, concurrently with ``workers`` > 1.

        The two flows of every pair, and then the two target sets, are separate tasks: with whole pairs as tasks,
        the common three-pair batch leaves one core idle for its last pair."""
        run = map if self._pool is None else self._pool.map
        flow_args = [args for gi, gj, init_ij, init_ji in jobs for args in ((gi, gj, init_ij), (gj, gi, init_ji))]
        flows = list(run(lambda args: self.flow(*args), flow_args))
        target_args = [args for (gi, gj, _, _), fw, bw in zip(jobs, flows[0::2], flows[1::2])
                       for args in ((gi, gj, fw, bw), (gj, gi, bw, fw))]
        targets = list(run(lambda args: self._targets(*args), target_args))
        return [(*ij, *ji) for ij, ji in zip(targets[0::2], targets[1::2])]

    def track(self, grey_kf: np.ndarray, grey_frame: np.ndarray, init: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, float]:
        """Correspondences keyframe -> frame for tracking: targets (h, w, 2), weights (h, w, 2) and the mean
        flow magnitude in grid pixels (the motion filter's measure). One fast flow (optionally started from a
        predicted flow ``init``), no backward check."""
        fw = self.filter_flow(grey_kf, grey_frame, init)
        q = self._sample_step()
        tgt = _pixel_grid(*grey_kf.shape, q) + fw[::q, ::q]
        photo = self._confidence(grey_kf[::q, ::q], _warp(grey_frame, tgt), tgt, grey_kf.shape)
        conf = block_mean(photo.astype(np.float32), self.stride // q)
        mean_flow = float(np.linalg.norm(block_mean(fw, self.stride), axis=-1).mean()) / self.stride
        return self._grid_targets(fw), np.repeat(conf[..., None], 2, axis=-1), mean_flow
