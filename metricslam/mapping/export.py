"""Write a run's map products into its folder: the one call the run pipeline makes after SLAM.

    outputs = write_map(rec, run_dir, MappingConfig())   # mesh.ply, mesh_points.ply, cloud.ply, mapping.yaml
    outputs = map_reconstruction(rec, run_dir, config)   # the same, or None (with a warning) when it cannot be built

mesh.ply: TSDF mesh (vertex colours, normals); mesh_points.ply: the TSDF surface points; cloud.ply: the
multi-view consistent cloud; mapping.yaml: the settings used, read back by ``metricslam mesh`` so that re-meshing
a saved run with no options reproduces the same mesh. The file names are those of ``metricslam.io.run_dir``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from metricslam.config import load_config, save_config
from metricslam.errors import MetricSlamError
from metricslam.io.ply import write_ply
from metricslam.io.run_dir import CLOUD_FILE, MAPPING_CONFIG_FILE, MESH_FILE, MESH_POINTS_FILE
from metricslam.mapping.cloud import CloudConfig, consistent_cloud
from metricslam.mapping.tsdf import FusionResult, TSDFConfig, fuse_reconstruction, save_cloud, save_mesh
from metricslam.slam.reconstruction import Reconstruction

log = logging.getLogger(__name__)


@dataclass
class MappingConfig:
    """What ``write_map`` produces and how."""

    enabled: bool = True  # the run pipeline skips mapping when false
    tsdf: TSDFConfig = field(default_factory=TSDFConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    consistent_cloud: bool = True  # also write cloud.ply

    def with_device(self, device: str) -> MappingConfig:
        """A copy that fuses the mesh and builds the cloud on ``device`` (auto, cpu, cuda, cuda:N)."""
        return replace(self, tsdf=replace(self.tsdf, device=device), cloud=replace(self.cloud, device=device))


@dataclass
class MapOutputs:
    fusion: FusionResult
    mesh: Path
    mesh_points: Path
    cloud: Path | None
    cloud_points: int
    cloud_data: tuple[np.ndarray, np.ndarray] | None = None  # the consistent cloud: points (N, 3), uint8 colours
    config: Path | None = None  # mapping.yaml

    @property
    def files(self) -> list[Path]:
        """The files written, in order."""
        return [p for p in (self.mesh, self.mesh_points, self.cloud, self.config) if p is not None]


def load_mapping_config(run_dir: str | os.PathLike | None = None, overrides: list[str] | None = None) -> MappingConfig:
    """Defaults, then RUN_DIR/mapping.yaml when it exists, then ``key=value`` overrides (e.g. tsdf.voxel_size=0.05)."""
    path = Path(run_dir) / MAPPING_CONFIG_FILE if run_dir is not None else None
    return load_config(MappingConfig, path if path is not None and path.is_file() else None, overrides)


def write_map(rec: Reconstruction, out_dir: str | os.PathLike, config: MappingConfig | None = None) -> MapOutputs:
    """Fuse the mesh, build the consistent cloud and write them (atomically) with the settings into ``out_dir``."""
    cfg = config or MappingConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fusion = fuse_reconstruction(rec, cfg.tsdf)
    save_mesh(out / MESH_FILE, fusion.mesh)
    save_cloud(out / MESH_POINTS_FILE, fusion.cloud)
    cloud_path, count, cloud = None, 0, None
    if cfg.consistent_cloud:
        cloud = consistent_cloud(rec, cfg.cloud)
        cloud_path, count = out / CLOUD_FILE, len(cloud[0])
        write_ply(cloud_path, *cloud)
    save_config(cfg, out / MAPPING_CONFIG_FILE)
    return MapOutputs(fusion, out / MESH_FILE, out / MESH_POINTS_FILE, cloud_path, count, cloud,
                      out / MAPPING_CONFIG_FILE)


def rigid_poses(poses: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    """(N,) True where a (N, 4, 4) pose is finite with an orthonormal, right-handed rotation."""
    R = poses[:, :3, :3]
    finite = np.isfinite(poses).all(axis=(1, 2))
    R = np.where(finite[:, None, None], R, np.eye(3))
    orthonormal = np.abs(R.transpose(0, 2, 1) @ R - np.eye(3)).max(axis=(1, 2)) < tol
    return finite & orthonormal & (np.linalg.det(R) > 0)


def map_reconstruction(rec: Reconstruction, out_dir: str | os.PathLike, config: MappingConfig) -> MapOutputs | None:
    """``write_map`` after a SLAM run, or None with a warning when the map cannot be built (keyframe poses that
    are not rigid, too few keyframes, a fusion error): the trajectory is the run's main result and is already
    saved."""
    rigid = rigid_poses(rec.kf_poses_wc)
    if not rigid.all():
        log.warning("mapping skipped: %d of %d keyframe poses are not rigid transforms (first: keyframe %d); the "
                    "SLAM run failed there", int((~rigid).sum()), rec.num_keyframes, int(np.flatnonzero(~rigid)[0]))
        return None
    if rec.num_keyframes < config.tsdf.min_weight:
        log.warning("mapping skipped: too few keyframes (%d; the map keeps surfaces seen by %g or more): the camera "
                    "moved too little for SLAM to add keyframes; use a clip with more camera motion",
                    rec.num_keyframes, config.tsdf.min_weight)
        return None
    try:
        return write_map(rec, out_dir, config)
    except MetricSlamError as exc:
        log.warning("mapping skipped: %s", exc)
        return None
