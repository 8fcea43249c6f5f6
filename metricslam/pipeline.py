"""One SLAM run from a Sequence to a folder of results: what ``metricslam run`` and the demo do.

``run_sequence`` feeds every frame to ``Slam`` (a background thread decodes the next frames meanwhile), shows a
progress bar, and writes into the output folder (atomically, file by file; names in metricslam.io.run_dir):

- trajectory_tum.txt, trajectory_kitti.txt (T_wc of every input frame) and keyframes.npz (``Reconstruction.save``)
- config.yaml: the complete SlamConfig used (``load_config(SlamConfig, 'config.yaml')`` reproduces it)
- with ground truth: metrics.json (metricslam.metrics.run_report) and groundtruth_tum.txt
- with ``mapping`` settings: mesh.ply, mesh_points.ply, cloud.ply, mapping.yaml (metricslam.mapping.export)
- pictures (metricslam.viz.run_plots): trajectory.png (top view, against ground truth when there is one),
  translation_error.png (with ground truth), keyframes.png, map_views.png (with a map)

``fps`` counts input frames per second of wall time from the first frame read to the end of ``Slam.finish``
(decoding, priors, tracking, final BA and filler); writing the outputs and mapping are not included.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from metricslam.depth.prior_protocol import DepthPrior
from metricslam.errors import MetricSlamError
from metricslam.io.prefetch import prefetched
from metricslam.io.run_dir import RUN_OUTPUTS, RunDir
from metricslam.io.sequences.base import Sequence
from metricslam.io.trajectory import Trajectory
from metricslam.mapping.export import MappingConfig, map_reconstruction
from metricslam.metrics.run_report import run_metrics
from metricslam.slam.config import SlamConfig
from metricslam.slam.reconstruction import Reconstruction
from metricslam.slam.system import Slam
from metricslam.viz.live_view import open_viewer
from metricslam.viz.run_plots import write_run_plots

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    reconstruction: Reconstruction
    metrics: dict | None  # the content of metrics.json; None without ground truth
    fps: float
    out_dir: Path
    seconds: float = 0.0  # wall time counted by fps
    files: list[str] = field(default_factory=list)  # names of the files written into out_dir


def track_sequence(slam: Slam, sequence: Sequence, progress: bool = True) -> float:
    """Feed every frame of ``sequence`` to ``slam``; returns the seconds spent (reading overlapped)."""
    start = time.perf_counter()
    bar = tqdm(total=len(sequence), unit="frame", desc=sequence.name or "frames", disable=not progress,
               dynamic_ncols=True, smoothing=0.1)
    with bar, closing(prefetched(sequence)) as frames, logging_redirect_tqdm() if progress else nullcontext():
        for frame in frames:
            slam.track(frame)
            bar.update(1)
            bar.set_postfix(keyframes=len(slam.store), refresh=False)
    return time.perf_counter() - start


def run_sequence(
    sequence: Sequence,
    out_dir: str | os.PathLike | RunDir,
    config: SlamConfig,
    gt: Trajectory | None = None,
    progress: bool = True,
    viz: str | None = None,
    prior: DepthPrior | None = None,
    mapping: MappingConfig | None = None,
    overwrite: bool = False,
) -> RunResult:
    """Run SLAM over ``sequence`` and write the results into ``out_dir`` (see the module docstring).

    gt: ground truth T_wc (default: the sequence's own, if any). viz: live viewer, 'rerun' (spawns the Rerun
    viewer) or a path ending in .rrd (a Rerun recording). prior: a ready DepthPrior instead of the one
    ``config.prior`` names (e.g. precomputed for benchmarks). mapping: mesh and cloud settings; None skips them.
    A folder that holds an earlier run is refused unless ``overwrite`` (which first removes that run's files); the
    folder is created only once the results are ready to write, so a run that fails leaves none behind.
    """
    run_dir = out_dir if isinstance(out_dir, RunDir) else RunDir(out_dir, RUN_OUTPUTS, overwrite)
    run_dir.check()
    with open_viewer(viz) as viewer:
        slam = Slam(config, prior, on_update=None if viewer is None else viewer.update)
        tracked = track_sequence(slam, sequence, progress)
        start = time.perf_counter()
        rec = slam.finish(progress)
        seconds = tracked + time.perf_counter() - start
        fps = rec.num_frames / max(seconds, 1e-9)

        out = run_dir.prepare()
        run_dir.record(rec.save(out))
        run_dir.write_config(config)
        gt = gt if gt is not None else sequence.gt_trajectory()
        metrics = None
        if gt is not None:
            metrics = run_metrics(rec, gt, fps, seconds, sequence.name, str(slam.device))
            run_dir.write_metrics(metrics)
        map_outputs = None
        if mapping is not None and mapping.enabled:
            map_outputs = map_reconstruction(rec, out, mapping)
            if map_outputs is not None:
                run_dir.record(map_outputs.files)
        mesh = None if map_outputs is None else map_outputs.fusion.mesh
        cloud = None if map_outputs is None else map_outputs.cloud_data
        try:
            run_dir.record(write_run_plots(rec, out, gt, mesh=mesh, cloud=cloud))
        except MetricSlamError as exc:  # pictures are secondary: the results above are saved
            log.warning("some plots were not drawn: %s", exc)
        if gt is not None:
            run_dir.write_ground_truth(gt)  # for `metricslam plot`
        if viewer is not None:
            viewer.finish(rec, mesh)
    return RunResult(rec, metrics, fps, out, seconds, list(run_dir.written))
