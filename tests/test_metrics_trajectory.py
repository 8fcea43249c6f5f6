"""Trajectory metrics (association, alignment, ATE, RPE, scale error, summary) and `metricslam eval`."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from metricslam.cli import main as cli_main
from metricslam.errors import InputError
from metricslam.geometry import se3
from metricslam.io.trajectory import Trajectory
from metricslam.metrics.trajectory import align, associate, ate, evaluate_trajectory, rpe, scale_error
from shared_paths import DATA

EVO_DATA = DATA / "trajectories" / "evo_test_data"
EVO_APE = Path(sys.executable).with_name("evo_ape")


def helix(n: int = 200, radius: float = 2.0, seed: int = 0) -> Trajectory:
    """A camera moving on a helix with turning, slightly noisy orientation; 10 Hz timestamps."""
    s = np.linspace(0, 4 * np.pi, n)
    xi = torch.zeros(n, 6, dtype=torch.float64)
    xi[:, 0], xi[:, 1], xi[:, 2] = torch.from_numpy(radius * np.cos(s)), torch.from_numpy(radius * np.sin(s)), 0
    xi[:, 5] = torch.from_numpy(s)
    xi[:, 3:5] = 0.05 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    poses = se3.from_rt(se3.so3_exp(xi[:, 3:]), xi[:, :3]).numpy()
    poses[:, 2, 3] = 0.3 * s
    return Trajectory(poses, 100.0 + 0.1 * np.arange(n))


def similarity(traj: Trajectory, scale: float, xi: list[float]) -> Trajectory:
    """Positions s * R p + t, orientations R @ R_i: the same trajectory in another frame and unit."""
    T = se3.se3_exp(torch.tensor(xi, dtype=torch.float64)).numpy()
    poses = traj.poses.copy()
    poses[:, :3, 3] *= scale
    return Trajectory(T @ poses, None if traj.timestamps is None else traj.timestamps.copy())


def test_sim3_alignment_recovers_scale_and_sign_convention() -> None:
    gt = helix()
    est = similarity(gt, 1.1, [1.0, -2.0, 0.5, 0.3, -0.4, 1.2])  # estimate 10% too large, elsewhere
    aligned, R, t, s = align(gt, est, "sim3")
    assert s == pytest.approx(1 / 1.1, rel=1e-9)
    np.testing.assert_allclose(aligned.positions, gt.positions, atol=1e-9)
    np.testing.assert_allclose(s * est.positions @ R.T + t, gt.positions, atol=1e-9)
    assert scale_error(gt, est) == pytest.approx(1 - 1 / 1.1)  # positive: the estimate is too large
    assert scale_error(gt, similarity(gt, 0.9, [0.0] * 6)) == pytest.approx(1 - 1 / 0.9)
    assert ate(gt, est, "sim3")["rmse"] < 1e-9
    assert ate(gt, est, "se3")["rmse"] > 0.05
    assert ate(gt, est, "none")["rmse"] > 1.0
    only_scale = align(gt, est, "scale")
    assert np.array_equal(only_scale[1], np.eye(3)) and only_scale[3] == pytest.approx(1 / 1.1, rel=1e-9)


def test_ate_statistics_of_known_noise() -> None:
    gt = helix(2000)
    sigma = 0.01
    noisy = gt.poses.copy()
    noisy[:, :3, 3] += np.random.default_rng(1).normal(0, sigma, (2000, 3))
    est = similarity(Trajectory(noisy, gt.timestamps), 1.0, [5.0, 1.0, -1.0, 0.1, 0.2, -0.7])
    result = ate(gt, est, "se3")
    errors = np.linalg.norm(noisy[:, :3, 3] - gt.positions, axis=1)
    assert result["rmse"] == pytest.approx(sigma * np.sqrt(3), rel=0.05)
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean(errors**2)), rel=0.01)
    assert result["min"] <= result["median"] <= result["max"] and result["std"] > 0 and result["num_poses"] == 2000
    assert result["scale"] == 1.0


def test_rpe_known_drift_and_evo_rotation() -> None:
    n = 50
    gt = Trajectory(np.tile(np.eye(4), (n, 1, 1)), np.arange(n, dtype=float))
    gt.poses[:, 0, 3] = np.arange(n)  # 1 m per frame along x
    est = Trajectory(gt.poses.copy(), gt.timestamps)
    est.poses[:, 0, 3] *= 1.1  # 1.1 m per frame
    assert rpe(gt, est)["trans_rmse"] == pytest.approx(0.1)
    assert rpe(gt, est, delta=5)["trans_max"] == pytest.approx(0.5)
    by_metres = rpe(gt, est, delta=10, unit="meters")  # pairs 10 m apart on the ground truth
    assert by_metres["trans_mean"] == pytest.approx(1.0) and by_metres["num_pairs"] == 4
    assert rpe(gt, est)["rot_max_deg"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(InputError, match="no pose pairs"):
        rpe(gt, est, delta=1000)
    with pytest.raises(InputError, match="whole number of frames"):
        rpe(gt, est, delta=1.5)

    from evo.core import metrics as evo_metrics

    from metricslam.metrics.trajectory import to_evo

    h = helix(300)
    wobbly = h.poses.copy()
    noise = torch.from_numpy(np.random.default_rng(2).normal(0, 0.02, (300, 3)))
    wobbly[:, :3, :3] = se3.so3_exp(noise).numpy() @ wobbly[:, :3, :3]
    reference = evo_metrics.RPE(evo_metrics.PoseRelation.rotation_angle_deg, delta=3)
    reference.process_data((to_evo(h), to_evo(Trajectory(wobbly, h.timestamps))))
    ours = rpe(h, Trajectory(wobbly, h.timestamps), delta=3)
    assert ours["rot_rmse_deg"] == pytest.approx(float(np.sqrt(np.mean(reference.error**2))), rel=1e-9)
    assert ours["rot_max_deg"] == pytest.approx(float(np.max(reference.error)), rel=1e-9)
    assert ours["trans_rmse"] > 0
    # A Sim(3)-aligned RPE removes a pure scale error.
    assert rpe(h, similarity(h, 1.3, [0.0] * 6), align="sim3")["trans_rmse"] < 1e-9


def test_association() -> None:
    gt = helix(100)  # 10 Hz
    est = Trajectory(gt.poses[::3].copy(), gt.timestamps[::3] + 0.004)
    gt_a, est_a = associate(gt, est)
    assert len(gt_a) == len(est_a) == len(est)
    np.testing.assert_allclose(gt_a.poses, gt.poses[::3])
    with pytest.raises(InputError, match="no timestamp within 0.001 s"):
        associate(gt, est, max_diff=0.001)
    # Without timestamps the poses pair by index, which needs equal lengths.
    bare = Trajectory(gt.poses[:50])
    with pytest.raises(InputError, match="est.txt: 50 poses but gt.txt has 100"):
        associate(gt, bare, names=("gt.txt", "est.txt"))
    assert len(associate(Trajectory(gt.poses), Trajectory(gt.poses))[0]) == 100
    with pytest.raises(InputError, match="need at least 3"):
        associate(gt, Trajectory(gt.poses[:1], gt.timestamps[:1]))


def test_evaluate_trajectory_summary() -> None:
    gt = helix(300)
    est = similarity(gt, 0.95, [0.2, 0.1, 0.0, 0.0, 0.0, 0.3])
    m = evaluate_trajectory(gt, est)
    for key in ("ate_se3_rmse_m", "ate_sim3_rmse_m", "sim3_scale", "scale_error", "rpe_trans_rmse_m",
                "rpe_rot_rmse_deg", "path_length_m", "num_poses", "kitti_t_err_pct", "kitti_r_err_deg_per_100m"):
        assert key in m
    assert m["num_poses"] == 300 and m["ate_sim3_rmse_m"] < 1e-9 and m["ate_se3_rmse_m"] > 0.01
    assert m["scale_error"] == pytest.approx(1 - 1 / 0.95)
    assert m["path_length_m"] == pytest.approx(float(np.sum(np.linalg.norm(np.diff(gt.positions, axis=0), axis=1))))
    assert m["kitti_t_err_pct"] is None  # about 27 m of path
    json.dumps(m)

    road = np.tile(np.eye(4), (700, 1, 1))  # a gently winding road, 0.5 m per frame, about 350 m
    road[:, 0, 3] = 0.5 * np.arange(700)
    road[:, 1, 3] = 3.0 * np.sin(road[:, 0, 3] / 40)
    long_est = Trajectory(road.copy())
    long_est.poses[:, :3, 3] *= 1.02  # 2% too long everywhere
    m = evaluate_trajectory(Trajectory(road), long_est)
    assert m["path_length_m"] > 340 and m["kitti_t_err_pct"] == pytest.approx(2.0, rel=0.02)
    assert m["scale_error"] == pytest.approx(1 - 1 / 1.02, rel=1e-6)

    static = Trajectory(np.tile(np.eye(4), (20, 1, 1)), np.arange(20.0))
    m = evaluate_trajectory(static, static)
    assert m["ate_se3_rmse_m"] is None and "static or collinear" in m["note"] and m["rpe_trans_rmse_m"] == 0.0


def start_evo_ape(out: Path, fmt: str, gt: Path, est: Path, flags: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(EVO_APE), fmt, str(gt), str(est), *flags, "--save_results", str(out), "--no_warnings"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


@pytest.mark.skipif(not EVO_DATA.is_dir() or not EVO_APE.exists(), reason="shared data or evo_ape not available")
@pytest.mark.parametrize(
    "fmt, gt, est, align_mode",
    [
        ("tum", "freiburg1_xyz-groundtruth.txt", "freiburg1_xyz-ORB_kf_mono.txt", "se3"),
        ("tum", "freiburg1_xyz-groundtruth.txt", "freiburg1_xyz-ORB_kf_mono.txt", "sim3"),
        ("kitti", "KITTI_00_gt.txt", "KITTI_00_ORB.txt", "se3"),
        ("kitti", "KITTI_00_gt.txt", "KITTI_00_SPTAM.txt", "sim3"),
    ],
)
def test_cli_matches_evo_ape(tmp_path: Path, capsys, fmt: str, gt: str, est: str, align_mode: str) -> None:
    evo_zip = tmp_path / "evo.zip"  # evo runs in its own process while ours runs here
    evo = start_evo_ape(evo_zip, fmt, EVO_DATA / gt, EVO_DATA / est, ["-a"] if align_mode == "se3" else ["-as"])
    out = tmp_path / "ours.json"
    code = cli_main(["eval", "--gt", str(EVO_DATA / gt), "--est", str(EVO_DATA / est), "--format", fmt,
                     "--align", align_mode, "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "APE translation (m)" in printed and "RPE" in printed
    ours = json.loads(out.read_text())
    assert evo.wait(timeout=120) == 0, evo.stderr.read()
    with zipfile.ZipFile(evo_zip) as z:
        theirs = json.loads(z.read("stats.json"))
    for key in ("rmse", "mean", "median", "std", "min", "max"):
        assert ours["ape_m"][key] == pytest.approx(theirs[key], rel=1e-6)
    if fmt == "kitti":  # 3.7 km: the devkit metric is reported
        assert "KITTI devkit metric      t_err" in printed and 0.1 < ours["kitti"]["t_err_pct"] < 10
    else:
        assert ours["kitti"] is None and "not computed" in printed
        assert ours["num_poses"] == 32 and ours["summary"]["num_poses"] == 32


@pytest.mark.skipif(not EVO_DATA.is_dir(), reason="shared data not available")
@pytest.mark.parametrize(
    "args, expected",
    [
        (["--est", "missing.txt"], "missing.txt: trajectory file not found"),
        (["--est", str(EVO_DATA / "freiburg1_xyz-rgbdslam.txt"), "--format", "kitti"], "format 'kitti' needs 12"),
        (["--est", str(EVO_DATA / "KITTI_00_ORB.txt")], "cannot be matched by timestamp"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, capsys, args: list[str], expected: str) -> None:
    gt = EVO_DATA / "freiburg1_xyz-groundtruth.txt"
    if "--format" in args:
        gt = EVO_DATA / "KITTI_00_gt.txt"
    code = cli_main(["eval", "--gt", str(gt), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and err.count("\n") == 1 and err.startswith("metricslam eval: error:")

