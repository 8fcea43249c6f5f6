"""A background thread that computes depth priors while tracking goes on.

Jobs run one at a time in submission order. On CUDA the forward runs on its own stream so that it overlaps the
tracker's kernels; on a CPU it shares the cores with tracking (the gain is the time tracking leaves them idle:
single-threaded flow, Python, waiting for images).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import torch

from metricslam.io.frame import Frame

Prior = tuple[np.ndarray, np.ndarray] | None


def prior_device(prior: object) -> torch.device:
    """The device the prior's network runs on (CPU for priors without one)."""
    predictor = getattr(prior, "predictor", None)
    device = getattr(predictor, "device", None)
    return device if isinstance(device, torch.device) else torch.device("cpu")


class PriorWorker:
    """``submit(frame)`` -> a Future of ``prior(frame)``; ``close()`` waits for the running job and stops."""

    def __init__(self, prior):
        self.prior = prior
        self.device = prior_device(prior)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="depth-prior")
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def _run(self, frame: Frame) -> Prior:
        with torch.cuda.stream(self._stream) if self._stream is not None else nullcontext():
            out = self.prior(frame)
        if self._stream is not None:
            self._stream.synchronize()
        return out

    def submit(self, frame: Frame) -> Future:
        return self._pool.submit(self._run, frame)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
