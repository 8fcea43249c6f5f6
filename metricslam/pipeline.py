"""One SLAM run from a Sequence to a folder of results: what ``metricslam run`` and the demo do.

``run_sequence`` feeds every frame to ``Slam`` (a background thread decodes the next frames meanwhile), shows a
progress bar, and writes into the output folder (atomically, file by file):

- trajectory_tum.txt, trajectory_kitti.txt (T_wc of every input frame) and keyframes.npz (``Reconstruction.save``)
- config.yaml: the complete SlamConfig used (``load_config(SlamConfig, 'config.yaml')`` reproduces it)
- with ground truth: metrics.json (``evaluate_trajectory`` plus run facts) and groundtruth_tum.txt
- with ``mapping`` settings: mesh.ply, mesh_points.ply, cloud.ply, mapping.yaml (metricslam.mapping.export)
- pictures (metricslam.viz.run_plots): trajectory.png (top view, against ground truth when there is one),
  translation_error.png (with ground truth), keyframes.png, map_views.png (with a map)

``fps`` counts input frames per second of wall time from the first frame read to the end of ``Slam.finish``
(decoding, priors, tracking, final BA and filler); writing the outputs and mapping are not included.
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open3d as o3d
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from metricslam.config import save_config
from metricslam.depth.prior_protocol import DepthPrior
from metricslam.errors import MetricSlamError
from metricslam.io.atomic import write_text_atomic
from metricslam.io.prefetch import prefetched
from metricslam.io.run_dir import OutputLayout, RunDir
from metricslam.io.sequences.base import Sequence
from metricslam.io.trajectory import Trajectory
from metricslam.mapping.export import (
    CLOUD_FILE,
    MAPPING_CONFIG_FILE,
    MESH_FILE,
    MESH_POINTS_FILE,
    MappingConfig,
    write_map,
)
from metricslam.metrics.trajectory import evaluate_trajectory
from metricslam.slam.config import SlamConfig
from metricslam.slam.reconstruction import KEYFRAMES_FILE, Reconstruction
from metricslam.slam.system import Slam
from metricslam.viz.live_view import LiveView, open_viewer
from metricslam.viz.run_plots import GT_FILE, PLOT_FILES, write_run_plots

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
# Everything run_sequence may write: a folder holding any of these holds an earlier run (metricslam.io.run_dir).
RUN_OUTPUTS = OutputLayout("run", files=(
    "trajectory_tum.txt", "trajectory_kitti.txt", KEYFRAMES_FILE, CONFIG_FILE, METRICS_FILE, GT_FILE,
    MESH_FILE, MESH_POINTS_FILE, CLOUD_FILE, MAPPING_CONFIG_FILE, *PLOT_FILES.values(),
))

SCALE_NOTES = {
    True: "metric",
    False: "arbitrary: no metric depth prior, the trajectory is up to scale (compare ate_sim3_rmse_m)",
}


@dataclass
class RunResult:
    reconstruction: Reconstruction
    metrics: dict | None  # the content of metrics.json; None without ground truth
    fps: float
    out_dir: Path
    seconds: float = 0.0  # wall time counted by fps
    files: list[str] = field(default_factory=list)  # names of the files written into out_dir


def track_sequence(slam: Slam, sequence: Sequence, progress: bool = True, viewer: LiveView | None = None
                   ) -> float:
    """Feed every frame of ``sequence`` to ``slam``; returns the seconds spent (reading overlapped)."""
    start = time.perf_counter()
    bar = tqdm(total=len(sequence), unit="frame", desc=sequence.name or "frames", disable=not progress,
               dynamic_ncols=True, smoothing=0.1)
    with bar, closing(prefetched(sequence)) as frames, logging_redirect_tqdm() if progress else nullcontext():
        for frame in frames:
            slam.track(frame)
            if viewer is not None:
                viewer.update(slam, frame)
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
    slam = Slam(config, prior)
    with open_viewer(viz) as viewer:
        tracked = track_sequence(slam, sequence, progress, viewer)
        start = time.perf_counter()
        rec = slam.finish(progress)
        seconds = tracked + time.perf_counter() - start
        fps = rec.num_frames / max(seconds, 1e-9)

        out = run_dir.prepare()
        rec.save(out)
        save_config(config, out / CONFIG_FILE)
        files = ["trajectory_tum.txt", "trajectory_kitti.txt", KEYFRAMES_FILE, CONFIG_FILE]
        gt = gt if gt is not None else sequence.gt_trajectory()
        metrics = None
        if gt is not None:
            metrics = run_metrics(rec, gt, fps, seconds, sequence.name, str(slam.device))
            write_text_atomic(out / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
            files.append(METRICS_FILE)
        mesh = None
        if mapping is not None and mapping.enabled:
            mesh, written = map_reconstruction(rec, out, mapping)
            files += written
        try:
            files += [p.name for p in write_run_plots(rec, out, gt, mesh=mesh)]
        except MetricSlamError as exc:  # pictures are secondary: the results above are saved
            log.warning("some plots were not drawn: %s", exc)
        if gt is not None and gt.timestamps is not None:  # write_run_plots saved it for `metricslam plot`
            files.append(GT_FILE)
        if viewer is not None:
            viewer.finish(rec, mesh)
    return RunResult(rec, metrics, fps, out, seconds, files)


def run_metrics(rec: Reconstruction, gt: Trajectory, fps: float, seconds: float, name: str = "",
                device: str = "") -> dict:
    """metrics.json: trajectory accuracy (metricslam.metrics.trajectory.evaluate_trajectory) and run facts.

    Frames whose estimated pose is not finite are left out of the accuracy numbers and counted in
    'num_frames_nonfinite' (with an event), so a partly failed run still reports on the rest.
    """
    est = rec.trajectory()
    finite = np.isfinite(est.poses).all(axis=(1, 2))
    events = list(rec.events)
    if not finite.all():
        events.append(f"{int((~finite).sum())} frames have no finite pose and are left out of the accuracy")
        est = Trajectory(est.poses[finite], None if est.timestamps is None else est.timestamps[finite])
    return {
        "sequence": name,
        **evaluate_trajectory(gt, est),
        "num_frames": rec.num_frames,
        "num_keyframes": rec.num_keyframes,
        "num_frames_nonfinite": int((~finite).sum()),
        "fps": fps,
        "seconds": seconds,
        "device": device,
        "prior": rec.prior,
        "metric": rec.metric,
        "scale_note": SCALE_NOTES[rec.metric],
        "events": events,
    }


def rigid_poses(poses: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    """(N,) True where a (N, 4, 4) pose is finite with an orthonormal, right-handed rotation."""
    R = poses[:, :3, :3]
    finite = np.isfinite(poses).all(axis=(1, 2))
    R = np.where(finite[:, None, None], R, np.eye(3))
    orthonormal = np.abs(R.transpose(0, 2, 1) @ R - np.eye(3)).max(axis=(1, 2)) < tol
    return finite & orthonormal & (np.linalg.det(R) > 0)


def map_reconstruction(rec: Reconstruction, out: Path, config: MappingConfig
                       ) -> tuple[o3d.geometry.TriangleMesh | None, list[str]]:
    """The mapping step (metricslam.mapping.export.write_map): mesh, surface points, consistent cloud.

    Returns the mesh and the files written. A map that cannot be built is reported and skipped: the trajectory is
    the run's main result and is already saved.
    """
    rigid = rigid_poses(rec.kf_poses_wc)
    if not rigid.all():
        log.warning("mapping skipped: %d of %d keyframe poses are not rigid transforms (first: keyframe %d); the "
                    "SLAM run failed there", int((~rigid).sum()), rec.num_keyframes, int(np.flatnonzero(~rigid)[0]))
        return None, []
    if rec.num_keyframes < config.tsdf.min_weight:
        log.warning("mapping skipped: too few keyframes (%d; the map keeps surfaces seen by %g or more): the camera "
                    "moved too little for SLAM to add keyframes; use a clip with more camera motion",
                    rec.num_keyframes, config.tsdf.min_weight)
        return None, []
    try:
        outputs = write_map(rec, out, config)
    except MetricSlamError as exc:
        log.warning("mapping skipped: %s", exc)
        return None, []
    written = [outputs.mesh, outputs.mesh_points, *([outputs.cloud] if outputs.cloud else []),
               out / MAPPING_CONFIG_FILE]
    return outputs.fusion.mesh, [p.name for p in written]


def format_summary(result: RunResult) -> str:
    """A few lines for the console: counts, speed, accuracy when known, events, where the files are."""
    rec, m = result.reconstruction, result.metrics
    lines = [
        f"frames    {rec.num_frames}, keyframes {rec.num_keyframes}, {result.fps:.1f} frames/s "
        f"({result.seconds:.1f} s)",
        f"prior     {rec.prior}, scale {SCALE_NOTES[rec.metric]}",
    ]
    if m is not None:
        def num(key: str, fmt: str) -> str:
            return "-" if m.get(key) is None else format(m[key], fmt)

        lines.append(f"ATE       SE3 {num('ate_se3_rmse_m', '.4f')} m, Sim3 {num('ate_sim3_rmse_m', '.4f')} m, "
                     f"Sim3 scale {num('sim3_scale', '.4f')} over {m['num_poses']} poses "
                     f"({m['path_length_m']:.2f} m path)")
        lines.append(f"RPE       {num('rpe_trans_rmse_m', '.4f')} m, {num('rpe_rot_rmse_deg', '.3f')} deg per frame")
        if m.get("kitti_t_err_pct") is not None:
            lines.append(f"KITTI     t_err {m['kitti_t_err_pct']:.2f} %, "
                         f"r_err {m['kitti_r_err_deg_per_100m']:.3f} deg/100 m")
        if m.get("note"):
            lines.append(f"note      {m['note']}")
    events = m["events"] if m is not None else rec.events
    lines += [f"event     {e}" for e in events]
    lines.append(f"outputs   {result.out_dir}: {', '.join(result.files)}")
    return "\n".join(lines)
