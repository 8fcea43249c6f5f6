"""metrics.json of a SLAM run: trajectory accuracy against ground truth and the facts of the run."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from metricslam.io.trajectory import Trajectory
from metricslam.metrics.trajectory import evaluate_trajectory

if TYPE_CHECKING:
    from metricslam.slam.reconstruction import Reconstruction

# What the run's scale means, by whether its depth prior was metric.
SCALE_NOTES = {
    True: "metric",
    False: "arbitrary: no metric depth prior, the trajectory is up to scale (compare ate_sim3_rmse_m)",
}


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
