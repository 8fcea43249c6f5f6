"""An output folder that holds the results of exactly one run of a command, never a mix of two.

Every command that writes a folder of results (``run``, ``demo``, ``depth``, ``train``) goes through ``RunDir``:

    out = RunDir(path, RUN_OUTPUTS, overwrite=args.overwrite)
    out.check()      # first, before any slow work: refuses a folder that holds an earlier run
    ...              # validate inputs, load weights, compute
    out.prepare()    # only now: remove the earlier run's files (with overwrite), create the folder

A folder "holds an earlier run" when any file the command writes is there (an ``OutputLayout`` names them).
``overwrite`` removes exactly those files (and temporary files an interrupted write left); files the command never
writes are left alone, so pointing ``--out`` at a folder with other files is safe. Because the folder is only
created by ``prepare``, a failed validation leaves no empty folder behind.

A ``metricslam run`` folder (``RUN_OUTPUTS``) has fixed file names, all defined here; ``RunDir`` writes and reads
the plain-data ones (config, metrics, ground truth) and reads back the map for the pictures, and it keeps the list
of files written into the folder (``record`` adds those written by the reconstruction, map and plot writers).
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metricslam.config import save_config
from metricslam.errors import InputError
from metricslam.io.atomic import stale_temp_files, write_text_atomic
from metricslam.io.trajectory import Trajectory, read_trajectory, write_tum

if TYPE_CHECKING:
    import open3d as o3d


@dataclass(frozen=True)
class OutputLayout:
    """What one command writes into its output folder.

    files: names or glob patterns of the files it writes; folders: sub-folders it owns entirely;
    extra: a function listing further files of an earlier run that patterns cannot name (e.g. per-image outputs).
    """

    command: str
    files: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()
    extra: Callable[[Path], list[Path]] | None = field(default=None, compare=False)

    def earlier_outputs(self, folder: Path) -> list[Path]:
        """Files and sub-folders in ``folder`` that a run of the command wrote, sorted."""
        if not folder.is_dir():
            return []
        found = {p for pattern in self.files for p in folder.glob(pattern) if p.is_file()}
        found |= {folder / name for name in self.folders if (folder / name).is_dir()}
        if self.extra is not None:
            found |= {p for p in self.extra(folder) if p.exists()}
        return sorted(found)


# The files of a `metricslam run` folder.
TRAJECTORY_TUM_FILE = "trajectory_tum.txt"  # every frame's T_wc
TRAJECTORY_KITTI_FILE = "trajectory_kitti.txt"
KEYFRAMES_FILE = "keyframes.npz"  # everything else of the Reconstruction
CONFIG_FILE = "config.yaml"  # the complete SlamConfig used
METRICS_FILE = "metrics.json"  # with ground truth: accuracy and run facts
GT_FILE = "groundtruth_tum.txt"  # the ground truth the run was measured against, for `metricslam plot`
MESH_FILE = "mesh.ply"
MESH_POINTS_FILE = "mesh_points.ply"
CLOUD_FILE = "cloud.ply"
MAPPING_CONFIG_FILE = "mapping.yaml"  # the map settings used, read back by `metricslam mesh`
PLOT_FILES = {"trajectory": "trajectory.png", "error": "translation_error.png", "keyframes": "keyframes.png",
              "map": "map_views.png"}
RUN_OUTPUTS = OutputLayout("run", files=(
    TRAJECTORY_TUM_FILE, TRAJECTORY_KITTI_FILE, KEYFRAMES_FILE, CONFIG_FILE, METRICS_FILE, GT_FILE,
    MESH_FILE, MESH_POINTS_FILE, CLOUD_FILE, MAPPING_CONFIG_FILE, *PLOT_FILES.values(),
))


class RunDir:
    """The output folder of one command run (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, layout: OutputLayout = RUN_OUTPUTS, overwrite: bool = False):
        self.path = Path(path)
        self.layout = layout
        self.overwrite = overwrite
        self.written: list[str] = []  # names of the files written into the folder, in order

    @classmethod
    def existing(cls, path: str | os.PathLike) -> RunDir:
        """The folder of an earlier `metricslam run`, to read or redraw; InputError when there is no such folder."""
        run = cls(path)
        if not run.path.is_dir():
            raise InputError(f"{run.path}: no such run folder; pass the --out folder of 'metricslam run'")
        return run

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def check(self) -> None:
        """InputError unless the folder can take this run: absent, or without an earlier run's files, or
        ``overwrite``."""
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path}: is a file, not a folder; pass a folder to write the results into")
        if self.overwrite:
            return
        earlier = self.layout.earlier_outputs(self.path)
        if earlier:
            names = ", ".join(p.name for p in earlier[:3]) + (", ..." if len(earlier) > 3 else "")
            raise InputError(
                f"{self.path}: holds the results of an earlier 'metricslam {self.layout.command}' ({names}); pass "
                f"--overwrite to replace them, or choose another output folder"
            )

    def prepare(self) -> Path:
        """Check again, remove the earlier run's files (``overwrite``) and stale temporary files, create the
        folder; returns its path."""
        self.check()
        for p in self.layout.earlier_outputs(self.path) + stale_temp_files(self.path):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    # -- the files of a run ----------------------------------------------------------------------------------
    def record(self, paths: Iterable[str | os.PathLike]) -> None:
        """Add files that another writer (reconstruction, map, plots) put into the folder to ``written``."""
        self.written += [Path(p).name for p in paths]

    def write_config(self, config: Any) -> Path:
        """config.yaml: the config dataclass written out (``load_config`` of it reproduces the config)."""
        save_config(config, self.path / CONFIG_FILE)
        self.record([CONFIG_FILE])
        return self.path / CONFIG_FILE

    def write_metrics(self, metrics: dict) -> Path:
        """metrics.json (indented JSON)."""
        write_text_atomic(self.path / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
        self.record([METRICS_FILE])
        return self.path / METRICS_FILE

    def write_ground_truth(self, gt: Trajectory) -> Path | None:
        """groundtruth_tum.txt, so that ``metricslam plot`` finds it later; None (nothing written) when the
        trajectory has no timestamps (TUM files need them)."""
        if gt.timestamps is None:
            return None
        write_tum(self.path / GT_FILE, gt)
        self.record([GT_FILE])
        return self.path / GT_FILE

    def read_ground_truth(self) -> Trajectory | None:
        """The ground truth saved with the run, or None."""
        path = self.path / GT_FILE
        return read_trajectory(path, "tum") if path.is_file() else None

    def read_mesh(self) -> o3d.geometry.TriangleMesh | None:
        """mesh.ply, or None when the run has none."""
        path = self.path / MESH_FILE
        if not path.is_file():
            return None
        import open3d as o3d  # loaded only by the commands that read a map

        mesh = o3d.io.read_triangle_mesh(str(path))
        if not mesh.has_triangles():
            raise InputError(f"{path}: not a triangle mesh; delete it or re-run 'metricslam mesh'")
        return mesh

    def read_cloud(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """cloud.ply as (points (N, 3), uint8 colours (N, 3) or None), or None when the run has none."""
        path = self.path / CLOUD_FILE
        if not path.is_file():
            return None
        import open3d as o3d  # loaded only by the commands that read a map

        pcd = o3d.io.read_point_cloud(str(path))
        if not pcd.has_points():
            raise InputError(f"{path}: no points could be read; delete it or re-run 'metricslam mesh'")
        colours = (np.asarray(pcd.colors) * 255 + 0.5).astype(np.uint8) if pcd.has_colors() else None
        return np.asarray(pcd.points), colours
