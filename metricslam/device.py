"""Device selection: CUDA when present, else CPU; never hard-coded. A device torch cannot use is a one-line error."""
from __future__ import annotations

import torch

from metricslam.errors import InputError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device`` as a torch.device; ``None`` or ``"auto"`` picks CUDA if available, else CPU.

    InputError when the name is not a device or torch has no such device here (e.g. 'cuda' on a CPU-only build).
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"--device {device}: not a device name; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"--device {device}: torch has no CUDA device here (CPU-only build or no GPU); "
                             "use --device cpu or auto")
        if (dev.index or 0) >= count:
            raise InputError(f"--device {device}: there are only {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {device}: torch has no MPS (Apple GPU) device here; use --device cpu or auto")
    return dev
