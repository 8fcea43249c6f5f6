"""All pictures of a run, written into its folder; ``metricslam plot RUN_DIR`` redraws them from a saved run.

    write_run_plots(rec, run_dir, gt=gt_trajectory)      # after write_map, so the mesh and cloud are drawn

trajectory.png (top view, ``metricslam.viz.trajectory``), translation_error.png (with ground truth),
keyframes.png (image / prior depth / BA depth / confidence), map_views.png (rendered mesh and cloud, read from
the run folder's mesh.ply and cloud.ply unless given). Ground truth given here is also saved as
groundtruth_tum.txt so a later ``metricslam plot`` finds it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import open3d as o3d

from metricslam.errors import InputError
from metricslam.io.trajectory import Trajectory, read_trajectory, write_tum
from metricslam.mapping.export import CLOUD_FILE, MESH_FILE
from metricslam.slam.reconstruction import Reconstruction
from metricslam.viz.figures import plot_keyframe_montage, plot_map_views, plot_translation_error
from metricslam.viz.trajectory import plot_trajectory_top

GT_FILE = "groundtruth_tum.txt"
PLOT_FILES = {"trajectory": "trajectory.png", "error": "translation_error.png", "keyframes": "keyframes.png",
              "map": "map_views.png"}


def find_run_gt(run_dir: str | os.PathLike) -> Trajectory | None:
    """The ground truth saved with a run (groundtruth_tum.txt), or None."""
    path = Path(run_dir) / GT_FILE
    return read_trajectory(path, "tum") if path.is_file() else None


def _read_cloud(path: Path) -> tuple[np.ndarray, np.ndarray | None] | None:
    if not path.is_file():
        return None
    pcd = o3d.io.read_point_cloud(str(path))
    if not pcd.has_points():
        raise InputError(f"{path}: no points could be read; delete it or re-run 'metricslam mesh'")
    colours = (np.asarray(pcd.colors) * 255 + 0.5).astype(np.uint8) if pcd.has_colors() else None
    return np.asarray(pcd.points), colours


def _read_mesh(path: Path) -> o3d.geometry.TriangleMesh | None:
    if not path.is_file():
        return None
    mesh = o3d.io.read_triangle_mesh(str(path))
    if not mesh.has_triangles():
        raise InputError(f"{path}: not a triangle mesh; delete it or re-run 'metricslam mesh'")
    return mesh


def write_run_plots(rec: Reconstruction, out_dir: str | os.PathLike, gt: Trajectory | None = None,
                    mesh: o3d.geometry.TriangleMesh | None = None,
                    cloud: tuple[np.ndarray, np.ndarray | None] | None = None) -> list[Path]:
    """Draw every picture that the available data allows into ``out_dir``; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if gt is not None and gt.timestamps is not None:
        write_tum(out / GT_FILE, gt)
    written = []
    plot_trajectory_top(rec.trajectory(), gt, out / PLOT_FILES["trajectory"], metric=rec.metric)
    written.append(out / PLOT_FILES["trajectory"])
    if gt is not None:
        plot_translation_error(rec, gt, out / PLOT_FILES["error"])
        written.append(out / PLOT_FILES["error"])
    plot_keyframe_montage(rec, out / PLOT_FILES["keyframes"])
    written.append(out / PLOT_FILES["keyframes"])
    mesh = mesh if mesh is not None else _read_mesh(out / MESH_FILE)
    if cloud is None:
        cloud = _read_cloud(out / CLOUD_FILE)
    if plot_map_views(rec.kf_poses_wc, out / PLOT_FILES["map"], mesh, cloud):
        written.append(out / PLOT_FILES["map"])
    return written
