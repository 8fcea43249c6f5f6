"""Depth maps as pictures: a turbo colour rendering with a labelled colour bar."""
from __future__ import annotations

import cv2
import numpy as np


def colorize_depth(depth: np.ndarray, bar_width: int = 60) -> np.ndarray:
    """RGB turbo rendering of depth (near = blue, far = red, invalid = black) with a labelled colour bar."""
    import matplotlib  # imported here: most callers of this package never draw

    lut = (matplotlib.colormaps["turbo"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    valid = depth > 0
    lo, hi = (float(depth[valid].min()), float(depth[valid].max())) if valid.any() else (0.0, 1.0)
    hi = max(hi, lo + 1e-6)
    index = np.clip((depth - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    image = lut[index]
    image[~valid] = 0
    h = depth.shape[0]
    ramp = np.linspace(255, 0, h).astype(np.uint8)  # far at the top
    bar = np.zeros((h, bar_width, 3), dtype=np.uint8)
    bar[:, : bar_width // 3] = lut[ramp][:, None]
    scale = max(0.3, h / 900)
    for text, y in ((f"{hi:.1f}m", int(14 * scale * 2)), (f"{lo:.1f}m", h - 6)):
        cv2.putText(bar, text, (bar_width // 3 + 2, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return np.concatenate([image, bar], axis=1)
