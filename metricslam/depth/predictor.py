"""Metric depth from one RGB image with a Metric3D network: the upstream pre/post-processing around the model.

Recipe (spec/FACTS.md 1.2): resize by s = min(H_in / h, W_in / w) keeping the aspect ratio, pad symmetrically to
the network input size with the mean colour, normalise, forward, remove the padding, resize bilinearly back to
the original size, de-canonical transform with the focal length of the resized image (f * s), clamp.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metricslam.depth.cstm import FocalMode, focal_length, from_canonical
from metricslam.depth.models.convnext_hourglass import SIZE_MULTIPLE as CONVNEXT_MULTIPLE
from metricslam.depth.models.metric3d import VARIANTS, VariantInfo, build_metric3d
from metricslam.depth.models.vit_raft_dpt import SIZE_MULTIPLE as VIT_MULTIPLE
from metricslam.device import resolve_device
from metricslam.errors import InputError, MetricSlamError, WeightsError
from metricslam.geometry.camera import Intrinsics

if TYPE_CHECKING:
    from metricslam.depth.openvino_backend import OpenVinoNetwork
from metricslam.weights import (
    load_strict,
    read_checkpoint,
    registry,
    resolve_weights,
    unwrap_state_dict,
    variant_for_file,
)

RGB_MEAN = (123.675, 116.28, 103.53)
RGB_STD = (58.395, 57.12, 57.375)
# Upstream pads the resized uint8 image, so its mean-colour border is the mean rounded to whole values.
PAD_COLOUR = tuple(int(round(c)) for c in RGB_MEAN)
# Sides the networks return at full size: ViT needs a multiple of 28 (patch 14, then 1/2 pooling in the
# decoder), ConvNeXt a multiple of 32.
SIZE_MULTIPLE = {"vit": VIT_MULTIPLE, "convnext": CONVNEXT_MULTIPLE}
BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("fp32", "bf16")


@dataclass
class DepthPrediction:
    """Outputs at the input image's size: depth (metres, float32 HxW), confidence (float32 HxW),
    normals (float32 HxWx3 unit vectors in the camera frame; ViT models only, else None)."""

    depth: np.ndarray
    confidence: np.ndarray
    normals: np.ndarray | None = None


def valid_input_size(variant: str, size: Sequence[int] | None = None) -> tuple[int, int]:
    """The network input size (H, W): the official one, or ``size`` rounded to the nearest valid multiple
    (28 for ViT, 32 for ConvNeXt; at least one multiple)."""
    info = _variant_info(variant)
    if size is None:
        return info.input_size
    if len(size) != 2 or min(size) <= 0:
        raise MetricSlamError(f"input size must be two positive numbers H W, got {list(size)}")
    m = SIZE_MULTIPLE[info.family]
    return tuple(max(m, int(round(s / m)) * m) for s in size)  # type: ignore[return-value]


def _variant_info(variant: str) -> VariantInfo:
    info = VARIANTS.get(variant)
    if info is None:
        raise MetricSlamError(f"unknown Metric3D variant '{variant}'; choose one of {', '.join(VARIANTS)}")
    return info


class Metric3DPredictor:
    """Metric depth (and confidence, normals) for images of any size with a Metric3D network.

    weights: a checkpoint path or registry name (official layout or bare state dict), or a loaded state dict.
    None raises WeightsError unless ``allow_random`` (tests and benchmarks). ``model`` replaces
    build_metric3d(variant) by another network with the same forward contract.

    backend: 'torch', 'openvino' (CPU only; metricslam.depth.openvino_backend) or 'auto' (openvino on a CPU when
    the package is installed, else torch). precision: 'fp32', or 'bf16': faster on CPUs with bfloat16 units, but
    with 8-bit mantissas the depths differ from fp32 (on CUDA torch always runs mixed precision).
    """

    def __init__(
        self,
        variant: str,
        weights: str | os.PathLike | Mapping[str, torch.Tensor] | None,
        device: str | torch.device | None = None,
        input_size: Sequence[int] | None = None,
        *,
        allow_random: bool = False,
        focal_mode: FocalMode = "fx",
        batch_size: int = 4,
        model: nn.Module | None = None,
        backend: str = "torch",
        precision: str = "fp32",
    ):
        self.variant = variant
        self.info = _variant_info(variant)
        self.input_size = valid_input_size(variant, input_size)
        self.device = resolve_device(device)
        self.focal_mode = focal_mode
        self.batch_size = max(1, int(batch_size))
        self.model = build_metric3d(variant) if model is None else model
        self.weights_id = self._load(weights, allow_random)
        self.model.eval().to(self.device)
        self._mean = torch.tensor(RGB_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(RGB_STD, device=self.device).view(1, 3, 1, 1)
        self.backend = resolve_backend(backend, self.device)
        if precision not in PRECISIONS:
            raise MetricSlamError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self._exported: OpenVinoNetwork | None = None  # the OpenVINO network, converted on first use (it takes a minute)

    def _load(self, weights: str | os.PathLike | Mapping[str, torch.Tensor] | None, allow_random: bool) -> str | None:
        """Load the weights; return a string identifying them (None for random weights)."""
        expected = f"Metric3D {self.variant} (official file {self.info.checkpoint})"
        if weights is None:
            if allow_random:
                return None
            raise WeightsError(
                f"no weights given for Metric3D {self.variant}; pass --weights PATH to {self.info.checkpoint} "
                f"or run `metricslam weights download {self.variant}`"
            )
        if isinstance(weights, Mapping):
            state = unwrap_state_dict(weights, "state dict")
            load_strict(self.model, state, "state dict", expected)
            digest = hashlib.sha256()
            for key in sorted(state):
                digest.update(key.encode())
                digest.update(state[key].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            return f"{self.variant}:sd:{digest.hexdigest()[:16]}"
        file = resolve_weights(weights)
        load_strict(self.model, read_checkpoint(file), str(file), expected)
        stat = Path(file).stat()
        return f"{self.variant}:{Path(file).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"

    @property
    def output_id(self) -> str:
        """Everything besides the image and camera that changes the outputs (for cache keys)."""
        return repr((self.variant, self.weights_id, tuple(self.input_size), self.focal_mode, self.backend,
                     self.precision))

    def _autocast(self):
        if self.device.type != "cuda":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                  enabled=self.precision == "bf16")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    def predict(self, rgb: np.ndarray, intrinsics: Intrinsics | np.ndarray) -> DepthPrediction:
        """Metric depth of one RGB uint8 HxWx3 image whose camera is ``intrinsics`` (Intrinsics or a 3x3 K)."""
        return self.predict_batch([rgb], [intrinsics])[0]

    def predict_batch(self, rgbs: Sequence[np.ndarray], intrinsics: Sequence[Intrinsics | np.ndarray]
                      ) -> list[DepthPrediction]:
        """Predictions for many images, in order; images of equal size share network batches."""
        if len(rgbs) != len(intrinsics):
            raise InputError(f"{len(rgbs)} images but {len(intrinsics)} intrinsics; pass one camera per image")
        cameras = [_as_intrinsics(K, rgb, i) for i, (rgb, K) in enumerate(zip(rgbs, intrinsics))]
        for i, (rgb, K) in enumerate(zip(rgbs, cameras)):
            _check_image(rgb, K, i)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(rgbs):
            groups.setdefault(rgb.shape[:2], []).append(i)
        results: list[DepthPrediction | None] = [None] * len(rgbs)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                outputs = self._run([rgbs[i] for i in chunk], [cameras[i] for i in chunk])
                for i, out in zip(chunk, outputs):
                    results[i] = out
        return results  # type: ignore[return-value]

    def _run(self, rgbs: list[np.ndarray], intrinsics: list[Intrinsics]) -> list[DepthPrediction]:
        """One network batch of images that all have the same size."""
        h, w = rgbs[0].shape[:2]
        H, W = self.input_size
        s = min(H / h, W / w)
        rh, rw = int(h * s), int(w * s)
        top, left = (H - rh) // 2, (W - rw) // 2
        canvas = np.empty((len(rgbs), H, W, 3), dtype=np.uint8)
        canvas[:] = PAD_COLOUR
        for b, rgb in enumerate(rgbs):
            canvas[b, top:top + rh, left:left + rw] = cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(canvas).to(self.device).permute(0, 3, 1, 2).float()
        x = (x - self._mean) / self._std
        out = self._forward(x)

        def restore(t: torch.Tensor) -> torch.Tensor:
            t = t[:, :, top:top + rh, left:left + rw].float()
            return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)

        focal = torch.tensor([focal_length(K, self.focal_mode) for K in intrinsics], device=self.device)
        depth = from_canonical(restore(out["prediction"]), focal, s)[:, 0]
        confidence = restore(out["confidence"])[:, 0]
        normals = None
        if "prediction_normal" in out:
            normals = F.normalize(restore(out["prediction_normal"][:, :3]), dim=1).permute(0, 2, 3, 1)
        return [
            DepthPrediction(
                depth=depth[b].cpu().numpy().astype(np.float32),
                confidence=confidence[b].cpu().numpy().astype(np.float32),
                normals=None if normals is None else normals[b].cpu().numpy().astype(np.float32),
            )
            for b in range(len(rgbs))
        ]

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.backend == "openvino":
            if self._exported is None:
                from metricslam.depth.openvino_backend import OpenVinoNetwork, ir_path
                from metricslam.weights import cache_dir

                ir = None
                if self.weights_id is not None:
                    ir = ir_path(cache_dir() / "openvino", self.variant, self.weights_id, self.input_size)
                self._exported = OpenVinoNetwork(self.model, self.input_size, self.precision, ir)
            return self._exported(x)
        with torch.inference_mode(), self._autocast():
            return self.model(x)


def _as_intrinsics(K: Intrinsics | np.ndarray, rgb: np.ndarray, index: int) -> Intrinsics:
    """``K`` as Intrinsics: a 3x3 matrix (pinhole, no skew) is taken for the image's own size."""
    if isinstance(K, Intrinsics):
        return K
    _check_rgb(rgb, index)
    try:
        matrix = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        matrix = np.empty(0)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all() or matrix[0, 1] != 0:
        raise InputError(f"image {index}: intrinsics must be an Intrinsics or a 3x3 K matrix without skew, got "
                         f"{type(K).__name__}; build one with Intrinsics.from_K(K, width, height)")
    h, w = rgb.shape[:2]
    return Intrinsics.from_K(matrix, w, h)


def resolve_backend(backend: str, device: torch.device) -> str:
    """'torch' or 'openvino' for ``backend`` (see Metric3DPredictor) on ``device``."""
    from metricslam.depth import openvino_backend

    if backend == "auto":
        return "openvino" if device.type == "cpu" and openvino_backend.available() else "torch"
    if backend == "openvino":
        if device.type != "cpu":
            raise MetricSlamError(f"the openvino backend runs on the CPU, not {device}; use --device cpu or "
                                  "prior.backend=torch")
        if not openvino_backend.available():
            raise MetricSlamError("the openvino backend needs the openvino package: pip install openvino "
                                  "(or choose prior.backend=torch)")
        return backend
    if backend != "torch":
        raise MetricSlamError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    return backend


def _check_rgb(rgb: np.ndarray, index: int) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        raise InputError(f"image {index}: expected an RGB uint8 HxWx3 array, got {shape}; read it with read_rgb")


def _check_image(rgb: np.ndarray, intrinsics: Intrinsics, index: int) -> None:
    _check_rgb(rgb, index)
    h, w = rgb.shape[:2]
    if (intrinsics.width, intrinsics.height) != (w, h):
        raise InputError(
            f"image {index}: intrinsics are for {intrinsics.width}x{intrinsics.height} but the image is {w}x{h}; "
            f"pass intrinsics.resized({w}, {h})"
        )


def resolve_variant(weights: str | os.PathLike | None, variant: str | None) -> str:
    """The Metric3D variant to build: ``variant`` when given, else the one whose official file (or registry
    name) ``weights`` names; a MetricSlamError asking for --variant when it cannot be told."""
    if variant is not None:
        _variant_info(variant)
        return variant
    if weights is not None:
        named = registry().get(str(weights))
        found = named.variant if named is not None else variant_for_file(weights)
        if found is not None:
            return found
    raise MetricSlamError(
        f"cannot tell the Metric3D variant of '{weights}' from its name; pass --variant (one of {', '.join(VARIANTS)})"
    )
