"""Ray-cast rendering of a synthetic Scene: RGB and metric z-depth for any pinhole camera and pose."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import open3d as o3d

from metricslam.geometry.camera import Intrinsics
from metricslam.io.synthetic.scene import Scene
from metricslam.io.synthetic.texture import PATTERNS, pattern_value

_NOISE = PATTERNS.index("noise")


@lru_cache(maxsize=8)
def camera_rays(intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Flat (H*W,) float32 x and y of the camera-frame ray directions (x, y, 1), so hit distance = z-depth."""
    if intrinsics.is_distorted:
        raise ValueError("synthetic rendering needs an undistorted pinhole camera; use intrinsics.undistorted()")
    u = ((np.arange(intrinsics.width) - intrinsics.cx) / intrinsics.fx).astype(np.float32)
    v = ((np.arange(intrinsics.height) - intrinsics.cy) / intrinsics.fy).astype(np.float32)
    x = np.tile(u, intrinsics.height)
    y = np.repeat(v, intrinsics.width)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _dot(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> np.ndarray:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _surface_uv(scene: Scene, obj: np.ndarray, p: tuple[np.ndarray, ...], n: tuple[np.ndarray, ...]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (m) in the plane of each hit face, taken in the object's own frame (boxes are axis-aligned
    there): drop the local axis most parallel to the normal."""
    yaw = scene.yaw[obj]
    c, s = np.cos(yaw), np.sin(yaw)
    origin = scene.origin[obj]
    dx, dy = p[0] - origin[:, 0], p[1] - origin[:, 1]
    lx, ly, lz = c * dx + s * dy, c * dy - s * dx, p[2] - origin[:, 2]
    nx, ny, nz = np.abs(c * n[0] + s * n[1]), np.abs(c * n[1] - s * n[0]), np.abs(n[2])
    along_x = (nx >= ny) & (nx >= nz)
    along_z = ~along_x & (nz >= ny)
    return np.where(along_x, ly, lx), np.where(along_z, ly, lz)


def _shade(scene: Scene, obj: np.ndarray, p: tuple[np.ndarray, ...], n: tuple[np.ndarray, ...],
           d: tuple[np.ndarray, ...], depth: np.ndarray, focal: float) -> np.ndarray:
    """(N, 3) linear RGB in [0, 1] of each hit: pattern colour x noise brightness x Lambertian lighting."""
    n_dot_d = _dot(n, d)
    cos_view = np.abs(n_dot_d) / np.sqrt(_dot(d, d))
    # Metres covered by one pixel on the surface (grows at grazing angles, capped).
    footprint = depth / focal / np.maximum(cos_view, 0.2)

    u, v = _surface_uv(scene, obj, p, n)
    texel = scene.texel[obj]
    offset = scene.uv_offset[obj]
    noise = scene.noise.sample(u / texel + offset[:, 0], v / texel + offset[:, 1], footprint / texel)

    kind = scene.pattern[obj]
    mix = np.clip(0.5 + 0.35 * noise, 0.0, 1.0)  # 'noise' materials mix their colours by the noise itself
    for k in np.unique(kind):
        if k == _NOISE:
            continue
        sel = np.flatnonzero(kind == k)
        o = obj[sel]
        mix[sel] = pattern_value(int(k), u[sel], v[sel], scene.period[o], scene.aspect[o], footprint[sel])

    light = scene.lighting
    flip = np.where(n_dot_d > 0, -1.0, 1.0).astype(np.float32)  # shade the side facing the camera
    intensity = np.full(len(obj), light.ambient, np.float32)
    for direction, weight in zip(light.directions, light.weights):
        intensity += weight * np.maximum(flip * _dot(n, direction), 0.0)
    intensity *= np.clip(1.0 + scene.noise_amp[obj] * noise, 0.15, 1.85)

    a, b = scene.colour_a[obj], scene.colour_b[obj]
    return (a + (b - a) * mix[:, None]) * intensity[:, None]


def _sky(scene: Scene, d: tuple[np.ndarray, ...]) -> np.ndarray:
    elevation = np.clip(d[2] / np.sqrt(_dot(d, d)), 0.0, 1.0)[:, None]
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
    x, y = camera_rays(intrinsics)
    rays = np.empty((len(x), 6), np.float32)
    rays[:, :3] = origin
    for k in range(3):
        rays[:, 3 + k] = R[k, 0] * x + R[k, 1] * y + R[k, 2]
    hits = scene.raycaster.cast_rays(o3d.core.Tensor(rays))
    t_hit = hits["t_hit"].numpy()
    hit = np.isfinite(t_hit)
    idx = np.flatnonzero(hit)
    miss = np.flatnonzero(~hit)

    colour = np.empty((len(x), 3), np.float32)
    if len(miss):
        colour[miss] = _sky(scene, tuple(rays[miss, 3 + k] for k in range(3)))
    if len(idx):
        obj = scene.triangle_object[hits["primitive_ids"].numpy()[idx]]
        normals = hits["primitive_normals"].numpy()[idx]
        t = t_hit[idx]
        d = tuple(rays[idx, 3 + k] for k in range(3))
        p = tuple(origin[k] + t * d[k] for k in range(3))
        n = tuple(normals[:, k] for k in range(3))
        colour[idx] = _shade(scene, obj, p, n, d, t, 0.5 * (intrinsics.fx + intrinsics.fy))

    depth = np.where(hit & (t_hit <= scene.max_depth), t_hit, 0.0).astype(np.float32)
    rgb = np.clip(colour * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return rgb.reshape(h, w, 3), depth.reshape(h, w)
