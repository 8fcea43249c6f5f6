"""Top view of a trajectory: the estimate (aligned to ground truth when there is one) coloured by position error.

The estimate is aligned with SE(3) when it is metric (so the plot shows its true scale) and with Sim(3) when it is
not (pure monocular: the scale is arbitrary); the legend says which. The view is the plane of the two world axes
along which the trajectory extends most, so it is the ground plane for z-up and y-down worlds alike.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from metricslam.io.atomic import atomic_path
from metricslam.io.trajectory import Trajectory
from metricslam.metrics.trajectory import MIN_POSES, DegenerateAlignmentError, align, associate

AXIS_NAMES = ("x", "y", "z")


@dataclass
class TopView:
    """What the plot shows. ``est`` holds the (aligned) estimated positions, ``errors`` their distance to the
    associated ground-truth positions (None without ground truth); ``axes`` the two world axes drawn."""

    est: np.ndarray  # (N, 3)
    gt: np.ndarray | None  # (M, 3), the whole ground-truth path
    errors: np.ndarray | None  # (N,) metres
    axes: tuple[int, int]
    alignment: str  # 'se3', 'sim3' or 'none'
    scale: float  # Sim(3) scale applied to the estimate (1 otherwise)
    label: str  # legend entry of the estimate


def top_view(est: Trajectory, gt: Trajectory | None = None, metric: bool = True,
             max_diff: float | None = 0.01) -> TopView:
    """Align (when ground truth is given) and choose the view plane; see the module docstring."""
    finite = np.isfinite(est.poses).all(axis=(1, 2))
    est = Trajectory(est.poses[finite], None if est.timestamps is None else est.timestamps[finite])
    if gt is None or len(est) < MIN_POSES:
        positions = est.positions
        unit = "metric" if metric else "arbitrary scale"
        return TopView(positions, None if gt is None else gt.positions, None, _view_axes(positions), "none", 1.0,
                       f"estimate ({unit})")
    gt_a, est_a = associate(gt, est, max_diff)
    mode = "se3" if metric else "sim3"
    try:
        aligned, _, _, scale = align(gt_a, est_a, mode)
    except DegenerateAlignmentError:
        aligned, mode, scale = est_a, "none", 1.0
    label = {
        "se3": "estimate (SE3-aligned: metric scale kept)",
        "sim3": f"estimate (Sim3-aligned, scale x{scale:.3g})",
        "none": "estimate (not aligned: static ground truth)",
    }[mode]
    errors = np.linalg.norm(aligned.positions - gt_a.positions, axis=1)
    return TopView(aligned.positions, gt.positions, errors, _view_axes(gt.positions), mode, scale, label)


def _view_axes(positions: np.ndarray) -> tuple[int, int]:
    """The two axes of largest extent, in increasing order."""
    extent = np.ptp(positions, axis=0) if len(positions) else np.zeros(3)
    i, j = sorted(np.argsort(-extent, kind="stable")[:2])
    return int(i), int(j)


def plot_trajectory_top(est: Trajectory, gt: Trajectory | None = None, path: str | os.PathLike = "trajectory.png",
                        title: str | None = None, metric: bool = True, max_diff: float | None = 0.01) -> TopView:
    """Write a PNG top view of ``est`` (vs ``gt``) to ``path`` atomically and return what was drawn."""
    view = top_view(est, gt, metric, max_diff)
    a, b = view.axes
    fig = Figure(figsize=(7.5, 6.5), dpi=110)
    ax = fig.add_subplot()
    if view.gt is not None:
        ax.plot(view.gt[:, a], view.gt[:, b], color="0.35", lw=1.4, ls="--", label="ground truth", zorder=1)
    xy = view.est[:, [a, b]]
    if view.errors is not None and len(xy) > 1:
        segments = np.stack([xy[:-1], xy[1:]], axis=1)
        lines = LineCollection(list(segments), cmap="plasma", linewidths=2.2, label=view.label, zorder=2)
        lines.set_array(0.5 * (view.errors[:-1] + view.errors[1:]))
        ax.add_collection(lines)
        fig.colorbar(lines, ax=ax, label="position error [m]", shrink=0.85)
    else:
        ax.plot(xy[:, 0], xy[:, 1], color="tab:blue", lw=2.0, label=view.label, zorder=2)
    if len(xy):
        ax.scatter(xy[0, 0], xy[0, 1], s=70, marker="o", color="tab:green", edgecolor="k", label="start", zorder=3)
        ax.scatter(xy[-1, 0], xy[-1, 1], s=80, marker="s", color="tab:red", edgecolor="k", label="end", zorder=3)
    unit = "m" if metric or view.gt is not None else "arbitrary units"
    ax.set_xlabel(f"{AXIS_NAMES[a]} [{unit}]")
    ax.set_ylabel(f"{AXIS_NAMES[b]} [{unit}]")
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    heading = title or "trajectory, top view"
    if view.errors is not None:
        rmse = float(np.sqrt(np.mean(view.errors**2)))
        heading += f"\nATE ({view.alignment.upper()}) RMSE {rmse:.3f} m over {len(view.errors)} poses"
    ax.set_title(heading, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return view
