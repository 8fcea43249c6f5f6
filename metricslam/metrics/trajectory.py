"""Trajectory accuracy through evo's API: association, Umeyama alignment, APE (ATE) and RPE, scale error.

All trajectories are metricslam.io.trajectory.Trajectory (camera-to-world poses, optional timestamps).
Distances are in metres, angles in degrees. The alignment maps the estimate onto the ground truth:
gt ~ s * R @ est + t (Umeyama on positions, as evo_ape -a / -as).

Scale error sign convention: ``scale_error = 1 - s`` with s the Sim(3) scale that maps the estimate onto the
ground truth. An estimate 10% too large gives s = 1/1.1 and scale_error = +0.091; one 10% too small gives
s = 1/0.9 and scale_error = -0.111. Zero means metrically exact.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
from evo.core import metrics as evo_metrics
from evo.core import sync
from evo.core.filters import FilterException
from evo.core.geometry import GeometryException
from evo.core.trajectory import PosePath3D, PoseTrajectory3D

from metricslam.errors import InputError
from metricslam.io.trajectory import Trajectory
from metricslam.metrics.kitti import SEGMENT_LENGTHS, kitti_odometry_error, path_distances

ALIGN_MODES = ("se3", "sim3", "scale", "none")
RPE_UNITS = ("frames", "meters")
MIN_POSES = 3


class DegenerateAlignmentError(InputError):
    """Umeyama alignment is undefined because the positions do not span a plane (static or collinear)."""


def to_evo(traj: Trajectory) -> PosePath3D:
    """A PoseTrajectory3D when timestamps exist, else a PosePath3D (both copies of the poses)."""
    poses = [np.array(p, dtype=np.float64) for p in traj.poses]
    if traj.timestamps is None:
        return PosePath3D(poses_se3=poses)
    return PoseTrajectory3D(poses_se3=poses, timestamps=np.asarray(traj.timestamps, dtype=np.float64))


def from_evo(path: PosePath3D) -> Trajectory:
    stamps = getattr(path, "timestamps", None)
    return Trajectory(np.stack(path.poses_se3).astype(np.float64), None if stamps is None else np.array(stamps))


def associate(
    gt: Trajectory,
    est: Trajectory,
    max_diff: float | None = 0.01,
    names: tuple[str, str] = ("ground truth", "estimate"),
) -> tuple[Trajectory, Trajectory]:
    """Pair the poses of two trajectories.

    By nearest timestamp within ``max_diff`` seconds (evo's association) when both have timestamps and
    ``max_diff`` is not None; otherwise by index, which needs equal lengths. ``names`` label errors (file paths).
    """
    if max_diff is not None and gt.timestamps is not None and est.timestamps is not None:
        try:
            gt_sync, est_sync = sync.associate_trajectories(to_evo(gt), to_evo(est), max_diff=max_diff)
        except sync.SyncException:
            raise InputError(
                f"{names[1]}: no timestamp within {max_diff} s of any in {names[0]}; "
                "check both use seconds on the same clock, or raise --max-diff"
            ) from None
        gt_a, est_a = from_evo(gt_sync), from_evo(est_sync)
    elif len(gt) != len(est):
        raise InputError(
            f"{names[1]}: {len(est)} poses but {names[0]} has {len(gt)} and they cannot be matched by timestamp; "
            "give both files timestamps (TUM format) or one pose per ground-truth frame"
        )
    else:
        gt_a, est_a = gt, est
    if len(gt_a) < MIN_POSES:
        raise InputError(
            f"{names[1]}: only {len(gt_a)} poses pair with {names[0]}; need at least {MIN_POSES} "
            "(check timestamps and --max-diff)"
        )
    return gt_a, est_a


def align(gt: Trajectory, est: Trajectory, mode: str = "se3") -> tuple[Trajectory, np.ndarray, np.ndarray, float]:
    """Umeyama-align the (already associated) estimate to the ground truth.

    ``mode``: 'se3' (rotation + translation), 'sim3' (+ scale), 'scale' (scale only, as evo's -s), 'none'.
    Returns (aligned estimate, R (3, 3), t (3,), s) with aligned positions s * R @ p + t.
    """
    if mode not in ALIGN_MODES:
        raise InputError(f"unknown alignment '{mode}'; use one of {', '.join(ALIGN_MODES)}")
    if len(gt) != len(est):
        raise ValueError(f"align needs associated trajectories, got {len(gt)} and {len(est)} poses")
    if mode == "none":
        return copy.deepcopy(est), np.eye(3), np.zeros(3), 1.0
    path = to_evo(est)
    try:
        R, t, s = path.align(to_evo(gt), correct_scale=mode == "sim3", correct_only_scale=mode == "scale")
    except GeometryException:
        raise DegenerateAlignmentError(
            f"{mode} alignment is undefined: the positions are static or collinear; use alignment 'none'"
        ) from None
    if mode == "scale":
        R, t = np.eye(3), np.zeros(3)
    return Trajectory(np.stack(path.poses_se3), est.timestamps), np.asarray(R), np.asarray(t), float(s)


_align = align  # ate() and rpe() take a keyword argument named 'align'


def _stats(errors: np.ndarray) -> dict[str, float]:
    """evo's statistics of an error array (std is the population std, as evo's)."""
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mean": float(np.mean(errors)),
        "median": float(np.median(errors)),
        "std": float(np.std(errors)),
        "min": float(np.min(errors)),
        "max": float(np.max(errors)),
    }


def ate(gt: Trajectory, est: Trajectory, align: str = "se3", max_diff: float | None = 0.01) -> dict[str, float]:
    """Absolute trajectory error (evo APE, translation part, metres) after association and alignment.

    Returns rmse, mean, median, std, min, max, the alignment 'scale' (1 unless sim3/scale) and 'num_poses'.
    ``max_diff=None`` pairs the poses by index.
    """
    gt_a, est_a = associate(gt, est, max_diff)
    aligned, _, _, s = _align(gt_a, est_a, align)
    ape = evo_metrics.APE(evo_metrics.PoseRelation.translation_part)
    ape.process_data((to_evo(gt_a), to_evo(aligned)))
    return {**_stats(ape.error), "scale": s, "num_poses": len(gt_a)}


def rpe(
    gt: Trajectory,
    est: Trajectory,
    delta: float = 1,
    unit: str = "frames",
    align: str = "none",
    max_diff: float | None = 0.01,
) -> dict[str, float]:
    """Relative pose error (evo RPE) between poses ``delta`` frames or metres apart.

    Metre pairs are chosen along the ground-truth path (so the estimate's scale does not change which pairs are
    compared). Rigid alignment does not change RPE; 'sim3' and 'scale' rescale the estimate first.
    Returns trans_* (metres) and rot_*_deg statistics (rmse, mean, median, std, min, max) and 'num_pairs'.
    """
    if unit not in RPE_UNITS:
        raise InputError(f"unknown RPE unit '{unit}'; use one of {', '.join(RPE_UNITS)}")
    if not delta > 0 or (unit == "frames" and float(delta) != int(delta)):
        raise InputError(f"RPE delta {delta} {unit} is invalid; use a positive number (a whole number of frames)")
    gt_a, est_a = associate(gt, est, max_diff)
    aligned = _align(gt_a, est_a, align)[0]
    metric = evo_metrics.RPE(
        evo_metrics.PoseRelation.translation_part,
        delta=int(delta) if unit == "frames" else float(delta),
        delta_unit=evo_metrics.Unit[unit],
        all_pairs=False,
        pairs_from_reference=True,
    )
    try:
        metric.process_data((to_evo(gt_a), to_evo(aligned)))
    except FilterException:
        raise InputError(
            f"RPE delta {delta} {unit} gives no pose pairs in a {len(gt_a)}-pose trajectory; use a smaller delta"
        ) from None
    # evo's rotation_angle_deg relation takes seconds per thousand pairs (scipy per pose); the same angle of the
    # same error poses, computed in one batch with atan2 (accurate at small and large angles):
    R = np.stack(metric.E)[:, :3, :3]
    axis = np.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], axis=1)
    cos = 0.5 * (np.trace(R, axis1=1, axis2=2) - 1.0)
    rot_deg = np.degrees(np.arctan2(0.5 * np.linalg.norm(axis, axis=1), cos))
    return {
        **{f"trans_{k}": v for k, v in _stats(metric.error).items()},
        **{f"rot_{k}_deg": v for k, v in _stats(rot_deg).items()},
        "num_pairs": len(metric.error),
    }


def scale_error(gt: Trajectory, est: Trajectory, max_diff: float | None = 0.01) -> float:
    """1 - Sim(3) scale (see the module docstring for the sign convention)."""
    gt_a, est_a = associate(gt, est, max_diff)
    return 1.0 - _align(gt_a, est_a, "sim3")[3]


def evaluate_trajectory(gt: Trajectory, est: Trajectory, max_diff: float | None = 0.01) -> dict:
    """The accuracy summary a run writes to metrics.json.

    ATE after SE(3) and after Sim(3) alignment, the Sim(3) scale and scale error, RPE over consecutive frames and
    the KITTI devkit metric (both without alignment: they measure the metric estimate as it is), ground-truth
    path length of the associated poses. KITTI keys are None when that path is shorter than 100 m; the aligned
    ATE keys are None (with a 'note') when the ground truth is static or collinear, where alignment is undefined.
    """
    gt_a, est_a = associate(gt, est, max_diff)
    undefined: dict[str, float | None] = dict.fromkeys(("rmse", "mean", "median", "max", "scale"))
    note = None
    se3_ate: Mapping[str, float | None]
    sim3_ate: Mapping[str, float | None]
    try:
        se3_ate = ate(gt_a, est_a, "se3", max_diff=None)
        sim3_ate = ate(gt_a, est_a, "sim3", max_diff=None)
    except DegenerateAlignmentError as exc:
        se3_ate = sim3_ate = undefined
        note = str(exc)
    rel = rpe(gt_a, est_a, 1, "frames", "none", max_diff=None)
    path_length = float(path_distances(gt_a.poses)[-1])
    kitti = {"t_err_pct": None, "r_err_deg_per_100m": None}
    if path_length >= SEGMENT_LENGTHS[0]:
        kitti = kitti_odometry_error(gt_a.poses, est_a.poses)
    return {
        "num_poses": len(gt_a),
        "path_length_m": path_length,
        "ate_se3_rmse_m": se3_ate["rmse"],
        "ate_se3_mean_m": se3_ate["mean"],
        "ate_se3_median_m": se3_ate["median"],
        "ate_se3_max_m": se3_ate["max"],
        "ate_sim3_rmse_m": sim3_ate["rmse"],
        "sim3_scale": sim3_ate["scale"],
        "scale_error": None if sim3_ate["scale"] is None else 1.0 - sim3_ate["scale"],
        "rpe_trans_rmse_m": rel["trans_rmse"],
        "rpe_rot_rmse_deg": rel["rot_rmse_deg"],
        "rpe_delta_frames": 1,
        "kitti_t_err_pct": kitti["t_err_pct"],
        "kitti_r_err_deg_per_100m": kitti["r_err_deg_per_100m"],
        "note": note,
    }
