"""Training transforms that keep depth labels metric (or canonical) and consistent with the image's camera.

Each transform maps (Sample, rng) -> Sample; ``Sample.depth * Sample.depth_unit`` stays the metric z-depth of the
scene seen through ``Sample.intrinsics`` (see data.Sample), which tests check by unprojecting.

- CSTMLabel (CSTM_label, used by the released models): the target becomes the canonical depth, depth * f_c / f.
- CSTMImage (CSTM_image, the paper's variant): the image is resized by f_c / f, the target is not scaled.
- RandomResize: resizes by r keeping the network's (canonical) focal length, so the target is divided by r, as if
  the camera had moved along its optical axis. The recorded intrinsics are the true ones (focal * r).
- RandomCrop: a fixed-size window; where it leaves the image the border is padded with the mean colour and
  marked invalid. Flip, photometric distortion. ToItem turns the sample into tensors and draws the sampling of the
  random-proposal (RPNL) and virtual-normal (VNL) losses from the same per-sample generator.
Order matters: a CSTM transform first, then RandomResize (as upstream), then crop, flip, colour, ToItem.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import cv2
import numpy as np
import torch

from metricslam.depth.cstm import CANONICAL_FOCAL, FocalMode, focal_length, to_canonical_image, to_canonical_label
from metricslam.depth.predictor import PAD_COLOUR, RGB_MEAN, RGB_STD
from metricslam.training.data import Sample

CstmMode = Literal["label", "image", "none"]


def _nearest(x: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a label map without blending neighbours (invalid zeros never mix into valid values)."""
    dtype = x.dtype
    src = x.astype(np.uint8) if dtype == np.bool_ else x
    out = cv2.resize(src, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    return out.astype(dtype)


class CSTMLabel:
    """Canonical label: depth * f_c / f (f from ``focal_mode``); the image is untouched."""

    def __init__(self, canonical_focal: float = CANONICAL_FOCAL, focal_mode: FocalMode = "fx"):
        self.canonical_focal = canonical_focal
        self.focal_mode = focal_mode

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        f = focal_length(s.intrinsics, self.focal_mode)
        depth = to_canonical_label(s.depth, f, self.canonical_focal)
        return s.with_(depth=depth, depth_unit=s.depth_unit * f / self.canonical_focal)


class CSTMImage:
    """Canonical image: resized so its focal length is f_c; the depth map is resized, its values kept."""

    def __init__(self, canonical_focal: float = CANONICAL_FOCAL, focal_mode: FocalMode = "fx"):
        self.canonical_focal = canonical_focal
        self.focal_mode = focal_mode

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        rgb, depth, intr = to_canonical_image(s.rgb, s.intrinsics, s.depth, self.canonical_focal, self.focal_mode)
        # The size is rounded to whole pixels, so the new focal length misses f_c slightly (by up to a few per
        # cent on small images); that residual is moved into the label, which then is exactly canonical.
        residual = self.canonical_focal / focal_length(intr, self.focal_mode)
        out = _resized_labels(s, rgb, depth * np.float32(residual), intr)
        return out.with_(depth_unit=s.depth_unit / residual)


def _resized_labels(s: Sample, rgb: np.ndarray, depth: np.ndarray, intr) -> Sample:
    w, h = intr.width, intr.height
    normal = None if s.normal is None else _nearest(s.normal, w, h)
    return s.with_(rgb=rgb, depth=depth, valid=_nearest(s.valid, w, h) & (depth > 0), intrinsics=intr,
                   normal=normal)


class RandomResize:
    """Resize by a ratio drawn uniformly from ``ratio_range``; the target is divided by the ratio."""

    def __init__(self, ratio_range: Sequence[float] = (0.75, 1.5)):
        lo, hi = float(ratio_range[0]), float(ratio_range[1])
        if not 0 < lo <= hi:
            raise ValueError(f"resize ratio range must satisfy 0 < min <= max, got {list(ratio_range)}")
        self.ratio_range = (lo, hi)

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        r = rng.uniform(*self.ratio_range)
        h, w = s.depth.shape
        width, height = max(1, int(round(w * r))), max(1, int(round(h * r)))
        intr = s.intrinsics.resized(width, height)
        ratio = intr.fx / s.intrinsics.fx  # the exact x ratio after rounding the size
        rgb = cv2.resize(s.rgb, (width, height), interpolation=cv2.INTER_LINEAR)
        depth = _nearest(s.depth, width, height) / np.float32(ratio)
        out = _resized_labels(s, rgb, depth, intr)
        return out.with_(depth_unit=s.depth_unit * ratio)


class RandomCrop:
    """Window of ``size`` (H, W) at a random (or, with ``random=False``, centred) position; padding where the
    window leaves the image: mean colour, invalid labels."""

    def __init__(self, size: Sequence[int], random: bool = True):
        self.size = (int(size[0]), int(size[1]))
        self.random = random

    def _offset(self, have: int, want: int, rng: np.random.Generator) -> int:
        lo, hi = min(0, have - want), max(0, have - want)
        return int(rng.integers(lo, hi + 1)) if self.random else (have - want) // 2

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        H, W = s.depth.shape
        h, w = self.size
        top, left = self._offset(H, h, rng), self._offset(W, w, rng)
        # Overlap of the window [top, top + h) x [left, left + w) with the image, in both frames.
        y0, y1, x0, x1 = max(top, 0), min(top + h, H), max(left, 0), min(left + w, W)
        src = (slice(y0, y1), slice(x0, x1))
        dst = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))

        def window(a: np.ndarray, fill) -> np.ndarray:
            out = np.empty((h, w) + a.shape[2:], dtype=a.dtype)
            out[...] = fill
            out[dst] = a[src]
            return out

        return s.with_(
            rgb=window(s.rgb, PAD_COLOUR),
            depth=window(s.depth, 0),
            valid=window(s.valid, False),
            normal=None if s.normal is None else window(s.normal, 0),
            intrinsics=s.intrinsics.cropped(left, top, w, h),
        )


class RandomFlip:
    """Horizontal mirror with probability ``prob``: principal point and normals' x follow."""

    def __init__(self, prob: float = 0.5):
        self.prob = prob

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.prob:
            return s
        intr = s.intrinsics
        normal = None
        if s.normal is not None:
            normal = s.normal[:, ::-1] * np.array([-1, 1, 1], dtype=np.float32)
        return s.with_(
            rgb=np.ascontiguousarray(s.rgb[:, ::-1]),
            depth=np.ascontiguousarray(s.depth[:, ::-1]),
            valid=np.ascontiguousarray(s.valid[:, ::-1]),
            normal=None if normal is None else np.ascontiguousarray(normal),
            intrinsics=replace(intr, cx=intr.width - 1 - intr.cx),
        )


@dataclass
class PhotometricConfig:
    prob: float = 0.5  # each distortion is applied with this probability
    brightness: float = 0.2  # gain in [1 - b, 1 + b]
    contrast: float = 0.2
    saturation: float = 0.2
    hue_deg: float = 8.0
    gamma: float = 0.2


class PhotometricDistortion:
    """Colour changes only (labels untouched): brightness, contrast, saturation, hue, gamma, in random order."""

    def __init__(self, cfg: PhotometricConfig | None = None):
        self.cfg = cfg or PhotometricConfig()

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        c = self.cfg
        img = s.rgb.astype(np.float32) / 255.0
        ops = rng.permutation(5)
        draws = rng.random(5) < c.prob
        factors = rng.uniform(-1.0, 1.0, 5).astype(np.float32)
        for op in ops:
            if not draws[op]:
                continue
            t = float(factors[op])
            if op == 0:
                img = img * (1 + c.brightness * t)
            elif op == 1:
                img = (img - img.mean()) * (1 + c.contrast * t) + img.mean()
            elif op == 2:
                grey = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
                img = grey[..., None] + (img - grey[..., None]) * (1 + c.saturation * t)
            elif op == 3:
                hsv = cv2.cvtColor(np.clip(img, 0, 1), cv2.COLOR_RGB2HSV)
                hsv[..., 0] = np.mod(hsv[..., 0] + c.hue_deg * t, 360.0)
                img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
            else:
                img = np.clip(img, 0, 1) ** (1 + c.gamma * t)
        return s.with_(rgb=np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8))


class ToItem:
    """Sample -> dict of tensors for the trainer, with the per-sample sampling of the RPNL and VNL losses.

    Keys: image (3,H,W) normalised, depth (1,H,W) target, valid (1,H,W) bool, intrinsics (4,) fx fy cx cy,
    depth_unit (), normal (3,H,W) and normal_valid (1,H,W) (all False without normals), rpnl_boxes (M+1, 4)
    [top, left, height, width] with the whole image last, vnl_triplets (N, 3) flat pixel indices of valid pixels.
    """

    def __init__(self, rpnl_crops: int = 20, rpnl_side: Sequence[float] = (0.125, 0.5), vnl_triplets: int = 1000):
        self.rpnl_crops = int(rpnl_crops)
        self.rpnl_side = (float(rpnl_side[0]), float(rpnl_side[1]))
        self.vnl_triplets = int(vnl_triplets)

    def boxes(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        side = rng.uniform(*self.rpnl_side, size=(self.rpnl_crops, 2))
        hw = np.maximum(1, np.round(side * [height, width])).astype(np.int64)
        top = np.floor(rng.random(self.rpnl_crops) * (height - hw[:, 0] + 1)).astype(np.int64)
        left = np.floor(rng.random(self.rpnl_crops) * (width - hw[:, 1] + 1)).astype(np.int64)
        boxes = np.stack([top, left, hw[:, 0], hw[:, 1]], axis=1)
        return np.concatenate([boxes, [[0, 0, height, width]]]).astype(np.int64)

    def triplets(self, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pool = np.flatnonzero(valid)
        if len(pool) < 3:
            return np.zeros((self.vnl_triplets, 3), dtype=np.int64)
        return rng.choice(pool, size=(self.vnl_triplets, 3)).astype(np.int64)

    def __call__(self, s: Sample, rng: np.random.Generator) -> dict:
        h, w = s.depth.shape
        mean = np.asarray(RGB_MEAN, dtype=np.float32)
        std = np.asarray(RGB_STD, dtype=np.float32)
        image = (s.rgb.astype(np.float32) - mean) / std
        valid = s.valid & (s.depth > 0)
        normal = np.zeros((h, w, 3), np.float32) if s.normal is None else s.normal
        i = s.intrinsics
        return {
            "image": torch.from_numpy(image.transpose(2, 0, 1).copy()),
            "depth": torch.from_numpy(np.where(valid, s.depth, 0).astype(np.float32)[None]),
            "valid": torch.from_numpy(valid[None].copy()),
            "intrinsics": torch.tensor([i.fx, i.fy, i.cx, i.cy], dtype=torch.float32),
            "depth_unit": torch.tensor(s.depth_unit, dtype=torch.float32),
            "normal": torch.from_numpy(normal.transpose(2, 0, 1).copy()),
            "normal_valid": torch.from_numpy((np.abs(normal).sum(axis=2) > 0.5)[None] & valid[None]),
            "rpnl_boxes": torch.from_numpy(self.boxes(h, w, rng)),
            "vnl_triplets": torch.from_numpy(self.triplets(valid, rng)),
        }


class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator):
        for t in self.transforms:
            sample = t(sample, rng)
        return sample


@dataclass
class AugmentConfig:
    resize_range: tuple[float, float] = (0.75, 1.5)
    random_crop: bool = True  # False: centred crops (overfitting checks, evaluation-like training)
    flip_prob: float = 0.5
    photometric: bool = True
    photometric_cfg: PhotometricConfig = field(default_factory=PhotometricConfig)


def build_pipeline(cstm: CstmMode, crop_size: Sequence[int], augment: AugmentConfig, to_item: ToItem,
                   focal_mode: FocalMode = "fx") -> Compose:
    """The training pipeline for a CSTM mode ('label', 'image' or 'none')."""
    steps: list = []
    if cstm == "label":
        steps.append(CSTMLabel(focal_mode=focal_mode))
    elif cstm == "image":
        steps.append(CSTMImage(focal_mode=focal_mode))
    elif cstm != "none":
        raise ValueError(f"CSTM mode must be 'label', 'image' or 'none', got {cstm!r}")
    if tuple(augment.resize_range) != (1.0, 1.0):
        steps.append(RandomResize(augment.resize_range))
    steps.append(RandomCrop(crop_size, random=augment.random_crop))
    if augment.flip_prob > 0:
        steps.append(RandomFlip(augment.flip_prob))
    if augment.photometric:
        steps.append(PhotometricDistortion(augment.photometric_cfg))
    steps.append(to_item)
    return Compose(steps)
