"""Training checkpoints in the official Metric3D layout, with everything needed to resume exactly.

File contents: 'model_state_dict' (keys 'depth_model.encoder.*' / 'depth_model.decoder.*', as the released
files, so the predictor and build_metric3d load them strictly), 'model' ({'variant', 'small'} to rebuild the
network: metricslam.depth.loading.load_predictor reads it, so loading needs no variant), 'optimizer',
'scheduler', 'scaler', 'step', 'sampler', 'rng' and 'config' (the training config).
"""
from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metricslam.errors import WeightsError
from metricslam.io.atomic import atomic_path


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_plain_to_numpy_state(state["numpy"]))
    random.setstate(_as_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state_to_plain(state: Any) -> list:
    # Plain lists so that the file stays loadable with torch.load(weights_only=True).
    return [state[0], state[1].tolist(), *state[2:]]


def _plain_to_numpy_state(state: list) -> tuple:
    return (state[0], np.asarray(state[1], dtype=np.uint32), *state[2:])


def _as_tuples(x: Any) -> Any:
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` atomically (an interrupted save never leaves a truncated checkpoint)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by the trainer, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found; pass a file written by `metricslam train`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as exc:
        detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise WeightsError(f"{path}: cannot read checkpoint ({detail}); the file is corrupt or truncated") from None
    if not isinstance(state, dict) or "model_state_dict" not in state:
        raise WeightsError(f"{path}: not a metricslam training checkpoint (no model_state_dict)")
    return state

