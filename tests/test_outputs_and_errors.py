"""What a new user meets: output folders that never mix two runs, no leftovers after a failure or an interrupt,
checkpoints from `metricslam train` loading everywhere, one-line errors for devices torch lacks, the installed
package imported from any folder, intrinsics as a 3x3 matrix, EuRoC csv ground truth, guessed cameras."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metricslam.cli import main, terminate_as_interrupt
from metricslam.depth.loading import load_predictor
from metricslam.depth.predictor import Metric3DPredictor
from metricslam.errors import InputError, WeightsError
from metricslam.geometry.calibration import read_calibration
from metricslam.geometry.camera import Intrinsics
from metricslam.io.atomic import atomic_path
from metricslam.io.run_dir import OutputLayout, RunDir
from metricslam.io.sequences.recorded import match_depth_folder
from metricslam.io.synthetic import SyntheticSequence, write_sequence
from metricslam.io.trajectory import read_trajectory, write_tum
from metricslam.training.checkpoint import save_checkpoint
from metricslam.training.small_model import SmallModelConfig, build_model, model_description
from shared_paths import DATA

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 20
TINY = SmallModelConfig(depths=(1, 1, 1, 1), dims=(8, 16, 32, 48), decoder_channels=(8, 8, 16, 24),
                        feature_channels=16, unet_width=16, num_bins=32)
FAST = ["--set", "backend.final_iters=2"]
NO_DEVICE = "cuda:99"  # no machine has 100 GPUs: torch lacks this device everywhere


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    seq = SyntheticSequence("room", frames=FRAMES, width=128, height=96, seed=0)
    return write_sequence(seq, tmp_path_factory.mktemp("data") / "room", progress=False)


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint as `metricslam train` writes it (small network, its description and config), random weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("train") / "checkpoints" / "step_0000001.pth"
    save_checkpoint(path, {"model_state_dict": build_model("small", TINY).state_dict(),
                           "model": model_description("small", TINY), "step": 1, "config": {"steps": 1}})
    return path


def _one_line_error(capsys, argv: list[str], *expected: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    return err


def _image(path: Path, w: int = 64, h: int = 48) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------------------ output folders
def test_run_dir_refuses_an_earlier_run_and_overwrite_removes_only_its_files(tmp_path):
    layout = OutputLayout("run", files=("trajectory_tum.txt", "*.png"), folders=("checkpoints",))
    out = tmp_path / "out"
    RunDir(out, layout).check()
    assert not out.exists()  # checking creates nothing
    RunDir(out, layout).prepare()
    for name in ("trajectory_tum.txt", "map.png", "notes.txt", ".mesh.abcd1234.tmp.ply"):
        (out / name).write_text("x")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "step_1.pth").write_text("x")
    with pytest.raises(InputError, match="--overwrite"):
        RunDir(out, layout).check()
    RunDir(out, layout, overwrite=True).prepare()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # the user's file stays
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        RunDir(tmp_path / "file", layout).check()


def test_run_into_an_earlier_run_is_refused_and_overwrite_leaves_only_the_new_run(room, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(room), "--out", str(out), "--prior", "simulated", "--quiet", *FAST]) == 0
    first = {p.name for p in out.iterdir()}
    assert {"mesh.ply", "cloud.ply", "mapping.yaml", "metrics.json"} <= first
    capsys.readouterr()
    before = (out / "trajectory_tum.txt").read_text()
    _one_line_error(capsys, ["run", str(room), "--out", str(out), "--quiet", "--no-mesh"], "earlier 'metricslam run'",
                    "--overwrite")
    assert (out / "trajectory_tum.txt").read_text() == before  # refused before touching anything

    (out / "notes.txt").write_text("mine")
    (out / ".mesh.k2j4h5g6.tmp.ply").write_bytes(b"")  # what a killed write left
    assert main(["run", str(room), "--out", str(out), "--overwrite", "--quiet", "--no-mesh", "--end", "10",
                 *FAST]) == 0
    now = {p.name for p in out.iterdir()}
    # No map from the first run survives, so no map view is drawn from it either.
    assert not now & {"mesh.ply", "cloud.ply", "mesh_points.ply", "mapping.yaml", "map_views.png"}
    assert "notes.txt" in now and not any(n.startswith(".") for n in now)
    assert len(read_trajectory(out / "trajectory_tum.txt")) == 10
    assert json.loads((out / "metrics.json").read_text())["num_frames"] == 10


def test_failed_validation_leaves_no_output_folder(room, tmp_path, capsys, trained_checkpoint):
    out = tmp_path / "out"
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(trained_checkpoint.read_bytes()[:5000])
    image = _image(tmp_path / "a.png")
    cases = [
        (["run", str(room), "--out", str(out), "--prior", "metric3d", "--weights", str(tmp_path / "no.pth")],
         "weights file not found"),
        (["run", str(room), "--out", str(out), "--prior", "metric3d", "--weights", str(corrupt)], "corrupt"),
        (["run", str(room), "--out", str(out), "--device", NO_DEVICE], "--device"),
        (["run", str(room), "--out", str(out), "--set", "frontend.windw=3"], "unknown key"),
        (["depth", str(image), "--out", str(out), "--weights", str(corrupt)], "corrupt"),
        (["depth", str(tmp_path / "none.png"), "--out", str(out), "--weights", str(trained_checkpoint)], "not found"),
        (["depth", str(image), "--out", str(out), "--weights", str(trained_checkpoint), "--calib",
          str(tmp_path / "no_calib.txt")], "calibration file not found"),
    ]
    for argv, expected in cases:
        _one_line_error(capsys, argv, expected)
        assert not out.exists(), argv


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path):
    """SIGTERM (as from `kill` or a scheduler) becomes an interrupt inside a command, so atomic writes clean up."""
    target = tmp_path / "mesh.ply"
    with pytest.raises(KeyboardInterrupt):
        with terminate_as_interrupt(), atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises as soon as the signal arrives
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


def test_depth_refuses_an_earlier_run_and_overwrite_replaces_it(tmp_path, capsys, trained_checkpoint):
    images = tmp_path / "images"
    images.mkdir()
    _image(images / "a.png")
    _image(images / "b.png")
    out = tmp_path / "out"
    argv = ["depth", str(images), "--out", str(out), "--weights", str(trained_checkpoint), "--input-size", "64",
            "64", "--fx", "60"]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} >= {"a_depth.npy", "b_depth.npy", "a.ply", "cameras.json"}
    (out / "keep.ply").write_text("mine")
    _one_line_error(capsys, argv, "--overwrite")
    (images / "b.png").unlink()
    assert main([*argv, "--overwrite"]) == 0
    names = {p.name for p in out.iterdir()}
    assert "a_depth.npy" in names and "keep.ply" in names and not any(n.startswith("b") for n in names)
    assert list(json.loads((out / "cameras.json").read_text())) == ["a.png"]


# -------------------------------------------------------------------------------------------------- checkpoints
@pytest.mark.slow
def test_trained_checkpoint_loads_without_variant(tmp_path, trained_checkpoint, capsys, room):
    predictor = load_predictor(trained_checkpoint, device="cpu", input_size=(64, 64))
    assert predictor.variant == "convnext_tiny"  # the small network's family
    rgb = np.asarray(Image.open(_image(tmp_path / "a.png")))
    assert predictor.predict(rgb, Intrinsics(60, 60, 32, 24, 64, 48)).depth.shape == (48, 64)
    with pytest.raises(WeightsError, match="drop --variant"):
        load_predictor(trained_checkpoint, variant="vit_small", device="cpu")

    out = tmp_path / "depth"
    assert main(["depth", str(tmp_path / "a.png"), "--out", str(out), "--weights", str(trained_checkpoint),
                 "--input-size", "64", "64", "--fx", "60"]) == 0
    assert np.load(out / "a_depth.npy").shape == (48, 64)
    assert main(["measure", str(tmp_path / "a.png"), "--weights", str(trained_checkpoint), "--input-size", "64",
                 "64", "--fx", "60", "--points", "5,5", "40,30"]) == 0
    assert "distance:" in capsys.readouterr().out
    run_out = tmp_path / "run"
    assert main(["run", str(room), "--out", str(run_out), "--prior", "metric3d", "--weights", str(trained_checkpoint),
                 "--end", "8", "--no-mesh", "--quiet", "--set", "prior.input_size=[64, 64]",
                 "backend.final_iters=2"]) == 0
    assert json.loads((run_out / "metrics.json").read_text())["prior"] == "metric3d"


def test_train_command_writes_a_checkpoint_that_depth_loads(tmp_path, capsys):
    """`metricslam train` end to end (one step) and its checkpoint through `depth` with no --variant."""
    from metricslam.config import save_config
    from metricslam.training.config import DataConfig, DatasetConfig, TrainConfig
    from metricslam.training.synthetic_set import SyntheticSetConfig

    data = DataConfig(datasets=[DatasetConfig(str(tmp_path / "data" / "train" / "room" / "annotation.json"),
                                              synthetic=SyntheticSetConfig(frames_per_camera=1, focals=(300.0,)))],
                      crop_size=(64, 64), samples_per_epoch=2)
    cfg = TrainConfig(out_dir=str(tmp_path / "train"), steps=1, batch_size=2, threads=1, tensorboard=False,
                      progress=False, data=data)
    cfg.model.small = TINY
    save_config(cfg, tmp_path / "train.yaml")
    assert main(["train", "--config", str(tmp_path / "train.yaml")]) == 0
    captured = capsys.readouterr()
    assert "rendering the synthetic" in captured.err
    checkpoint = next((tmp_path / "train" / "checkpoints").glob("step_*.pth"))
    _one_line_error(capsys, ["train", "--config", str(tmp_path / "train.yaml")], "--overwrite")
    image = _image(tmp_path / "a.png")
    assert main(["depth", str(image), "--out", str(tmp_path / "depth"), "--weights", str(checkpoint),
                 "--input-size", "64", "64", "--fx", "60"]) == 0


# ------------------------------------------------------------------------------------------ errors and inputs
@pytest.mark.parametrize("command", ["run", "depth", "measure", "mesh", "demo"])
def test_a_device_torch_lacks_is_a_one_line_error(command, tmp_path, capsys, trained_checkpoint):
    image = str(_image(tmp_path / "a.png"))
    argv = {
        "run": ["run", str(tmp_path), "--out", str(tmp_path / "o")],
        "depth": ["depth", image, "--out", str(tmp_path / "o"), "--weights", str(trained_checkpoint)],
        "measure": ["measure", image, "--weights", str(trained_checkpoint), "--points", "1,1", "2,2"],
        "mesh": ["mesh", str(tmp_path)],
        "demo": ["demo", "--out", str(tmp_path / "o"), "--set", f"device={NO_DEVICE}"],
    }[command]
    if command != "demo":
        argv += ["--device", NO_DEVICE]
    _one_line_error(capsys, argv, NO_DEVICE)
    assert not (tmp_path / "o").exists()
    if not torch.backends.mps.is_available():
        _one_line_error(capsys, ["run", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "mps"], "MPS")


def test_the_installed_package_imports_from_any_folder(tmp_path):
    """A folder named like the package in the working directory (e.g. the clone itself) must not shadow it."""
    (tmp_path / "metricslam").mkdir()
    code = ("import metricslam, metricslam.weights as w; print(metricslam.__file__); print(len(w.registry()))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    file, count = proc.stdout.split()
    assert Path(file) == ROOT / "metricslam" / "__init__.py" and int(count) >= 5
    proc = subprocess.run([sys.executable, "-m", "metricslam.cli", "weights", "list"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "vit_small" in proc.stdout, proc.stderr


def test_predict_accepts_a_3x3_matrix():
    torch.manual_seed(0)
    predictor = Metric3DPredictor("convnext_tiny", None, device="cpu", input_size=(64, 64), allow_random=True,
                                  model=build_model("small", TINY))
    rgb = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    K = np.array([[60.0, 0, 31], [0, 62, 25], [0, 0, 1]])
    by_matrix = predictor.predict(rgb, K).depth
    np.testing.assert_array_equal(by_matrix, predictor.predict(rgb, Intrinsics.from_K(K, 64, 48)).depth)
    # The focal length reaches the metric scale: doubling it doubles the depth.
    np.testing.assert_allclose(predictor.predict(rgb, K * [[2], [2], [1]]).depth, 2 * by_matrix, rtol=1e-4)
    with pytest.raises(InputError, match="3x3"):
        predictor.predict(rgb, np.eye(4))


def test_eval_reads_euroc_ground_truth_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 50
    ns = 1403715524907143168 + np.arange(n) * 50_000_000
    xyz = np.cumsum(rng.normal(0, 0.05, (n, 3)), axis=0)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)  # w x y z
    gt = tmp_path / "data.csv"
    gt.write_text("#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], q_RS_y [], q_RS_z []\n"
                  + "".join(f"{t}," + ",".join(f"{v:.9f}" for v in (*p, *qq)) + "\n" for t, p, qq in zip(ns, xyz, q)))
    traj = read_trajectory(gt)
    np.testing.assert_allclose(traj.timestamps, ns * 1e-9)
    np.testing.assert_allclose(traj.positions, xyz, atol=1e-9)
    est = tmp_path / "est.txt"
    write_tum(est, traj)
    assert main(["eval", "--gt", str(gt), "--est", str(est)]) == 0
    out = capsys.readouterr().out
    assert f"{n} poses paired" in out and "rmse 0.000000" in out


@pytest.mark.skipif(not (DATA / "trajectories" / "evo_test_data").is_dir(), reason="shared evo test data absent")
def test_eval_euroc_csv_against_evo_example(capsys):
    """evo's own example: V1_02 ground truth (EuRoC csv) against an estimate in TUM format."""
    folder = DATA / "trajectories" / "evo_test_data"
    assert main(["eval", "--gt", str(folder / "V102_groundtruth.csv"), "--est", str(folder / "V102.txt"),
                 "--align", "sim3", "--max-diff", "0.01"]) == 0
    out = capsys.readouterr().out
    rmse = float(out.split("rmse ")[1].split()[0])
    assert rmse == pytest.approx(0.083841, abs=2e-6) and "798 poses paired" in out  # `evo_ape euroc GT EST -as`


def test_principal_point_outside_the_image_warns(tmp_path, caplog):
    calib = tmp_path / "K.txt"
    calib.write_text("500 500 320 240\n")
    with caplog.at_level(logging.WARNING):
        read_calibration(calib, 640, 480)
    assert not caplog.records
    calib.write_text("320 240 500 500\n")  # values in the wrong order
    with caplog.at_level(logging.WARNING):
        read_calibration(calib, 640, 480)
    assert "principal point" in caplog.text and "outside" in caplog.text


def test_run_without_calibration_guesses_with_a_warning(room, tmp_path, caplog):
    folder = tmp_path / "nocalib"
    shutil.copytree(room / "images", folder / "images")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert main(["run", str(folder), "--out", str(out), "--quiet", "--no-mesh", "--end", "8", *FAST]) == 0
    warning = [r.getMessage() for r in caplog.records if "GUESSING" in r.getMessage()]
    assert len(warning) == 1 and "metric scale" in warning[0] and "--calib FILE" in warning[0]
    from metricslam.slam.reconstruction import Reconstruction

    assert Reconstruction.load(out).intrinsics.fx == pytest.approx(1.2 * 128)


def test_set_may_come_before_source(room, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--set", "backend.final_iters=2", str(room), "--out", str(out), "--quiet", "--no-mesh",
                 "--end", "6"]) == 0
    from metricslam.config import load_config
    from metricslam.slam.config import SlamConfig

    assert load_config(SlamConfig, out / "config.yaml").backend.final_iters == 2
    _one_line_error(capsys, ["run", "--set", "a=1", "b", "c", "--out", str(out)], "'b' is not KEY=VALUE")


def test_depth_folder_is_checked_for_the_selected_frames_only(room, tmp_path, capsys):
    depth = tmp_path / "depth"
    depth.mkdir()
    for p in sorted((room / "depth").iterdir())[:8]:
        shutil.copy(p, depth / p.name)
    out = tmp_path / "out"
    assert main(["run", str(room), "--out", str(out), "--prior", "sensor", "--depth", str(depth), "--end", "8",
                 "--quiet", "--no-mesh", *FAST]) == 0
    _one_line_error(capsys, ["run", str(room), "--out", str(tmp_path / "o2"), "--prior", "folder", "--depth",
                             str(depth), "--start", "4", "--end", "12"], "no depth map for 4 of the 8 selected")

    class Video:  # frames of a video are named by their index
        def __len__(self):
            return 3

        def stem(self, i):
            return f"{i:06d}"

    with pytest.raises(InputError, match="video frames are named by their index from 000000"):
        match_depth_folder(Video(), depth)


def test_depth_reads_dataset_layouts(room, tmp_path, trained_checkpoint):
    """The generic layout (images/ and K.txt), as `run` reads it: the camera comes from the dataset."""
    out = tmp_path / "out"
    assert main(["depth", str(room), "--out", str(out), "--weights", str(trained_checkpoint), "--input-size", "64",
                 "64"]) == 0
    cameras = json.loads((out / "cameras.json").read_text())
    assert len(cameras) == FRAMES and all(c["source"] == "sequence" for c in cameras.values())
    K = read_calibration(room / "K.txt", 128, 96)
    assert next(iter(cameras.values()))["fx"] == pytest.approx(K.fx)


def test_weights_list_labels_its_columns(capsys):
    assert main(["weights", "list"]) == 0
    header = capsys.readouterr().out.splitlines()[1].split()
    assert header == ["NAME", "FILE", "SIZE", "LICENCE", "CACHED"]


def test_mapping_skipped_says_why(caplog):
    from metricslam.mapping.export import MappingConfig, map_reconstruction
    from metricslam.mapping.tsdf import TSDFConfig

    class OneKeyframe:  # the fields map_reconstruction reads before it gives up
        num_keyframes = 1
        kf_poses_wc = np.eye(4)[None]

    with caplog.at_level(logging.WARNING):
        outputs = map_reconstruction(OneKeyframe(), Path("unused"), MappingConfig(tsdf=TSDFConfig(min_weight=2)))
    assert outputs is None
    assert "too few keyframes" in caplog.text and "moved too little" in caplog.text
