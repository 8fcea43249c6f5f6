"""The pictures of a run (PNG through matplotlib's Agg canvas, headless): translation error over time, a montage
of keyframe image / prior depth / BA depth / confidence, and software-rendered views of the mesh and cloud.

Each function draws one figure and writes it atomically; ``metricslam.viz.run_plots.write_run_plots`` draws all.
"""
from __future__ import annotations

import os

import cv2
import numpy as np
import open3d as o3d
from matplotlib import colormaps
from matplotlib.figure import Figure
from scipy.spatial import cKDTree

from metricslam.io.atomic import atomic_path
from metricslam.io.trajectory import Trajectory
from metricslam.mapping.render import overview_camera, render_mesh, render_points
from metricslam.metrics.trajectory import DegenerateAlignmentError, align, associate
from metricslam.slam.reconstruction import Reconstruction

DEPTH_CMAP = "turbo"
MAX_MONTAGE_ROWS = 6


def _save(fig: Figure, path: str | os.PathLike) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def translation_errors(est: Trajectory, gt: Trajectory, metric: bool = True, max_diff: float | None = 0.01
                       ) -> tuple[np.ndarray, np.ndarray, str]:
    """(timestamps, position errors in metres, alignment used) of the estimate aligned to ground truth:
    SE3 when metric (the scale is part of what is measured), Sim3 otherwise."""
    finite = np.isfinite(est.poses).all(axis=(1, 2))
    est = Trajectory(est.poses[finite], None if est.timestamps is None else est.timestamps[finite])
    gt_a, est_a = associate(gt, est, max_diff)
    mode = "se3" if metric else "sim3"
    try:
        aligned, _, _, _ = align(gt_a, est_a, mode)
    except DegenerateAlignmentError:
        aligned, mode = est_a, "none"
    times = gt_a.timestamps if gt_a.timestamps is not None else np.arange(len(gt_a), dtype=np.float64)
    return times, np.linalg.norm(aligned.positions - gt_a.positions, axis=1), mode


def plot_translation_error(rec: Reconstruction, gt: Trajectory, path: str | os.PathLike,
                           max_diff: float | None = 0.01) -> float:
    """Position error of every frame over time (keyframes ticked, lost frames shaded); returns the RMSE."""
    times, errors, mode = translation_errors(rec.trajectory(), gt, rec.metric, max_diff)
    t0 = float(times[0])
    rmse = float(np.sqrt(np.mean(errors**2)))
    fig = Figure(figsize=(8.0, 3.6), dpi=110)
    ax = fig.add_subplot()
    ax.plot(times - t0, errors, color="tab:blue", lw=1.4, label=f"position error ({mode.upper()}-aligned)")
    ax.axhline(rmse, color="tab:red", lw=1.0, ls="--", label=f"RMSE {rmse:.3f} m")
    kf = rec.kf_timestamps - t0
    ax.vlines(kf, 0, 0.05, transform=ax.get_xaxis_transform(), color="k", lw=1, label="keyframes")
    if not rec.tracked.all():
        edges = np.diff(np.concatenate([[0], (~rec.tracked).astype(np.int8), [0]]))
        first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1  # runs of lost frames
        half = 0.5 * float(np.median(np.diff(rec.timestamps))) if rec.num_frames > 1 else 0.5
        t = rec.timestamps - t0
        ax.broken_barh(list(zip(t[first] - half, t[last] - t[first] + 2 * half)), (0, 1), color="tab:orange",
                       alpha=0.3, transform=ax.get_xaxis_transform(), label="tracking lost")
    ax.set_xlabel("time [s]")
    ax.set_ylabel("error [m]")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("translation error over time", fontsize=10)
    _save(fig, path)
    return rmse


def _montage_rows(n: int, rows: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, min(rows, n)).round().astype(int).tolist()))


def colourise(values: np.ndarray, lo: float, hi: float, cmap: str, invalid: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB image of ``values`` through a matplotlib colour map over [lo, hi]; ``invalid`` pixels dark grey."""
    t = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rgb = (colormaps[cmap](t)[..., :3] * 255 + 0.5).astype(np.uint8)
    if invalid is not None:
        rgb[invalid] = 40
    return rgb


def plot_keyframe_montage(rec: Reconstruction, path: str | os.PathLike, rows: int = MAX_MONTAGE_ROWS,
                          panel_width: int = 320) -> list[int]:
    """Rows of keyframes (evenly spread): image, prior depth, BA depth, BA confidence. Returns the keyframes drawn.

    Prior and BA depth of a row share one colour scale (its range is printed on the row), so a scale difference
    between them shows as a colour shift. The panels are tiled as one image: many Axes would be slow to draw.
    """
    picks = _montage_rows(rec.num_keyframes, rows)
    unit = "m" if rec.metric else "(arbitrary units)"
    H, W = rec.intrinsics.height, rec.intrinsics.width
    pw = panel_width
    ph = max(1, round(H * pw / W))
    gap = 6
    tiles, labels = [], []
    for k in picks:
        ba = cv2.resize(rec.kf_depths[k], (pw, ph), interpolation=cv2.INTER_NEAREST)
        conf = cv2.resize(rec.kf_confidences[k], (pw, ph), interpolation=cv2.INTER_NEAREST)
        prior = None
        if rec.kf_prior_depths is not None:
            prior = cv2.resize(rec.kf_prior_depths[k], (pw, ph), interpolation=cv2.INTER_NEAREST)
        valid = [d[d > 0] for d in (ba, prior) if d is not None and np.any(d > 0)]
        lo, hi = np.percentile(np.concatenate(valid), [2, 98]) if valid else (0.0, 1.0)
        blank = np.full((ph, pw, 3), 255, np.uint8)
        row = [
            cv2.resize(rec.kf_images[k], (pw, ph), interpolation=cv2.INTER_AREA if pw < W else cv2.INTER_LINEAR),
            colourise(prior, lo, hi, DEPTH_CMAP, prior <= 0) if prior is not None else blank,
            colourise(ba, lo, hi, DEPTH_CMAP, ba <= 0),
            colourise(conf, 0.0, 1.0, "magma"),
        ]
        spacer = np.full((ph, gap, 3), 255, np.uint8)
        tiles.append(np.concatenate([x for panel in row for x in (panel, spacer)][:-1], axis=1))
        labels.append(f"keyframe {k} (frame {rec.kf_frame_indices[k]}): depth from {lo:.2f} (blue) to {hi:.2f} {unit} (red)")
    spacer = np.full((gap * 4, tiles[0].shape[1], 3), 255, np.uint8)
    image = np.concatenate([x for tile in tiles for x in (spacer, tile)], axis=0)
    dpi = 100
    fig = Figure(figsize=(image.shape[1] / dpi, image.shape[0] / dpi + 0.5), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, image.shape[0] / (image.shape[0] + 0.5 * dpi)))
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    for r, label in enumerate(labels):
        ax.text(2, r * (ph + gap * 4) + gap * 4 - 4, label, fontsize=9, va="bottom")
    prior_title = "prior depth" if rec.kf_prior_depths is not None else "prior depth (not kept)"
    titles = ["image", prior_title, "BA depth", "BA confidence (0 black .. 1 white)"]
    for c, title in enumerate(titles):
        fig.text((c + 0.5) / 4, 1.0 - 0.2 / fig.get_figheight(), title, ha="center", va="top", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return picks


def plot_map_views(poses_wc: np.ndarray, path: str | os.PathLike, mesh: o3d.geometry.TriangleMesh | None = None,
                   cloud: tuple[np.ndarray, np.ndarray | None] | None = None, size: tuple[int, int] = (640, 480),
                   point_radius: float | None = None) -> int:
    """Software-rendered overview of the mesh and/or the point cloud (points, uint8 colours) with the keyframe
    path drawn in; returns the number of panels drawn (0 when there is nothing to draw, and no file is written)."""
    panels = []
    poses_wc = poses_wc[np.isfinite(poses_wc).all(axis=(1, 2))]
    geometry = [np.asarray(mesh.vertices)] if mesh is not None and len(mesh.triangles) else []
    if cloud is not None and len(cloud[0]):
        geometry.append(np.asarray(cloud[0]))
    if not geometry or len(poses_wc) == 0:
        return 0
    camera, pose = overview_camera(np.concatenate(geometry), poses_wc, *size)
    if mesh is not None and len(mesh.triangles):
        colours = np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else None
        image = render_mesh(np.asarray(mesh.vertices), np.asarray(mesh.triangles), colours, camera, pose).rgb
        panels.append((image, f"mesh ({len(mesh.triangles):,} triangles)"))
    if cloud is not None and len(cloud[0]):
        points, colours = cloud
        radius = point_radius or _point_spacing(points)
        image = render_points(points, colours, camera, pose, radius).rgb
        panels.append((image, f"point cloud ({len(points):,} points)"))
    T_cw = np.linalg.inv(pose)
    centres = poses_wc[:, :3, 3] @ T_cw[:3, :3].T + T_cw[:3, 3]
    front = centres[:, 2] > 1e-3
    uv = centres[front, :2] / centres[front, 2:] * [camera.fx, camera.fy] + [camera.cx, camera.cy]
    fig = Figure(figsize=(6.4 * len(panels), 5.2), dpi=100)
    for i, (image, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(image)
        ax.plot(uv[:, 0], uv[:, 1], ".-", color="tab:red", ms=3, lw=1, label="keyframe positions")
        ax.set_xlim(0, camera.width - 1)
        ax.set_ylim(camera.height - 1, 0)
        ax.set_axis_off()
        ax.set_title(title, fontsize=10)
        ax.legend(loc="lower right", fontsize=7)
    _save(fig, path)
    return len(panels)


def _point_spacing(points: np.ndarray) -> float:
    """Typical distance between neighbouring points (splat size that closes the gaps)."""
    sample = points[:: max(1, len(points) // 2000)]
    d, _ = cKDTree(points).query(sample, k=2)
    return float(np.median(d[:, 1]))
