"""The Metric3D network as a SLAM depth prior, with predictions cached on disk so reruns skip the network.

The cache key hashes the image bytes, the variant, the weights' identity, the network input size, the backend and
precision, and the focal length used, so a changed input, checkpoint, setting or camera never reuses a stale
prediction.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metricslam.depth.cstm import focal_length
from metricslam.depth.loading import load_predictor
from metricslam.depth.predictor import Metric3DPredictor
from metricslam.depth.prior_protocol import NETWORK_PRIOR_WEIGHT
from metricslam.errors import MetricSlamError
from metricslam.io.atomic import atomic_path
from metricslam.io.frame import Frame


class Metric3DPrior:
    """``prior(frame)`` / ``prior.predict(frame)`` -> (depth metres float32 HxW, confidence float32 HxW in [0, 1]).

    The network's confidence is a regressed score (upstream trains it towards 1 - relative error), so it is
    clipped to [0, 1]. ``cache_dir`` None disables the disk cache; so do random weights (no stable identity).
    """

    name = "metric3d"
    metric = True
    ba_weight = NETWORK_PRIOR_WEIGHT

    def __init__(self, predictor: Metric3DPredictor, cache_dir: str | os.PathLike | None = None):
        self.predictor = predictor
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.network_calls = 0

    @classmethod
    def from_args(
        cls,
        weights: str | os.PathLike,
        variant: str | None = None,
        device: str | None = None,
        input_size: Sequence[int] | None = None,
        cache_dir: str | os.PathLike | None = None,
        backend: str = "torch",
        precision: str = "fp32",
    ) -> Metric3DPrior:
        """Build the predictor from a checkpoint (path or registry name); the variant is inferred from the
        official file name, or read from a `metricslam train` checkpoint, when not given."""
        predictor = load_predictor(weights, variant, device=device, input_size=input_size, backend=backend,
                                   precision=precision)
        return cls(predictor, cache_dir)

    def cache_key(self, frame: Frame) -> str | None:
        p = self.predictor
        if p.weights_id is None:
            return None
        digest = hashlib.sha256()
        rgb = np.ascontiguousarray(frame.rgb)
        digest.update(repr((rgb.shape, str(rgb.dtype))).encode())
        digest.update(rgb.tobytes())
        focal = focal_length(frame.intrinsics, p.focal_mode)
        digest.update(repr((p.output_id, round(focal, 6))).encode())
        return digest.hexdigest()

    def predict(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        key = self.cache_key(frame) if self.cache_dir is not None else None
        file = None if key is None or self.cache_dir is None else self.cache_dir / f"{key}.npz"
        if file is not None and file.is_file():
            try:
                with np.load(file) as data:
                    return data["depth"], data["confidence"]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                pass  # an unreadable cache entry is recomputed and overwritten
        out = self.predictor.predict(frame.rgb, frame.intrinsics)
        self.network_calls += 1
        depth = out.depth.astype(np.float32)
        confidence = np.clip(out.confidence, 0.0, 1.0).astype(np.float32)
        if file is not None:
            with atomic_path(file) as tmp:
                np.savez_compressed(tmp, depth=depth, confidence=confidence)
        return depth, confidence

    __call__ = predict


def make_metric3d_prior(config) -> Metric3DPrior:
    """The prior for ``--prior metric3d`` from a PriorConfig (weights, variant, input_size, cache_dir, device,
    backend, precision)."""
    if not config.weights:
        raise MetricSlamError(
            "--prior metric3d needs a checkpoint: pass --weights PATH (or a name from `metricslam weights list`)"
        )
    return Metric3DPrior.from_args(config.weights, config.variant, config.device, config.input_size,
                                   config.cache_dir, config.backend, config.precision)
