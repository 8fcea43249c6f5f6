"""Write a run's map products into its folder: the one call the run pipeline makes after SLAM.

    outputs = write_map(rec, run_dir, MappingConfig())   # mesh.ply, mesh_points.ply, cloud.ply, mapping.yaml

mesh.ply: TSDF mesh (vertex colours, normals); mesh_points.ply: the TSDF surface points; cloud.ply: the
multi-view consistent cloud; mapping.yaml: the settings used, read back by ``metricslam mesh`` so that re-meshing
a saved run with no options reproduces the same mesh.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from metricslam.config import load_config, save_config
from metricslam.io.ply import write_ply
from metricslam.mapping.cloud import CloudConfig, consistent_cloud
from metricslam.mapping.tsdf import FusionResult, TSDFConfig, fuse_reconstruction, save_cloud, save_mesh
from metricslam.slam.reconstruction import Reconstruction

MESH_FILE = "mesh.ply"
MESH_POINTS_FILE = "mesh_points.ply"
CLOUD_FILE = "cloud.ply"
MAPPING_CONFIG_FILE = "mapping.yaml"


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
    cloud_path, count = None, 0
    if cfg.consistent_cloud:
        points, colours = consistent_cloud(rec, cfg.cloud)
        cloud_path, count = out / CLOUD_FILE, len(points)
        write_ply(cloud_path, points, colours)
    save_config(cfg, out / MAPPING_CONFIG_FILE)
    return MapOutputs(fusion, out / MESH_FILE, out / MESH_POINTS_FILE, cloud_path, count)
