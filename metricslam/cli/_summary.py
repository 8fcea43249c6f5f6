"""The console summary that ``metricslam run`` and ``metricslam demo`` print after a run.

The leading underscore keeps this module out of the subcommand discovery.
"""
from __future__ import annotations

from metricslam.metrics.run_report import SCALE_NOTES
from metricslam.pipeline import RunResult


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
