"""Ray-cast rendering of a synthetic Scene: RGB and metric z-depth for any pinhole camera and pose."""
from __future__ import annotations

from functools import lru_cache

import numexpr as ne
import numpy as np
import open3d as o3d

from metricslam.geometry.camera import Intrinsics
from metricslam.io.synthetic.scene import (
    ASPECT, COLOUR_A, COLOUR_B, INV_TEXEL, LIT_BACK, LIT_FRONT, NOISE_AMP, NORMAL, PATTERN, PERIOD, U0, U_AXIS, V0,
    V_AXIS, Scene,
)
from metricslam.io.synthetic.texture import PATTERNS, pattern_value

_NOISE = PATTERNS.index("noise")


@lru_cache(maxsize=8)
def camera_rays(intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat (H*W,) float32 x, y of the camera-frame ray directions (x, y, 1), so hit distance = z-depth, and
    the directions' lengths."""
    if intrinsics.is_distorted:
        raise ValueError("synthetic rendering needs an undistorted pinhole camera; use intrinsics.undistorted()")
    u = ((np.arange(intrinsics.width) - intrinsics.cx) / intrinsics.fx).astype(np.float32)
    v = ((np.arange(intrinsics.height) - intrinsics.cy) / intrinsics.fy).astype(np.float32)
    x = np.tile(u, intrinsics.height)
    y = np.repeat(v, intrinsics.width)
    norm = np.sqrt(1 + x * x + y * y)
    for a in (x, y, norm):
        a.setflags(write=False)
    return x, y, norm


def _pose_table(scene: Scene, R: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Scene.surface with its geometric columns re-expressed for this pose, so that for a hit at distance t
    along camera ray (x, y, 1): dot(normal, ray) = n . (x, y, 1) with n in NORMAL, and the surface coordinate
    u = U0 + t * U_AXIS . (x, y, 1) (likewise v) -- a few multiply-adds per hit instead of 3D points."""
    table = scene.surface.copy()
    src = scene.surface
    for cols in (NORMAL, U_AXIS, V_AXIS):
        axes = src[:, cols]
        table[:, cols] = axes[:, :1] * R[0] + axes[:, 1:2] * R[1] + axes[:, 2:3] * R[2]
    for cols, const in ((U_AXIS, U0), (V_AXIS, V0)):
        axes = src[:, cols]
        table[:, const] = src[:, const] + axes[:, 0] * origin[0] + axes[:, 1] * origin[1] + axes[:, 2] * origin[2]
    return table


def _shade(scene: Scene, row: np.ndarray, t: np.ndarray, x: np.ndarray, y: np.ndarray, ray_norm: np.ndarray,
           focal: float) -> np.ndarray:
    """(N, 3) linear RGB of each hit: pattern colour x noise brightness x (precomputed) Lambertian lighting.

    row: the hit triangles' rows of the pose table; t: hit distance (= z-depth); (x, y): camera ray directions.
    """
    env = {"t": t, "x": x, "y": y, "rn": ray_norm, "inv_f": np.float32(1.0 / focal), "lo": np.float32(0.2)}
    env.update(n0=row[:, 0], n1=row[:, 1], n2=row[:, 2])
    nd = ne.evaluate("n0 * x + n1 * y + n2", local_dict=env)  # dot(normal, ray): its sign tells the side seen
    env["nd"] = nd
    # Metres covered by one pixel on the surface (grows at grazing angles, capped).
    footprint = ne.evaluate("t * inv_f / where(abs(nd) > lo * rn, abs(nd) / rn, lo)", local_dict=env)
    uv = []
    for cols, const in ((U_AXIS, U0), (V_AXIS, V0)):
        env.update(a0=row[:, cols.start], a1=row[:, cols.start + 1], a2=row[:, cols.start + 2], c=row[:, const])
        uv.append(ne.evaluate("c + t * (a0 * x + a1 * y + a2)", local_dict=env))
    u, v = uv

    inv_texel = row[:, INV_TEXEL]
    noise = scene.noise.sample(u * inv_texel, v * inv_texel, footprint * inv_texel)

    kind = row[:, PATTERN].astype(np.int8)
    mix = np.clip(np.float32(0.5) + np.float32(0.35) * noise, 0.0, 1.0)  # 'noise' materials mix by the noise
    for k in np.unique(kind):
        if k == _NOISE:
            continue
        sel = np.flatnonzero(kind == k)
        mix[sel] = pattern_value(int(k), u[sel], v[sel], row[sel, PERIOD], row[sel, ASPECT], footprint[sel])

    env = {"nd": nd, "front": row[:, LIT_FRONT], "back": row[:, LIT_BACK], "amp": row[:, NOISE_AMP],
           "noise": noise, "mix": mix, "one": np.float32(1.0), "lo": np.float32(0.15), "hi": np.float32(1.85)}
    lit = ne.evaluate("where(nd < 0, front, back) * where(one + amp * noise < lo, lo, "
                      "where(one + amp * noise > hi, hi, one + amp * noise))", local_dict=env)
    env["lit"] = lit
    out = np.empty((len(t), 3), np.float32)
    for k in range(3):
        env.update(a=row[:, COLOUR_A.start + k], b=row[:, COLOUR_B.start + k])
        out[:, k] = ne.evaluate("(a + (b - a) * mix) * lit", local_dict=env)
    return out


def _sky(scene: Scene, dz: np.ndarray, ray_norm: np.ndarray) -> np.ndarray:
    elevation = np.clip(dz / ray_norm, 0.0, 1.0)[:, None]
    horizon = np.asarray(scene.lighting.sky_horizon, np.float32)
    zenith = np.asarray(scene.lighting.sky_zenith, np.float32)
    return horizon + (zenith - horizon) * np.sqrt(elevation)


def render(scene: Scene, pose_wc: np.ndarray, intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Render ``scene`` from camera-to-world ``pose_wc`` (OpenCV camera axes: x right, y down, z forward).

    Returns (rgb uint8 HxWx3, depth float32 HxW metres along the optical axis, 0 where nothing was hit or the hit
    lies beyond ``scene.max_depth``).
    """
    h, w = intrinsics.height, intrinsics.width
    pose = np.asarray(pose_wc, np.float64)
    R = pose[:3, :3].astype(np.float32)
    origin = pose[:3, 3].astype(np.float32)
    x, y, ray_norm = camera_rays(intrinsics)
    rays = np.empty((len(x), 6), np.float32)
    rays[:, :3] = origin
    for k in range(3):
        env = {"x": x, "y": y, "r0": R[k, 0], "r1": R[k, 1], "r2": R[k, 2]}
        rays[:, 3 + k] = ne.evaluate("r0 * x + r1 * y + r2", local_dict=env)
    hits = scene.raycaster.cast_rays(o3d.core.Tensor(rays))
    t_hit = hits["t_hit"].numpy()
    hit = np.isfinite(t_hit)
    idx = np.flatnonzero(hit)
    miss = np.flatnonzero(~hit)

    colour = np.empty((len(x), 3), np.float32)
    if len(miss):
        colour[miss] = _sky(scene, rays[miss, 5], ray_norm[miss])
    if len(idx):
        row = _pose_table(scene, R, origin)[hits["primitive_ids"].numpy()[idx]]
        colour[idx] = _shade(scene, row, t_hit[idx], x[idx], y[idx], ray_norm[idx],
                             0.5 * (intrinsics.fx + intrinsics.fy))

    depth = np.where(hit & (t_hit <= scene.max_depth), t_hit, 0.0).astype(np.float32)
    rgb = ne.evaluate("where(c > 1, 255, where(c < 0, 0, c * 255 + 0.5))", local_dict={"c": colour})
    return rgb.astype(np.uint8).reshape(h, w, 3), depth.reshape(h, w)
