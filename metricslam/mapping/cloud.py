"""Multi-view consistent point cloud of a run: keyframe pixels whose 3D point other keyframes confirm.

A pixel of keyframe k (depth from ``CloudConfig.depth``, every ``pixel_stride``-th pixel) is back-projected with
the final pose and projected into the ``neighbours`` keyframes before and after k. A neighbour confirms it when
its own depth at that pixel agrees with the point's depth in its camera within ``rel_threshold``; points with
fewer than ``min_views`` confirmations are dropped (outliers, floating edge points, moving objects). The kept
points are averaged per voxel of ``voxel_size``. Usage::

    points, colours = consistent_cloud(rec, CloudConfig())
    write_ply(out_dir / "cloud.ply", points, colours)        # metricslam.io.ply
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from metricslam.device import resolve_device
from metricslam.errors import InputError
from metricslam.mapping.depthmaps import KeyframeDepthConfig, keyframe_depth
from metricslam.mapping.presets import choose_preset
from metricslam.slam.reconstruction import Reconstruction

# Voxel keys are packed into one int64: 21 bits per axis covers +-1M voxels (20 km at 2 cm).
_KEY_BITS = 21


@dataclass
class CloudConfig:
    """Multi-view consistency check and down-sampling of the keyframe points."""

    depth: KeyframeDepthConfig = field(default_factory=KeyframeDepthConfig)
    neighbours: int = 3  # keyframes on each side that are asked to confirm a point
    min_views: int = 2  # confirmations needed to keep a point
    rel_threshold: float = 0.03  # |depth difference| / depth below which a neighbour confirms
    voxel_size: float | None = None  # metres; default: the map preset's voxel
    pixel_stride: int = 2  # use every n-th pixel in each direction
    max_depth: float | None = None  # metres; default: the map preset's
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.neighbours < 1 or self.min_views < 0 or self.pixel_stride < 1:
            raise InputError("cloud: neighbours and pixel_stride must be >= 1 and min_views >= 0")
        if not self.rel_threshold > 0 or (self.voxel_size is not None and not self.voxel_size > 0):
            raise InputError("cloud: rel_threshold and voxel_size must be positive")


def voxel_downsample(points: torch.Tensor, colours: torch.Tensor, voxel: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean point and mean colour (float) per occupied voxel."""
    if len(points) == 0:
        return points, colours
    cell = torch.floor(points / voxel).long() + (1 << (_KEY_BITS - 1))
    key = (cell[:, 0] << (2 * _KEY_BITS)) | (cell[:, 1] << _KEY_BITS) | cell[:, 2]
    _, inverse = torch.unique(key, return_inverse=True)
    n = int(inverse.max()) + 1
    count = torch.bincount(inverse, minlength=n).to(points.dtype)[:, None]
    mean_p = torch.zeros(n, 3, dtype=points.dtype, device=points.device).index_add_(0, inverse, points) / count
    mean_c = torch.zeros(n, 3, dtype=torch.float32, device=points.device).index_add_(0, inverse, colours.float())
    return mean_p, mean_c / count.float()


def _confirmations(points_w: torch.Tensor, poses_cw: torch.Tensor, depths: torch.Tensor, K: torch.Tensor,
                   stride: int, rel: float) -> torch.Tensor:
    """How many of the views (poses_cw (J, 4, 4), subsampled depths (J, h, w)) confirm each world point."""
    J, h, w = depths.shape
    Xc = points_w @ poses_cw[:, :3, :3].transpose(1, 2) + poses_cw[:, None, :3, 3]  # (J, N, 3)
    z = Xc[..., 2]
    front = z > 1e-6
    zs = torch.where(front, z, torch.ones_like(z))
    col = torch.round((K[0] * Xc[..., 0] / zs + K[2]) / stride).long()
    row = torch.round((K[1] * Xc[..., 1] / zs + K[3]) / stride).long()
    inside = front & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    view = torch.arange(J, device=points_w.device)[:, None].expand_as(col)
    d = torch.where(inside, depths[view, row.clamp(0, h - 1), col.clamp(0, w - 1)], torch.zeros_like(z))
    agree = inside & (d > 0) & ((z - d).abs() <= rel * d)
    return agree.sum(0)


def consistent_cloud(rec: Reconstruction, config: CloudConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 3) float32 in the reconstruction's world frame and their colours (N, 3) uint8."""
    cfg = config or CloudConfig()
    device = resolve_device(cfg.device)
    _, scale = choose_preset(rec)
    voxel = cfg.voxel_size or scale.voxel_size
    max_depth = cfg.max_depth or scale.max_depth
    s = cfg.pixel_stride
    cam = rec.intrinsics
    K = torch.tensor(cam.params, dtype=torch.float32, device=device)
    finite = np.isfinite(rec.kf_poses_wc).all(axis=(1, 2))
    poses_wc = torch.as_tensor(np.where(finite[:, None, None], rec.kf_poses_wc, np.eye(4)), dtype=torch.float32,
                               device=device)
    poses_cw = torch.linalg.inv(poses_wc)
    depths = torch.stack([keyframe_depth(rec, k, cfg.depth, device)[0][::s, ::s] for k in range(rec.num_keyframes)])
    depths = torch.where(depths <= max_depth, depths, torch.zeros_like(depths))
    depths[torch.as_tensor(~finite, device=device)] = 0  # keyframes without a pose neither add nor confirm points
    h, w = depths.shape[1:]
    v, u = torch.meshgrid(torch.arange(h, device=device) * s, torch.arange(w, device=device) * s, indexing="ij")
    rays = torch.stack([(u - K[2]) / K[0], (v - K[3]) / K[1], torch.ones(h, w, device=device)], -1)

    kept_p, kept_c = [], []
    for k in range(rec.num_keyframes):
        valid = depths[k] > 0
        if not bool(valid.any()):
            continue
        pts = (rays[valid] * depths[k][valid][:, None]) @ poses_wc[k, :3, :3].T + poses_wc[k, :3, 3]
        others = [j for j in range(k - cfg.neighbours, k + cfg.neighbours + 1) if j != k and 0 <= j < rec.num_keyframes]
        if cfg.min_views > 0:
            if not others:
                continue
            sel = torch.tensor(others, device=device)
            ok = _confirmations(pts, poses_cw[sel], depths[sel], K, s, cfg.rel_threshold) >= cfg.min_views
        else:
            ok = torch.ones(len(pts), dtype=torch.bool, device=device)
        image = torch.as_tensor(rec.kf_images[k], device=device)
        kept_p.append(pts[ok])
        kept_c.append(image[v[valid][ok], u[valid][ok]])
    if not kept_p:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    points, colours = voxel_downsample(torch.cat(kept_p), torch.cat(kept_c), voxel)
    return points.cpu().numpy().astype(np.float32), colours.round().clamp(0, 255).to(torch.uint8).cpu().numpy()
