"""All pictures of a run, drawn from the data given; ``metricslam plot RUN_DIR`` redraws them from a saved run.

    write_run_plots(rec, run_dir, gt=gt_trajectory, mesh=mesh, cloud=(points, colours))

trajectory.png (top view, ``metricslam.viz.trajectory``), translation_error.png (with ground truth),
keyframes.png (image / prior depth / BA depth / confidence), map_views.png (rendered mesh and cloud, when given).
The file names are those of ``metricslam.io.run_dir.PLOT_FILES``; reading a saved run's ground truth, mesh and
cloud is the caller's part (``metricslam.io.run_dir.RunDir``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import open3d as o3d

from metricslam.io.run_dir import PLOT_FILES
from metricslam.io.trajectory import Trajectory
from metricslam.slam.reconstruction import Reconstruction
from metricslam.viz.figures import plot_keyframe_montage, plot_map_views, plot_translation_error
from metricslam.viz.trajectory import plot_trajectory_top


def write_run_plots(rec: Reconstruction, out_dir: str | os.PathLike, gt: Trajectory | None = None,
                    mesh: o3d.geometry.TriangleMesh | None = None,
                    cloud: tuple[np.ndarray, np.ndarray | None] | None = None) -> list[Path]:
    """Draw every picture that the given data allows into ``out_dir``; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    plot_trajectory_top(rec.trajectory(), gt, out / PLOT_FILES["trajectory"], metric=rec.metric)
    written.append(out / PLOT_FILES["trajectory"])
    if gt is not None:
        plot_translation_error(rec, gt, out / PLOT_FILES["error"])
        written.append(out / PLOT_FILES["error"])
    plot_keyframe_montage(rec, out / PLOT_FILES["keyframes"])
    written.append(out / PLOT_FILES["keyframes"])
    if plot_map_views(rec.kf_poses_wc, out / PLOT_FILES["map"], mesh, cloud):
        written.append(out / PLOT_FILES["map"])
    return written
