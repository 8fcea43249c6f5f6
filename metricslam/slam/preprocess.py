"""Bring input frames to the processing resolution and priors onto the BA grid."""
from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np

from metricslam.geometry.camera import Intrinsics
from metricslam.io.frame import Frame
from metricslam.io.images import resize_depth
from metricslam.slam.correspondence.classical import block_mean


def processing_camera(intrinsics: Intrinsics, area: int, stride: int, upscale: bool = False) -> tuple[tuple[int, int], Intrinsics]:
    """Resize target (width, height) for an input camera and the intrinsics after resizing and cropping.

    The image is resized to about ``area`` pixels (aspect kept; never enlarged unless ``upscale``), then its
    right and bottom edges are cropped to a multiple of ``stride`` so the BA grid tiles it exactly.
    """
    s = math.sqrt(area / (intrinsics.width * intrinsics.height))
    if not upscale:
        s = min(s, 1.0)
    w, h = max(stride, round(intrinsics.width * s)), max(stride, round(intrinsics.height * s))
    resized = intrinsics.undistorted().resized(w, h)
    return (w, h), resized.cropped(0, 0, w - w % stride, h - h % stride)


def prepare_frame(frame: Frame, size: tuple[int, int], camera: Intrinsics) -> Frame:
    """The frame resized to ``size`` and cropped to ``camera``'s image (depth by the nearest pixel centre)."""
    w, h = size
    W, H = camera.width, camera.height
    rgb, depth = frame.rgb, frame.depth
    if (frame.width, frame.height) != (w, h):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if w < frame.width else cv2.INTER_LINEAR)
        if depth is not None:
            depth = resize_depth(depth, (w, h))
    rgb = np.ascontiguousarray(rgb[:H, :W])
    depth = None if depth is None else np.ascontiguousarray(depth[:H, :W])
    return replace(frame, rgb=rgb, depth=depth, intrinsics=camera)


def prior_to_grid(
    depth: np.ndarray, confidence: np.ndarray, stride: int, edge_spread: float
) -> tuple[np.ndarray, np.ndarray]:
    """Prior depth (H, W) metres + confidence -> grid inverse depth (h, w) and confidence (h, w).

    Each grid cell takes the confidence-weighted mean inverse depth of its block. Cells that straddle a depth
    edge (large relative spread of inverse depth) get less confidence: their mean is not any surface's depth.
    """
    valid = depth > 0
    inv = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0).astype(np.float32)
    wgt = (confidence * valid).astype(np.float32)
    wsum = block_mean(wgt, stride)
    mean = block_mean(inv * wgt, stride) / np.maximum(wsum, 1e-6)
    sq = block_mean(inv * inv * wgt, stride) / np.maximum(wsum, 1e-6)
    spread = np.sqrt(np.maximum(sq - mean * mean, 0.0)) / np.maximum(mean, 1e-6)
    conf = wsum / (1.0 + (spread / edge_spread) ** 2)
    conf[mean <= 0] = 0
    return mean.astype(np.float32), conf.astype(np.float32)
