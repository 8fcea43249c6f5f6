"""Canonical camera space transformation (CSTM) of Metric3D, shared by inference and training.

Every released model predicts depth as if the image had been taken by a camera of focal length
``CANONICAL_FOCAL``. Training moves labels (or images) into that canonical space; inference moves the
prediction back with the real focal length. Functions accept numpy arrays and torch tensors alike.
"""
from __future__ import annotations

from typing import Literal, TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from metricslam.geometry.camera import Intrinsics

CANONICAL_FOCAL = 1000.0
MAX_DEPTH = 300.0

FocalMode = Literal["fx", "mean"]
Array = TypeVar("Array", np.ndarray, torch.Tensor)
Scalar = float | np.ndarray | torch.Tensor


def focal_length(intrinsics: Intrinsics, mode: FocalMode = "fx") -> float:
    """The focal length the transform uses: fx (upstream hub recipe) or (fx + fy) / 2 (upstream test path)."""
    if mode == "fx":
        return float(intrinsics.fx)
    if mode == "mean":
        return 0.5 * (float(intrinsics.fx) + float(intrinsics.fy))
    raise ValueError(f"focal mode must be 'fx' or 'mean', got {mode!r}")


def _per_sample(factor: Scalar, like: Array) -> Scalar:
    """Reshape a per-sample factor of shape (B,) so it broadcasts against a batch ``like`` of shape (B, ...)."""
    if isinstance(factor, (float, int)) or np.ndim(factor) == 0:
        return float(factor)
    if isinstance(like, torch.Tensor):
        factor = torch.as_tensor(factor, dtype=like.dtype, device=like.device)
    else:
        factor = np.asarray(factor, dtype=like.dtype)
    return factor.reshape(factor.shape + (1,) * (like.ndim - factor.ndim))


def _clip(x: Array, lo: float, hi: float) -> Array:
    return x.clamp(lo, hi) if isinstance(x, torch.Tensor) else np.clip(x, lo, hi)


def to_canonical_label(depth: Array, focal: Scalar, canonical_focal: float = CANONICAL_FOCAL) -> Array:
    """CSTM_label: metric depth labels expressed in the canonical camera (depth * f_c / f); the image is untouched.

    ``focal`` is a number or one value per sample of a batch (shape (B,)).
    """
    denominator = focal if isinstance(focal, torch.Tensor) else np.asarray(focal, dtype=np.float64)
    return depth * _per_sample(canonical_focal / denominator, depth)  # type: ignore[return-value]  # same kind as depth


def from_canonical(
    prediction: Array,
    focal: Scalar,
    resize_ratio: Scalar = 1.0,
    canonical_focal: float = CANONICAL_FOCAL,
    max_depth: float = MAX_DEPTH,
) -> Array:
    """De-canonical transform: metric depth = canonical prediction * (f * s) / f_c, clamped to [0, max_depth].

    ``focal`` belongs to the original image and ``resize_ratio`` is the factor by which that image was resized
    before the network saw it (so f * s is the focal length of the network's input).
    """
    scale: torch.Tensor | np.ndarray
    if isinstance(focal, torch.Tensor) or isinstance(resize_ratio, torch.Tensor):
        scale = torch.as_tensor(focal) * torch.as_tensor(resize_ratio) / canonical_focal
    else:
        scale = np.asarray(focal, dtype=np.float64) * np.asarray(resize_ratio, dtype=np.float64) / canonical_focal
    return _clip(prediction * _per_sample(scale, prediction), 0.0, max_depth)  # type: ignore[type-var, return-value]


def _resize(x: Array, height: int, width: int, nearest: bool) -> Array:
    """Resize an image (numpy HxW[xC] / torch [..., C,] H x W) to ``height`` x ``width``."""
    if isinstance(x, torch.Tensor):
        lead = x.shape[:-2]
        flat = x.reshape((-1, 1) + tuple(x.shape[-2:]))
        src_dtype = flat.dtype
        flat = flat if flat.is_floating_point() else flat.float()
        if nearest:
            out = F.interpolate(flat, size=(height, width), mode="nearest-exact")
        else:
            out = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
        if not src_dtype.is_floating_point:
            out = out.round().clamp(torch.iinfo(src_dtype).min, torch.iinfo(src_dtype).max)
        return out.to(src_dtype).reshape(lead + (height, width))
    flag = cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_LINEAR
    return cv2.resize(x, (width, height), interpolation=flag)


def to_canonical_image(
    image: Array,
    intrinsics: Intrinsics,
    depth: Array | None = None,
    canonical_focal: float = CANONICAL_FOCAL,
    focal_mode: FocalMode = "fx",
) -> tuple[Array, Array | None, Intrinsics]:
    """CSTM_image: resize the image by f_c / f so its focal length becomes canonical.

    The depth label is resized with it (nearest neighbour, so invalid zeros never blend into valid depths)
    but its values are NOT scaled: the scene distance is unchanged, only the camera is. Returns the resized
    image, the resized depth (or None) and the intrinsics of the resized image.
    """
    ratio = canonical_focal / focal_length(intrinsics, focal_mode)
    target = intrinsics.scaled(ratio)
    out = intrinsics.resized(target.width, target.height)
    if isinstance(image, torch.Tensor):
        resized = _resize(image, out.height, out.width, nearest=False)
    else:
        resized = _resize(np.ascontiguousarray(image), out.height, out.width, nearest=False)
    resized_depth = None if depth is None else _resize(depth, out.height, out.width, nearest=True)
    return resized, resized_depth, out
