"""Real clips from ../shared/data run as a user runs them (no --config, no --preset), with accuracy bounds."""
from __future__ import annotations

import json

import pytest

from metricslam.cli import main
from shared_paths import DATA

KITTI_06 = DATA / "kitti_odometry_06_first51"


@pytest.mark.slow
@pytest.mark.skipif(not KITTI_06.is_dir(), reason="needs ../shared/data/kitti_odometry_06_first51")
def test_kitti_monocular_under_the_defaults(tmp_path, capsys):
    """60 m of straight road at 1.2 m per frame: ORB-SLAM3 monocular reaches 5.5 cm (Sim3) on these frames; the
    estimate used to zigzag across the road (8.6 m) before the two-view start and the driving preset."""
    out = tmp_path / "out"
    assert main(["run", str(KITTI_06), "--out", str(out), "--no-mesh", "--quiet"]) == 0
    assert "preset: driving" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_frames"] == 51 and metrics["prior"] == "none"
    assert metrics["ate_sim3_rmse_m"] < 0.15
    assert any("monocular start from two views" in e for e in metrics["events"])
