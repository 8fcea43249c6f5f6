"""Ray-cast rendering of a synthetic Scene: RGB and metric z-depth for any pinhole camera and pose."""
from __future__ import annotations

from functools import lru_cache

import cv2
import numexpr as ne
import numpy as np
import open3d as o3d

from metricslam.geometry.camera import Intrinsics
from metricslam.io.synthetic.scene import (
    ASPECT,
    COLOUR_A,
    COLOUR_B,
    INV_TEXEL,
    LIT_BACK,
    LIT_FRONT,
    NOISE_AMP,
    NORMAL,
    PATTERN,
    PERIOD,
    U0,
    U_AXIS,
    V0,
    V_AXIS,
    Scene,
)
from metricslam.io.synthetic.texture import PATTERNS, pattern_value

_NOISE = PATTERNS.index("noise")


@lru_cache(maxsize=8)
def camera_rays(intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """(H*W, 1, 3) float32 camera-frame ray directions (x, y, 1), so the hit distance along them is the z-depth,
    and their (H*W,) lengths."""
    if intrinsics.is_distorted:
        raise ValueError("synthetic rendering needs an undistorted pinhole camera; use intrinsics.undistorted()")
    u = (np.arange(intrinsics.width) - intrinsics.cx) / intrinsics.fx
    v = (np.arange(intrinsics.height) - intrinsics.cy) / intrinsics.fy
    rays = np.ones((intrinsics.height, intrinsics.width, 3), np.float32)
    rays[..., 0] = u[None, :]
    rays[..., 1] = v[:, None]
    norm = np.linalg.norm(rays, axis=-1).reshape(-1)
    for a in (rays, norm):
        a.setflags(write=False)
    return rays.reshape(-1, 1, 3), norm


def _pose_table(scene: Scene, R: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Scene.surface with its geometric rows re-expressed for this pose, so that for a hit at distance t along
    camera ray (x, y, 1): dot(normal, ray) = n . (x, y, 1) with n in NORMAL, and the surface coordinate
    u = U0 + t * U_AXIS . (x, y, 1) (likewise v) -- a few multiply-adds per hit instead of 3D points."""
    src = scene.surface
    table = src.copy()
    for rows in (NORMAL, U_AXIS, V_AXIS):
        table[rows] = R.T @ src[rows]
    for rows, const in ((U_AXIS, U0), (V_AXIS, V0)):
        table[const] = src[const] + origin @ src[rows]
    return table


def _shade(scene: Scene, surf: np.ndarray, t: np.ndarray, x: np.ndarray, y: np.ndarray, ray_norm: np.ndarray,
           focal: float) -> np.ndarray:
    """(3, N) linear RGB of each hit: pattern colour x noise brightness x (precomputed) Lambertian lighting.

    surf: the hit triangles' columns of the pose table; t: hit distance (= z-depth); (x, y): camera ray directions.
    """
    f32 = np.float32
    env = {"t": t, "x": x, "y": y, "rn": ray_norm, "inv_f": f32(1.0 / focal), "lo": f32(0.2)}
    env.update(n0=surf[0], n1=surf[1], n2=surf[2])
    nd = ne.evaluate("n0 * x + n1 * y + n2", local_dict=env)  # dot(normal, ray): its sign tells the side seen
    env["nd"] = nd
    # Metres covered by one pixel on the surface (grows at grazing angles, capped).
    footprint = ne.evaluate("t * inv_f / where(abs(nd) > lo * rn, abs(nd) / rn, lo)", local_dict=env)
    uv = []
    for rows, const in ((U_AXIS, U0), (V_AXIS, V0)):
        env.update(a0=surf[rows.start], a1=surf[rows.start + 1], a2=surf[rows.start + 2], c=surf[const])
        uv.append(ne.evaluate("c + t * (a0 * x + a1 * y + a2)", local_dict=env))
    u, v = uv

    noise = scene.noise.sample(u, v, footprint, surf[INV_TEXEL])
    env = {"noise": noise, "h": f32(0.5), "c": f32(0.35), "zero": f32(0), "one": f32(1)}
    # 'noise' materials mix their two colours by the noise itself; patterns overwrite their own pixels.
    mix = ne.evaluate("where(h + c * noise < zero, zero, where(h + c * noise > one, one, h + c * noise))",
                      local_dict=env)
    kind = surf[PATTERN].astype(np.int8)
    for k in np.flatnonzero(np.bincount(kind, minlength=len(PATTERNS))):
        if k == _NOISE:
            continue
        sel = np.flatnonzero(kind == k)
        mix[sel] = pattern_value(int(k), u[sel], v[sel], surf[PERIOD, sel], surf[ASPECT, sel], footprint[sel])

    env.update(nd=nd, front=surf[LIT_FRONT], back=surf[LIT_BACK], amp=surf[NOISE_AMP], mix=mix,
               lo=f32(0.15), hi=f32(1.85))
    lit = "where(nd < zero, front, back) * where(one + amp * noise < lo, lo, where(one + amp * noise > hi, hi, " \
          "one + amp * noise))"
    env["wa"] = ne.evaluate(f"{lit} * (one - mix)", local_dict=env)
    env["wb"] = ne.evaluate(f"{lit} * mix", local_dict=env)
    env.update(a=surf[COLOUR_A], b=surf[COLOUR_B])
    return ne.evaluate("a * wa + b * wb", local_dict=env)


def _sky(scene: Scene, dz: np.ndarray, ray_norm: np.ndarray) -> np.ndarray:
    """(3, N) sky colour, from the horizon colour to the zenith colour with elevation."""
    elevation = np.sqrt(np.clip(dz / ray_norm, 0.0, 1.0))
    horizon = np.asarray(scene.lighting.sky_horizon, np.float32)[:, None]
    zenith = np.asarray(scene.lighting.sky_zenith, np.float32)[:, None]
    return horizon + (zenith - horizon) * elevation


def render(scene: Scene, pose_wc: np.ndarray, intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Render ``scene`` from camera-to-world ``pose_wc`` (OpenCV camera axes: x right, y down, z forward).

    Returns (rgb uint8 HxWx3, depth float32 HxW metres along the optical axis, 0 where nothing was hit or the hit
    lies beyond ``scene.max_depth``).
    """
    h, w = intrinsics.height, intrinsics.width
    pose = np.asarray(pose_wc, np.float64)
    R = pose[:3, :3].astype(np.float32)
    origin = pose[:3, 3].astype(np.float32)
    cam, ray_norm = camera_rays(intrinsics)
    to_world = np.zeros((6, 4), np.float32)  # (x, y, 1) -> (origin, R @ (x, y, 1)) in one pass
    to_world[:3, 3] = origin
    to_world[3:, :3] = R
    rays = cv2.transform(cam, to_world).reshape(-1, 6)
    hits = scene.raycaster.cast_rays(o3d.core.Tensor.from_numpy(rays))
    t_hit = hits["t_hit"].numpy()
    hit = np.isfinite(t_hit)
    idx = np.flatnonzero(hit)
    miss = np.flatnonzero(~hit)

    x, y = cam[:, 0, 0], cam[:, 0, 1]
    colour = np.empty((3, len(rays)), np.float32)  # planar: every channel is a contiguous array
    if len(miss):
        colour[:, miss] = _sky(scene, rays[miss, 5], ray_norm[miss])
    if len(idx):
        tri = hits["primitive_ids"].numpy()[idx].astype(np.intp)  # uint32 indices are slow to gather with
        surf = np.take(_pose_table(scene, R, origin), tri, axis=1)
        colour[:, idx] = _shade(scene, surf, t_hit[idx], x[idx], y[idx], ray_norm[idx],
                                0.5 * (intrinsics.fx + intrinsics.fy))

    depth = np.where(hit & (t_hit <= scene.max_depth), t_hit, 0.0).astype(np.float32)
    planes = cv2.convertScaleAbs(colour, alpha=255.0)  # rounds and saturates to uint8 (colours are >= 0)
    return cv2.merge([p.reshape(h, w) for p in planes]), depth.reshape(h, w)
