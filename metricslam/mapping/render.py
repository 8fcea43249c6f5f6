"""Headless software rendering of meshes and point clouds: z-buffer rasterisation in torch (no display, no GPU
needed; runs on the CPU of a server or on CUDA when given that device).

Every primitive (triangle, or a point's square splat) is expanded into the pixels of its bounding box; pixel
centres are at integer coordinates (as ``Intrinsics``); a scatter-min keeps the nearest surface per pixel.
Triangles use perspective-correct interpolation of vertex colours and a headlight Lambert shade.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from metricslam.geometry.camera import Intrinsics

_NEAR = 1e-3  # metres; primitives closer to the camera are not drawn
_CHUNK = 1 << 20  # candidate pixels processed at once (bounds memory to about 100 MB)
MAX_SPLAT_PX = 8


@dataclass
class Rendering:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 z-depth in metres, 0 where nothing was drawn


def _to_camera(points: torch.Tensor, pose_wc: np.ndarray) -> torch.Tensor:
    T = torch.as_tensor(np.linalg.inv(pose_wc), dtype=points.dtype, device=points.device)
    return points @ T[:3, :3].T + T[:3, 3]


def _colours(colours: np.ndarray | None, n: int, device: torch.device) -> torch.Tensor:
    """(n, 3) float colours in [0, 1]; uint8 input is rescaled, None gives light grey."""
    if colours is None or len(colours) == 0:
        return torch.full((n, 3), 0.75, device=device)
    c = torch.as_tensor(np.asarray(colours), device=device)
    return c.float() / 255.0 if c.dtype == torch.uint8 else c.float().clamp(0.0, 1.0)


def _boxes(lo: torch.Tensor, hi: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Chunks of (primitive id, x, y) covering the integer boxes [lo, hi] (inclusive) of every primitive."""
    size = (hi - lo + 1).clamp_min(0)
    area = size[:, 0] * size[:, 1]
    ids = torch.nonzero(area > 0).squeeze(1)
    if ids.numel() == 0:
        return
    cum = torch.cumsum(area[ids], 0)
    start = 0
    while start < ids.numel():
        base = int(cum[start - 1]) if start else 0
        stop = max(int(torch.searchsorted(cum, base + _CHUNK, right=True)), start + 1)
        chunk = ids[start:stop]
        counts = area[chunk]
        prim = torch.repeat_interleave(chunk, counts)
        offsets = torch.cumsum(counts, 0) - counts
        local = torch.arange(int(counts.sum()), device=lo.device) - torch.repeat_interleave(offsets, counts)
        width = size[prim, 0]
        yield prim, lo[prim, 0] + local % width, lo[prim, 1] + local // width
        start = stop


def _rasterise(lo: torch.Tensor, hi: torch.Tensor, height: int, width: int,
               cover: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
               background: tuple[float, float, float], device: torch.device) -> Rendering:
    """Z-buffer over the primitives' boxes; ``cover(prim, x, y)`` -> (inside mask, depth, rgb) per candidate."""
    lo = torch.maximum(lo, torch.zeros_like(lo))
    hi = torch.minimum(hi, torch.tensor([width - 1, height - 1], device=device))
    zbuf = torch.full((height * width,), float("inf"), device=device)
    rgb = torch.tensor(background, dtype=torch.float32, device=device).repeat(height * width, 1)
    for prim, x, y in _boxes(lo, hi):
        inside, z, colour = cover(prim, x, y)
        key = (y * width + x)[inside]
        z, colour = z[inside], colour[inside]
        zbuf.scatter_reduce_(0, key, z, reduce="amin")
        win = z <= zbuf[key]
        rgb[key[win]] = colour[win]
    depth = torch.where(torch.isfinite(zbuf), zbuf, torch.zeros_like(zbuf))
    image = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return Rendering(image.reshape(height, width, 3).cpu().numpy(), depth.reshape(height, width).cpu().numpy())


def render_mesh(vertices: np.ndarray, triangles: np.ndarray, colours: np.ndarray | None, camera: Intrinsics,
                pose_wc: np.ndarray, background: tuple[float, float, float] = (1.0, 1.0, 1.0),
                device: torch.device | str = "cpu") -> Rendering:
    """Shaded image and depth of a triangle mesh (vertex colours float [0, 1] or uint8) seen from ``pose_wc``."""
    device = torch.device(device)
    V = _to_camera(torch.as_tensor(np.asarray(vertices), dtype=torch.float32, device=device), pose_wc)
    F = torch.as_tensor(np.asarray(triangles), dtype=torch.long, device=device).reshape(-1, 3)
    C = _colours(colours, len(V), device)
    P = V[F]  # (T, 3, 3) camera coordinates
    F = F[(P[..., 2] > _NEAR).all(1)]
    P = V[F]
    z = P[..., 2]
    u = camera.fx * P[..., 0] / z + camera.cx
    v = camera.fy * P[..., 1] / z + camera.cy
    area = (u[:, 1] - u[:, 0]) * (v[:, 2] - v[:, 0]) - (u[:, 2] - u[:, 0]) * (v[:, 1] - v[:, 0])
    normal = torch.linalg.cross(P[:, 1] - P[:, 0], P[:, 2] - P[:, 0])
    view = P.mean(1)
    shade = 0.3 + 0.7 * (normal * view).sum(1).abs() / (normal.norm(dim=1) * view.norm(dim=1)).clamp_min(1e-12)
    lo = torch.stack([torch.ceil(u.min(1).values), torch.ceil(v.min(1).values)], 1).long()
    hi = torch.stack([torch.floor(u.max(1).values), torch.floor(v.max(1).values)], 1).long()
    lo[area.abs() < 1e-12] = 1  # degenerate triangles: an empty box
    hi[area.abs() < 1e-12] = 0

    def cover(t: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
        ut, vt, a = u[t], v[t], area[t]
        xf, yf = x.float(), y.float()
        # Barycentric weights from the signed areas of the sub-triangles opposite each vertex.
        w0 = ((ut[:, 1] - xf) * (vt[:, 2] - yf) - (ut[:, 2] - xf) * (vt[:, 1] - yf)) / a
        w1 = ((ut[:, 2] - xf) * (vt[:, 0] - yf) - (ut[:, 0] - xf) * (vt[:, 2] - yf)) / a
        w2 = 1.0 - w0 - w1
        w = torch.stack([w0, w1, w2], 1)
        inside = (w >= -1e-6).all(1)
        pw = w / z[t]  # perspective-correct weights
        inv_z = pw.sum(1)
        colour = (pw[..., None] * C[F[t]]).sum(1) / inv_z[:, None]
        return inside, 1.0 / inv_z, colour * shade[t, None]

    return _rasterise(lo, hi, camera.height, camera.width, cover, background, device)


def render_points(points: np.ndarray, colours: np.ndarray | None, camera: Intrinsics, pose_wc: np.ndarray,
                  radius: float, background: tuple[float, float, float] = (1.0, 1.0, 1.0),
                  device: torch.device | str = "cpu") -> Rendering:
    """Image and depth of points drawn as squares of ``radius`` metres (at least one pixel, at most a few)."""
    device = torch.device(device)
    X = _to_camera(torch.as_tensor(np.asarray(points), dtype=torch.float32, device=device).reshape(-1, 3), pose_wc)
    C = _colours(colours, len(X), device)
    front = X[:, 2] > _NEAR
    X, C = X[front], C[front]
    z = X[:, 2]
    u = camera.fx * X[:, 0] / z + camera.cx
    v = camera.fy * X[:, 1] / z + camera.cy
    r = (camera.fx * radius / z).clamp(0.5, MAX_SPLAT_PX)
    lo = torch.stack([torch.ceil(u - r), torch.ceil(v - r)], 1).long()
    hi = torch.stack([torch.floor(u + r), torch.floor(v + r)], 1).long()

    def cover(p: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
        return torch.ones_like(x, dtype=torch.bool), z[p], C[p]

    return _rasterise(lo, hi, camera.height, camera.width, cover, background, device)


def _look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """T_wc of a camera at ``eye`` looking at ``target`` with image 'up' along ``up`` (OpenCV axes)."""
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(-up, z)
    x /= max(np.linalg.norm(x), 1e-12)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    pose[:3, 3] = eye
    return pose


def overview_camera(points: np.ndarray, poses_wc: np.ndarray, width: int = 640, height: int = 480,
                    elevation_deg: float = 35.0, fov_deg: float = 60.0) -> tuple[Intrinsics, np.ndarray]:
    """A virtual camera (intrinsics, T_wc) looking down at the map from behind the cameras' mean heading.

    'Up' is the mean up direction of the recorded cameras (-y in OpenCV axes), so it works in any world frame.
    The view frames most of the ``points`` and backs off until every recorded camera position is in the image.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    centres = np.asarray(poses_wc)[:, :3, 3]
    centre = np.median(pts, axis=0)
    extent = max(float(np.percentile(np.linalg.norm(pts - centre, axis=1), 90)), 1e-3)
    R = np.asarray(poses_wc)[:, :3, :3]
    up = -R[:, :, 1].mean(0)
    up /= max(np.linalg.norm(up), 1e-12)
    heading = R[:, :, 2].mean(0)
    heading -= heading.dot(up) * up
    if np.linalg.norm(heading) < 1e-6:  # cameras looking straight down or in all directions
        heading = np.cross(up, [1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.cross(up, [0.0, 1.0, 0.0])
    heading /= np.linalg.norm(heading)
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    camera = Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2, width, height)
    base = 1.15 * extent / math.tan(math.radians(fov_deg) / 2 * min(1.0, height / width))
    el = math.radians(elevation_deg)
    direction = -heading * math.cos(el) + up * math.sin(el)
    for factor in (1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0):
        pose = _look_at(centre + direction * base * factor, centre, up)
        T = np.linalg.inv(pose)
        c = centres @ T[:3, :3].T + T[:3, 3]
        uv = c[:, :2] / np.maximum(c[:, 2:], 1e-9) * f + [camera.cx, camera.cy]
        margin = 0.03 * width
        if ((c[:, 2] > 0) & (uv[:, 0] > margin) & (uv[:, 0] < width - margin) & (uv[:, 1] > margin)
                & (uv[:, 1] < height - margin)).all():
            break
    return camera, pose
