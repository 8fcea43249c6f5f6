"""Device selection: CUDA when present, else CPU; never hard-coded."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device`` as a torch.device; ``None`` or ``"auto"`` picks CUDA if available, else CPU."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
