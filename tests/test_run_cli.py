"""`metricslam run`: short runs through the command line (plumbing, not accuracy) and one-line user errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metricslam.cli import main
from metricslam.config import load_config
from metricslam.io.synthetic import SyntheticSequence, write_sequence
from metricslam.io.trajectory import read_trajectory
from metricslam.slam.config import SlamConfig
from shared_paths import DATA

HOLOLENS = DATA / "hololens_000"
FRAMES = 30
METRIC_KEYS = ("ate_se3_rmse_m", "ate_sim3_rmse_m", "sim3_scale", "rpe_trans_rmse_m", "num_frames", "num_keyframes",
               "fps", "kitti_t_err_pct", "kitti_r_err_deg_per_100m", "prior", "metric", "events", "scale_note")


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    seq = SyntheticSequence("room", frames=FRAMES, width=128, height=96, seed=0)
    return write_sequence(seq, tmp_path_factory.mktemp("data") / "room", progress=False)


def _error_line(capsys, argv: list[str]) -> str:
    """Run the CLI expecting a user error: exit code 2 and exactly one line on stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("metricslam run: error: ")
    return err


def _check_outputs(out: Path, frames: int) -> dict:
    for name in ("trajectory_tum.txt", "trajectory_kitti.txt", "keyframes.npz", "config.yaml", "metrics.json",
                 "trajectory.png"):
        assert (out / name).is_file(), name
    assert len(read_trajectory(out / "trajectory_tum.txt", "tum")) == frames
    assert len(read_trajectory(out / "trajectory_kitti.txt", "kitti")) == frames
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(metrics)
    assert metrics["num_frames"] == frames and metrics["fps"] > 0 and metrics["num_keyframes"] >= 1
    return metrics


def test_run_simulated_prior(room, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(room), "--out", str(out), "--prior", "simulated", "--set", "backend.final_iters=4"]) == 0
    captured = capsys.readouterr()
    metrics = _check_outputs(out, FRAMES)
    assert metrics["prior"] == "simulated" and metrics["metric"] is True and metrics["scale_note"] == "metric"
    # The progress bar shows frames, keyframes and the rate.
    assert f"{FRAMES}/{FRAMES}" in captured.err and "keyframes=" in captured.err and "frame/s" in captured.err
    assert "ATE       SE3" in captured.out and str(out) in captured.out
    assert (out / "keyframes.png").is_file() and (out / "translation_error.png").is_file()
    cfg = load_config(SlamConfig, out / "config.yaml")
    assert cfg.prior.kind == "simulated" and cfg.backend.final_iters == 4
    assert load_config(SlamConfig, out / "config.yaml") == cfg  # a written config reads back unchanged


def test_run_without_prior_is_monocular_with_a_note(room, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(room), "--out", str(out), "--quiet", "--no-mesh", "--stride", "2"]) == 0
    captured = capsys.readouterr()
    assert "scale of the trajectory and map is arbitrary" in captured.err
    metrics = _check_outputs(out, FRAMES // 2)
    assert metrics["prior"] == "none" and metrics["metric"] is False and metrics["scale_note"].startswith("arbitrary")
    assert load_config(SlamConfig, out / "config.yaml").prior.kind == "none"
    assert not (out / "mesh.ply").exists()


@pytest.mark.skipif(not HOLOLENS.is_dir(), reason="shared data folder hololens_000 not present")
def test_run_hololens_sensor_prior(tmp_path, capsys):
    out = tmp_path / "holo"
    config = tmp_path / "small.yaml"
    config.write_text("image_area: 24000\n")
    assert main(["run", str(HOLOLENS), "--out", str(out), "--prior", "sensor", "--end", "10", "--quiet", "--no-mesh",
                 "--config", str(config)]) == 0
    metrics = _check_outputs(out, 10)
    assert metrics["prior"] == "sensor" and metrics["metric"] is True
    gt = read_trajectory(out / "groundtruth_tum.txt", "tum")
    gt_file = np.loadtxt(HOLOLENS / "poses.txt")[:10].reshape(-1, 4, 4)
    np.testing.assert_allclose(gt.poses, gt_file, atol=1e-4)  # TUM files keep ~6 digits


def test_error_missing_calibration_from_the_python_api(room, tmp_path):
    """`run` guesses a camera (tests/test_outputs_and_errors.py); open_sequence asks for one unless told to guess."""
    from metricslam.errors import InputError
    from metricslam.io.sequences import open_sequence

    folder = tmp_path / "nocalib"
    shutil.copytree(room / "images", folder / "images")
    with pytest.raises(InputError, match="no calibration found; pass --calib FILE"):
        open_sequence(folder)


def test_error_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = _error_line(capsys, ["run", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert "empty" in err and "cannot tell the layout" in err


def test_error_depth_folder_not_matching_images(room, tmp_path, capsys):
    depth = tmp_path / "depth"
    depth.mkdir()
    for p in sorted((room / "depth").iterdir())[:5]:
        shutil.copy(p, depth / p.name)
    for prior in ("sensor", "folder"):
        err = _error_line(capsys, ["run", str(room), "--out", str(tmp_path / "o"), "--prior", prior,
                                   "--depth", str(depth)])
        assert f"no depth map for {FRAMES - 5} of the {FRAMES} selected images" in err


def test_error_unknown_set_key(room, tmp_path, capsys):
    err = _error_line(capsys, ["run", str(room), "--out", str(tmp_path / "o"), "--set", "frontend.windw=3"])
    assert "unknown key 'windw'" in err and "window" in err
    err = _error_line(capsys, ["run", str(room), "--out", str(tmp_path / "o"), "--map-set", "tsdf.voxel=0.1"])
    assert "unknown key 'voxel'" in err and "voxel_size" in err


def test_error_prior_needs_depth_the_sequence_lacks(room, tmp_path, capsys):
    folder = tmp_path / "rgb_only"
    shutil.copytree(room / "images", folder / "images")
    shutil.copy(room / "K.txt", folder / "K.txt")
    err = _error_line(capsys, ["run", str(folder), "--out", str(tmp_path / "o"), "--prior", "sensor"])
    assert "no depth images for --prior sensor" in err and "--depth DIR" in err


def test_error_depth_flag_unused_by_prior(room, tmp_path, capsys):
    err = _error_line(capsys, ["run", str(room), "--out", str(tmp_path / "o"), "--depth", str(room / "depth")])
    assert "not used by --prior none" in err
    err = _error_line(capsys, ["run", str(room), "--out", str(tmp_path / "o"), "--weights", "x.pth"])
    assert "only used by --prior metric3d" in err


def test_error_folder_prior_without_depth(room, tmp_path, capsys):
    err = _error_line(capsys, ["run", str(room), "--out", str(tmp_path / "o"), "--prior", "folder"])
    assert "--depth DIR" in err


def test_error_exit_code_from_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "metricslam.cli", "run", str(tmp_path / "missing"), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "no such file or folder" in proc.stderr


@pytest.mark.slow
def test_run_with_metric3d_prior_and_random_checkpoint(room, tmp_path, capsys):
    """--prior metric3d runs the network once per keyframe from a checkpoint given by --weights, and caches it."""
    import torch

    from metricslam.depth.models.metric3d import build_metric3d

    torch.manual_seed(0)
    weights = tmp_path / "random_convnext_tiny.pth"
    torch.save({"model_state_dict": build_metric3d("convnext_tiny").state_dict()}, weights)
    cache = tmp_path / "cache"
    argv = ["run", str(room), "--out", str(tmp_path / "out"), "--prior", "metric3d", "--weights", str(weights),
            "--variant", "convnext_tiny", "--end", "12", "--no-mesh", "--set", "prior.input_size=[64, 96]",
            f"prior.cache_dir={cache}", "backend.final_iters=2"]
    assert main(argv) == 0
    metrics = _check_outputs(tmp_path / "out", 12)
    assert metrics["prior"] == "metric3d" and metrics["metric"] is True
    # One prediction per keyframe made (some may later be removed as redundant), not one per frame.
    cached = sorted(cache.rglob("*.npz"))
    assert metrics["num_keyframes"] <= len(cached) < 12


def test_demo_runs_the_pipeline_on_a_rendered_room(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "12", "--width", "128", "--height", "96", "--no-mesh",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "ATE" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_frames"] == 12 and metrics["prior"] == "simulated"
