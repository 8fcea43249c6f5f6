"""TSDF fusion of a run's keyframes into a coloured metric mesh (Open3D VoxelBlockGrid, CPU or CUDA).

Usage at the end of a run (or on a saved one, see ``metricslam mesh``)::

    result = fuse_reconstruction(rec, TSDFConfig())       # FusionResult: .mesh, .cloud, settings used
    save_mesh(out_dir / "mesh.ply", result.mesh)
    save_cloud(out_dir / "mesh_points.ply", result.cloud)

The keyframe depth comes from ``TSDFConfig.depth`` (BA depth upsampled, prior, or both: see
``metricslam.mapping.depthmaps``), fused with the final keyframe poses. Voxel size and depth cut-off
come from a preset (``auto`` picks indoor or outdoor from the scene's depth range) unless given explicitly.
The legacy ScalableTSDFVolume returned empty meshes with Open3D 0.20, hence the tensor VoxelBlockGrid.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import open3d as o3d
import open3d.core as o3c
import torch

from metricslam.device import resolve_device
from metricslam.errors import InputError, MetricSlamError
from metricslam.io.atomic import atomic_path
from metricslam.io.ply import write_ply
from metricslam.mapping.depthmaps import KeyframeDepthConfig, keyframe_depth, resolve_source
from metricslam.mapping.presets import choose_preset
from metricslam.slam.reconstruction import Reconstruction

# TSDF band either side of the surface, in voxels: wide enough for depth noise of a few voxels, narrow enough
# not to merge thin structures.
TRUNCATION_VOXELS = 4.0


@dataclass
class TSDFConfig:
    """TSDF fusion settings; None means 'from the preset'."""

    depth: KeyframeDepthConfig = field(default_factory=KeyframeDepthConfig)
    preset: str = "auto"  # auto | indoor | outdoor
    voxel_size: float | None = None  # metres
    truncation: float | None = None  # metres; default TRUNCATION_VOXELS voxels
    max_depth: float | None = None  # metres
    min_weight: float = 1.0  # voxels integrated by fewer keyframes are left out of the mesh
    block_resolution: int = 8  # voxels per side of an Open3D block
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        for name in ("voxel_size", "truncation", "max_depth"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InputError(f"TSDF {name.replace('_', ' ')} must be positive (metres), got {value}")
        if self.min_weight < 0 or self.block_resolution < 1:
            raise InputError("TSDF min_weight must be >= 0 and block_resolution >= 1")


@dataclass
class FusionResult:
    """The fused map and the settings that made it."""

    mesh: o3d.geometry.TriangleMesh  # vertex colours in [0, 1], world frame of the reconstruction
    cloud: o3d.geometry.PointCloud  # the TSDF's zero-crossing points with colours
    source: str
    preset: str
    voxel_size: float
    truncation: float
    max_depth: float
    keyframes: int  # keyframes integrated


def open3d_device(device: str | torch.device | None) -> tuple[torch.device, o3c.Device]:
    """The torch device and the matching Open3D device ('CPU:0' / 'CUDA:n')."""
    dev = resolve_device(device)
    if dev.type == "cuda" and (device in (None, "auto")) and not o3c.cuda.is_available():
        dev = torch.device("cpu")
    if dev.type == "cuda":
        if not o3c.cuda.is_available():
            raise MetricSlamError(f"device '{device}': this Open3D build has no CUDA support; use --device cpu")
        return dev, o3c.Device(f"CUDA:{dev.index or 0}")
    if dev.type != "cpu":
        raise MetricSlamError(f"device '{device}' is not supported by Open3D; use cpu or cuda")
    return dev, o3c.Device("CPU:0")


def fuse_reconstruction(rec: Reconstruction, config: TSDFConfig | None = None) -> FusionResult:
    """Integrate every keyframe with a finite pose (depth from ``config.depth``, colour, final pose) and extract
    the mesh and the surface points."""
    cfg = config or TSDFConfig()
    source = resolve_source(rec, cfg.depth.source)
    preset, scale = choose_preset(rec, cfg.preset)
    voxel = cfg.voxel_size or scale.voxel_size
    trunc = cfg.truncation or TRUNCATION_VOXELS * voxel
    max_depth = cfg.max_depth or scale.max_depth
    tdev, odev = open3d_device(cfg.device)

    vbg = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=((1), (1), (3)), voxel_size=voxel, block_resolution=cfg.block_resolution,
        block_count=20000, device=odev,
    )
    K = o3c.Tensor(rec.intrinsics.K, o3c.float64)
    trunc_voxels = trunc / voxel
    fused = 0
    for k in range(rec.num_keyframes):
        if not np.isfinite(rec.kf_poses_wc[k]).all():
            continue  # a keyframe SLAM lost: nothing to place
        depth_t, _ = keyframe_depth(rec, k, cfg.depth, tdev)
        depth = depth_t.cpu().numpy().astype(np.float32)
        if not np.any((depth > 0) & (depth < max_depth)):
            continue  # Open3D aborts on a frame that touches no block
        depth_img = o3d.t.geometry.Image(o3c.Tensor(depth)).to(odev)
        colour = o3d.t.geometry.Image(o3c.Tensor(rec.kf_images[k].astype(np.float32) / 255.0)).to(odev)
        extrinsic = o3c.Tensor(np.linalg.inv(rec.kf_poses_wc[k]), o3c.float64)
        blocks = vbg.compute_unique_block_coordinates(depth_img, K, extrinsic, 1.0, max_depth, trunc_voxels)
        vbg.integrate(blocks, depth_img, colour, K, extrinsic, 1.0, max_depth, trunc_voxels)
        fused += 1
    if fused == 0:
        raise InputError(f"no keyframe depth within {max_depth:g} m to fuse; check the run or raise --max-depth")
    mesh = vbg.extract_triangle_mesh(weight_threshold=cfg.min_weight).to_legacy()
    cloud = vbg.extract_point_cloud(weight_threshold=cfg.min_weight).to_legacy()
    return FusionResult(mesh, cloud, source, preset, voxel, trunc, max_depth, fused)


def save_mesh(path: str | os.PathLike, mesh: o3d.geometry.TriangleMesh) -> None:
    """Binary PLY with vertex colours and normals, written atomically."""
    with atomic_path(path) as tmp:
        if not o3d.io.write_triangle_mesh(str(tmp), mesh, write_ascii=False, compressed=False):
            raise MetricSlamError(f"{path}: Open3D could not write the mesh; check the folder is writable")


def save_cloud(path: str | os.PathLike, cloud: o3d.geometry.PointCloud) -> None:
    """Binary PLY of the points with uint8 colours (and normals when present), written atomically."""
    points = np.asarray(cloud.points, np.float32)
    colours = (np.clip(np.asarray(cloud.colors), 0.0, 1.0) * 255 + 0.5).astype(np.uint8) if cloud.has_colors() else None
    normals = np.asarray(cloud.normals, np.float32) if cloud.has_normals() else None
    write_ply(path, points, colours, normals)
