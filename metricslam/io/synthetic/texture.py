"""Procedural textures: a mip-mapped periodic noise tile and box-filtered periodic patterns.

They are evaluated per 3D hit point, at its coordinates (u, v) in the plane of the hit face (axes taken from the
object's own frame), on flat arrays. Anti-aliasing follows the pixel footprint on the surface
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

    ``grain`` (texels) rolls off the wavelengths longer than it: the noise then has a physical grain size (as
    plaster, asphalt or fabric), so how fine it looks in an image tells metres per pixel; without it the noise
    is self-similar and looks the same from every distance.
    """

    def __init__(self, rng: np.random.Generator, size: int = 1024, beta: float = 1.0, grain: float | None = None):
        white = rng.standard_normal((size, size))
        fy = np.fft.fftfreq(size)[:, None]
        fx = np.fft.rfftfreq(size)[None, :]
        freq = np.hypot(fx, fy)
        amplitude = np.where(freq > 0, np.maximum(freq, 1e-9) ** -beta, 0.0)
        if grain is not None:
            amplitude = amplitude * -np.expm1(-((freq * grain) ** 2))
        tile = np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=(size, size))
        tile = (tile - tile.mean()) / tile.std()

        levels = [tile.astype(np.float32)]
        while levels[-1].shape[0] > 4:
            t = levels[-1]
            levels.append(t.reshape(t.shape[0] // 2, 2, t.shape[1] // 2, 2).mean(axis=(1, 3)))
        self.num_levels = len(levels)
        self.size = size
        # Each level gets a one-texel wrap-around border so bilinear lookups stay seamless across the period.
        # Levels sit side by side: level l (size / 2**l texels) starts at x = size * (2 - 2**(1 - l)) + 2 l.
        padded = [cv2.copyMakeBorder(lv, 1, 1, 1, 1, cv2.BORDER_WRAP) for lv in levels]
        self.atlas = np.concatenate(
            [np.pad(p, ((0, size + 2 - p.shape[0]), (0, 0))) for p in padded], axis=1
        ).astype(np.float32)

    def _lookup(self, u: np.ndarray, v: np.ndarray, k: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Bilinear lookup at (u, v) * k level-0 texels in mip ``level`` (float array of whole numbers)."""
        n = len(u)
        rows = -(-n // _ROW)
        maps = np.zeros((2, rows * _ROW), np.float32)
        env = {"u": u, "v": v, "k": k, "l": level, "n0": np.float32(self.size), "ln2": np.float32(np.log(2.0)),
               "h": np.float32(0.5), "one": np.float32(1.0), "two": np.float32(2.0)}
        env["s"] = ne.evaluate("exp(-l * ln2)", local_dict=env)  # texels of level l per level-0 texel
        # Texel centres of level l sit at (i + 0.5) * 2**l - 0.5 in level-0 texel units; wrap by the level size.
        for out, coord, start in ((maps[0], "u", "n0 * (two - two * s) + two * l + one"), (maps[1], "v", "one")):
            pos = f"(({coord} * k + h) * s - h)"
            ne.evaluate(f"{pos} - floor({pos} / (n0 * s)) * (n0 * s) + {start}", local_dict=env, out=out[:n])
        out = cv2.remap(self.atlas, maps[0].reshape(rows, _ROW), maps[1].reshape(rows, _ROW), cv2.INTER_LINEAR)
        return out.reshape(-1)[:n]

    def sample(self, u: np.ndarray, v: np.ndarray, footprint: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Noise at surface coordinates (u, v) with ``k`` level-0 texels per unit, filtered over a pixel of
        ``footprint`` units (trilinear mip-mapping: the level whose texels match the footprint)."""
        if len(u) == 0:
            return np.zeros(0, np.float32)
        env = {"f": footprint, "k": k, "top": np.float32(self.num_levels - 1), "one": np.float32(1.0),
               "zero": np.float32(0.0), "inv_ln2": np.float32(1 / np.log(2.0)), "last": np.float32(self.num_levels - 2)}
        env["lev"] = ne.evaluate("where(f * k > one, log(f * k) * inv_ln2, zero)", local_dict=env)
        env["lev"] = level = ne.evaluate("where(lev > top, top, lev)", local_dict=env)
        l0 = ne.evaluate("where(floor(lev) > last, last, floor(lev))", local_dict=env)
        a = self._lookup(u, v, k, l0)
        b = self._lookup(u, v, k, l0 + np.float32(1))
        return ne.evaluate("a + (b - a) * (lev - l0)", local_dict={"a": a, "b": b, "lev": level, "l0": l0})


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
