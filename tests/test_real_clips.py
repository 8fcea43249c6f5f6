"""Real clips from ../shared/data run as a user runs them (no --config, no --preset), with accuracy bounds."""
from __future__ import annotations

import json

import pytest

from metricslam.cli import main
from shared_paths import DATA

KITTI_06 = DATA / "kitti_odometry_06_first51"
TUM_RPY = DATA / "tum_fr1_rpy_part" / "rgbd_dataset_freiburg1_rpy"


@pytest.mark.slow
@pytest.mark.skipif(not KITTI_06.is_dir(), reason="needs ../shared/data/kitti_odometry_06_first51")
def test_kitti_monocular_under_the_defaults(tmp_path, capsys):
    """60 m of straight road at 1.2 m per frame: ORB-SLAM3 monocular reaches 5.5 cm (Sim3) on these frames; the
    estimate used to zigzag across the road (8.6 m) before the two-view start and the driving preset, and stayed
    at 6.9 cm with the depth damping of hand-held clips."""
    out = tmp_path / "out"
    assert main(["run", str(KITTI_06), "--out", str(out), "--no-mesh", "--quiet"]) == 0
    assert "preset: driving" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_frames"] == 51 and metrics["prior"] == "none"
    assert metrics["ate_sim3_rmse_m"] < 0.1
    assert any("monocular start from two views" in e for e in metrics["events"])


@pytest.mark.slow
@pytest.mark.skipif(not TUM_RPY.is_dir(), reason="needs ../shared/data/tum_fr1_rpy_part")
def test_tum_rpy_monocular_under_the_defaults(tmp_path, capsys):
    """A hand-held camera turning on the spot (roll, pitch, yaw) whose frames move about 13 px: the slow-motion
    settings apply (2.95 cm Sim3 without them, the target is 2.5 cm)."""
    out = tmp_path / "out"
    assert main(["run", str(TUM_RPY), "--out", str(out), "--prior", "none", "--no-mesh", "--quiet"]) == 0
    assert "slow motion: frames move" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_frames"] == 120
    assert metrics["ate_sim3_rmse_m"] < 0.025
