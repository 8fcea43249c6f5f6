"""``metricslam mesh RUN_DIR``: fuse a saved run's keyframes into a mesh (and optionally the consistent cloud).

Settings: defaults, then RUN_DIR/mapping.yaml (what the run used), then the options given here.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from metricslam.cli._options import add_run_parser, run_dir_argument
from metricslam.config import save_config
from metricslam.errors import InputError
from metricslam.io.ply import write_ply
from metricslam.io.run_dir import CLOUD_FILE, MAPPING_CONFIG_FILE, MESH_FILE
from metricslam.mapping.cloud import consistent_cloud
from metricslam.mapping.depthmaps import DEPTH_SOURCES
from metricslam.mapping.export import load_mapping_config
from metricslam.mapping.presets import PRESET_NAMES
from metricslam.mapping.tsdf import fuse_reconstruction, save_mesh
from metricslam.slam.reconstruction import Reconstruction
from metricslam.viz.run_plots import write_run_plots


def run(args: argparse.Namespace) -> int:
    folder = run_dir_argument(args)
    run_dir, rec = folder.path, Reconstruction.load(folder.path)
    out = Path(args.out) if args.out else run_dir / MESH_FILE
    if out.suffix.lower() != ".ply":
        raise InputError(f"{out}: the mesh is written as PLY; give a file name ending in .ply")
    overrides = list(args.set)
    for flag, key, sections in (("voxel", "voxel_size", "tsdf cloud"), ("trunc", "truncation", "tsdf"),
                                ("max_depth", "max_depth", "tsdf cloud"), ("source", "depth.source", "tsdf cloud"),
                                ("preset", "preset", "tsdf"), ("device", "device", "tsdf cloud"),
                                ("min_weight", "min_weight", "tsdf")):
        value = getattr(args, flag)
        if value is not None:
            overrides += [f"{section}.{key}={value}" for section in sections.split()]
    cfg = load_mapping_config(run_dir, overrides)
    start = time.perf_counter()
    result = fuse_reconstruction(rec, cfg.tsdf)  # checks the settings too, before any file is touched
    for target in (out, args.cloud):
        if target is not None and Path(target).exists() and not args.overwrite:
            raise InputError(f"{target}: already exists; pass --overwrite to replace it, or another file name")
    save_mesh(out, result.mesh)
    print(f"mesh: {len(result.mesh.vertices):,} vertices, {len(result.mesh.triangles):,} triangles from "
          f"{result.keyframes} keyframes ({result.source} depth, {result.preset} preset: voxel {result.voxel_size:g} m, "
          f"truncation {result.truncation:g} m, max depth {result.max_depth:g} m) in {time.perf_counter() - start:.1f} s")
    print(f"wrote {out}")
    if args.cloud:
        points, colours = consistent_cloud(rec, cfg.cloud)
        write_ply(args.cloud, points, colours)
        print(f"wrote {args.cloud} ({len(points):,} multi-view consistent points)")
    if _same_file(out, run_dir / MESH_FILE):
        # The run's own mesh changed: its recorded settings and map views follow, so the folder stays one run.
        recorded = load_mapping_config(run_dir)
        cloud_cfg = cfg.cloud if args.cloud and _same_file(Path(args.cloud), run_dir / CLOUD_FILE) else recorded.cloud
        save_config(replace(recorded, tsdf=cfg.tsdf, cloud=cloud_cfg), run_dir / MAPPING_CONFIG_FILE)
        write_run_plots(rec, run_dir, folder.read_ground_truth(), mesh=result.mesh, cloud=folder.read_cloud())
        print(f"updated {run_dir / MAPPING_CONFIG_FILE} and the map views in {run_dir}")
    return 0


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def register(subparsers) -> None:
    p = add_run_parser(subparsers, "mesh", help="TSDF mesh of a saved run",
                       description="Fuse the keyframes of a saved run into a coloured metric mesh (PLY). "
                                   "Defaults come from RUN_DIR/mapping.yaml when the run wrote one.")
    # Values are checked by the config (one-line errors), not by argparse (which prints its usage too).
    p.add_argument("--voxel", metavar="M", help="voxel size in metres (default: from the preset)")
    p.add_argument("--trunc", metavar="M", help="TSDF truncation in metres (default 4 voxels)")
    p.add_argument("--max-depth", metavar="M", help="ignore depth beyond this (metres)")
    p.add_argument("--source", metavar="|".join(DEPTH_SOURCES),
                   help="keyframe depth (default auto: both when the run kept prior depths, else ba)")
    p.add_argument("--preset", metavar="|".join(PRESET_NAMES), help="map scale (default auto, from the depth range)")
    p.add_argument("--min-weight", metavar="N", help="keyframes that must see a voxel (default 1)")
    p.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (Open3D device)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="mapping settings (as in mapping.yaml), e.g. --set tsdf.depth.edge_threshold=0.1 cloud.min_views=3")
    p.add_argument("--out", metavar="FILE", help=f"mesh file (default RUN_DIR/{MESH_FILE}; replacing it also updates "
                   f"RUN_DIR/{MAPPING_CONFIG_FILE} and the map views)")
    p.add_argument("--overwrite", action="store_true", help="replace --out / --cloud files that exist")
    p.add_argument("--cloud", metavar="FILE", help="also write the multi-view consistent point cloud to this PLY "
                                                   "(--voxel, --max-depth, --source and --device apply to it too)")
    p.set_defaults(func=run)
