"""Procedural solid textures: a mip-mapped periodic noise tile and box-filtered periodic patterns.

Everything is evaluated per hit point on flat arrays. Anti-aliasing follows the pixel footprint on the surface
(metres per pixel): noise picks its mip level from it, patterns are integrated over it, so texture does not
shimmer at distance and optical flow sees stable detail at every range.
"""
from __future__ import annotations

import cv2
import numexpr as ne
import numpy as np

PATTERNS = ("noise", "stripes", "checker", "bricks", "windows")

# cv2.remap refuses maps with a side >= 32767, so flat lookups are folded into rows of this length.
_ROW = 4096


class NoiseTile:
    """Periodic zero-mean, unit-variance multi-scale noise with a mip pyramid held in one atlas image.

    The tile is synthesised in the Fourier domain with amplitude ~ 1/f**beta (beta=1: equal energy per octave),
    so it is seamless and detailed at every scale. Level l of the pyramid averages 2**l x 2**l texels.
    """

    def __init__(self, rng: np.random.Generator, size: int = 1024, beta: float = 1.0):
        white = rng.standard_normal((size, size))
        fy = np.fft.fftfreq(size)[:, None]
        fx = np.fft.rfftfreq(size)[None, :]
        freq = np.hypot(fx, fy)
        amplitude = np.where(freq > 0, np.maximum(freq, 1e-9) ** -beta, 0.0)
        tile = np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=(size, size))
        tile = (tile - tile.mean()) / tile.std()

        levels = [tile.astype(np.float32)]
        while levels[-1].shape[0] > 4:
            t = levels[-1]
            levels.append(t.reshape(t.shape[0] // 2, 2, t.shape[1] // 2, 2).mean(axis=(1, 3)))
        self.num_levels = len(levels)
        # Each level gets a one-texel wrap-around border so bilinear lookups stay seamless across the period.
        padded = [cv2.copyMakeBorder(lv, 1, 1, 1, 1, cv2.BORDER_WRAP) for lv in levels]
        x0 = np.concatenate([[0], np.cumsum([p.shape[1] for p in padded])[:-1]])
        self.atlas = np.zeros((size + 2, sum(p.shape[1] for p in padded)), np.float32)
        for p, x in zip(padded, x0):
            self.atlas[: p.shape[0], x : x + p.shape[1]] = p
        self._sizes = np.array([lv.shape[0] for lv in levels], np.float32)
        self._scales = np.exp2(-np.arange(self.num_levels)).astype(np.float32)
        self._x_starts = (x0 + 1).astype(np.float32)

    def _lookup(self, u: np.ndarray, v: np.ndarray, level: np.ndarray) -> np.ndarray:
        n = len(u)
        rows = -(-n // _ROW)
        mx = np.zeros(rows * _ROW, np.float32)
        my = np.zeros(rows * _ROW, np.float32)
        # Texel centres of level l sit at (i + 0.5) * 2**l - 0.5 in level-0 texel units; x0 skips the border.
        env = {"s": self._scales[level], "n": self._sizes[level], "x0": self._x_starts[level],
               "h": np.float32(0.5), "one": np.float32(1.0)}
        for out, coord, start in ((mx, u, "x0"), (my, v, "one")):
            env["c"] = coord
            ne.evaluate(f"((c + h) * s - h) - floor(((c + h) * s - h) / n) * n + {start}", local_dict=env,
                        out=out[:n])
        out = cv2.remap(self.atlas, mx.reshape(rows, _ROW), my.reshape(rows, _ROW), cv2.INTER_LINEAR)
        return out.reshape(-1)[:n]

    def sample(self, u: np.ndarray, v: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Noise at (u, v) in level-0 texels, filtered over ``footprint`` texels (trilinear mip-mapping)."""
        if len(u) == 0:
            return np.zeros(0, np.float32)
        env = {"f": footprint, "top": np.float32(self.num_levels - 1), "one": np.float32(1.0),
               "inv_ln2": np.float32(1 / np.log(2))}
        level = ne.evaluate("where(f > one, log(f) * inv_ln2, 0 * f)", local_dict=env)
        level = np.minimum(level, env["top"])
        l0 = np.minimum(level.astype(np.int64), self.num_levels - 2)
        a = self._lookup(u, v, l0)
        b = self._lookup(u, v, l0 + 1)
        return ne.evaluate("a + (b - a) * (level - l0)", local_dict={"a": a, "b": b, "level": level,
                                                                     "l0": l0.astype(np.float32)})


def filtered_pulse(x: np.ndarray, width: np.ndarray, duty: float) -> np.ndarray:
    """Box-filtered periodic pulse: the fraction of [x - width/2, x + width/2] (period units) lying in the
    'on' part [k, k + duty) of a period. Exact integral, so it converges to ``duty`` when width >> 1."""
    w = np.maximum(width, 1e-4)

    def integral(y: np.ndarray) -> np.ndarray:
        f = np.floor(y)
        return f * duty + np.minimum(y - f, duty)

    return (integral(x + 0.5 * w) - integral(x - 0.5 * w)) / w


def pattern_value(kind: int, u: np.ndarray, v: np.ndarray, period: np.ndarray, aspect: np.ndarray,
                  footprint: np.ndarray) -> np.ndarray:
    """Mix weight in [0, 1] between a material's two colours for pattern ``PATTERNS[kind]`` (not 'noise').

    u, v: surface coordinates (m); period: pattern period along u (m); aspect: period along v / period along u;
    footprint: pixel size on the surface (m).
    """
    pu = period
    pv = period * aspect
    name = PATTERNS[kind]
    if name == "stripes":
        return filtered_pulse(u / pu, footprint / pu, 0.5)
    if name == "checker":
        a = filtered_pulse(u / pu, footprint / pu, 0.5)
        b = filtered_pulse(v / pv, footprint / pv, 0.5)
        return a + b - 2 * a * b
    if name == "bricks":
        shift = 0.5 * np.mod(np.floor(v / pv), 2)
        brick_u = filtered_pulse(u / pu + shift, footprint / pu, 0.94)
        brick_v = filtered_pulse(v / pv, footprint / pv, 0.88)
        return 1 - brick_u * brick_v
    if name == "windows":
        win_u = filtered_pulse(u / pu - 0.2, footprint / pu, 0.6)
        win_v = filtered_pulse(v / pv - 0.3, footprint / pv, 0.45)
        return win_u * win_v
    raise ValueError(f"pattern '{name}' has no closed form")
