"""Trainer: torchrun DDP on CPU (gloo) equals one process, exact resume, overfitting, official-layout checkpoints."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from metricslam.config import load_config, save_config
from metricslam.depth.loading import load_predictor
from metricslam.depth.predictor import Metric3DPredictor
from metricslam.errors import WeightsError
from metricslam.training.checkpoint import load_checkpoint
from metricslam.training.config import DataConfig, DatasetConfig, TrainConfig
from metricslam.training.data import AnnotationDataset
from metricslam.training.small_model import SmallModelConfig
from metricslam.training.synthetic_set import SyntheticSetConfig, write_synthetic_set
from metricslam.training.trainer import Trainer, train
from metricslam.training.transforms import AugmentConfig

TINY_MODEL = SmallModelConfig(depths=(1, 1, 1, 1), dims=(8, 16, 32, 48), decoder_channels=(8, 8, 16, 24),
                              feature_channels=16, unet_width=16, num_bins=32)
# Subprocesses: one thread each and no spinning OpenMP workers (the CPU is shared).
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def annotations(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_set(root, SyntheticSetConfig(focals=(400.0, 900.0), frames_per_camera=2, normals=True))


def tiny_config(out: Path, annotations: list[Path], **changes) -> TrainConfig:
    data = DataConfig(datasets=[DatasetConfig(str(p)) for p in annotations], crop_size=(64, 64),
                      samples_per_epoch=16)
    cfg = TrainConfig(out_dir=str(out), steps=4, batch_size=4, seed=5, threads=1, save_every=2, tensorboard=False,
                      progress=False, data=data)
    cfg.model.small = TINY_MODEL
    cfg.loss.normal = 0.1  # the set has ground-truth normals: exercise every term
    cfg.loss.vnl_triplets = 200
    return replace(cfg, **changes)


def run_child(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """Run a command in its own process group; on a timeout the whole group (torchrun's workers too) is ended."""
    with subprocess.Popen(cmd, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"{cmd[0]} timed out: {err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path, annotations):
    cfg = tiny_config(tmp_path / "ddp", annotations, steps=3, save_every=3)
    config_file = tmp_path / "train.yaml"
    save_config(cfg, config_file)
    driver = tmp_path / "driver.py"
    # Each rank saves its own weights after training, to compare them across processes.
    driver.write_text(textwrap.dedent(f"""
        import os, torch
        from metricslam.config import load_config
        from metricslam.training.config import TrainConfig
        from metricslam.training.distributed import shutdown_distributed
        from metricslam.training.trainer import Trainer
        trainer = Trainer(load_config(TrainConfig, {str(config_file)!r}))
        trainer.run()
        torch.save(trainer.model.state_dict(), os.path.join({str(tmp_path)!r}, f"rank{{trainer.info.rank}}.pt"))
        shutdown_distributed()
    """))
    torchrun = Path(sys.executable).with_name("torchrun")
    done = run_child([str(torchrun), "--standalone", "--nproc_per_node", "2", str(driver)])
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # parameters and BatchNorm statistics
    saved = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "step_0000003.pth")
    assert all(torch.equal(saved["model_state_dict"][k], rank0[k]) for k in rank0)
    ddp_log = read_log(tmp_path / "ddp")

    # The same global batch in one process, through the command line.
    single = tmp_path / "single"
    done = run_child([sys.executable, "-m", "metricslam.cli", "train", "--config", str(config_file), "--out", str(single)])
    assert done.returncode == 0, done.stderr[-3000:]
    single_log = read_log(single)
    assert [r["step"] for r in ddp_log] == [1, 2, 3] == [r["step"] for r in single_log]
    assert single_log[0]["total"] == pytest.approx(ddp_log[0]["total"], rel=1e-5)
    for term in ("rpnl", "silog", "vnl", "confidence", "normal"):
        assert single_log[0][term] == pytest.approx(ddp_log[0][term], rel=1e-4, abs=1e-6)
    # The averaged gradient (through the batch statistics shared across processes) is the global batch's.
    assert single_log[0]["grad_norm"] == pytest.approx(ddp_log[0]["grad_norm"], rel=1e-4)
    # Later steps follow the same trajectory (Adam magnifies float summation-order differences a little).
    assert single_log[-1]["total"] == pytest.approx(ddp_log[-1]["total"], rel=1e-2)


def test_resume_reproduces_the_following_steps_exactly(tmp_path, annotations):
    cfg = tiny_config(tmp_path / "full", annotations, steps=6, save_every=3)
    full = train(cfg)
    assert [p.name for p in sorted((tmp_path / "full" / "checkpoints").iterdir())] == [
        "step_0000003.pth", "step_0000006.pth"]
    # samples_per_epoch 16 / batch 4 = 4 steps per epoch: the resumed run also crosses an epoch boundary.
    resumed = train(replace(cfg, out_dir=str(tmp_path / "resumed")),
                    resume=str(tmp_path / "full" / "checkpoints" / "step_0000003.pth"))
    assert [r["step"] for r in resumed.history] == [4, 5, 6]
    for a, b in zip(full.history[3:], resumed.history):
        assert a["total"] == b["total"] and a["grad_norm"] == b["grad_norm"]
        assert a["lr_decoder"] == b["lr_decoder"]
    end_a = load_checkpoint(full.checkpoint)["model_state_dict"]
    end_b = load_checkpoint(resumed.checkpoint)["model_state_dict"]
    assert all(torch.equal(end_a[k], end_b[k]) for k in end_a)
    # 'auto' resumes from the newest checkpoint of the output folder: nothing is left to do.
    assert train(cfg, resume="auto").history == []


@pytest.mark.slow
def test_overfits_a_tiny_set_and_checkpoint_loads_strictly_into_the_predictor(tmp_path, annotations):
    one = tmp_path / "one.json"
    data = json.loads(annotations[0].read_text())
    entry = {k: (str(annotations[0].parent / v) if k in ("rgb", "depth", "normal") else v)
             for k, v in data["files"][0].items()}
    one.write_text(json.dumps({"files": [entry]}))
    still = AugmentConfig(resize_range=(1.0, 1.0), random_crop=False, flip_prob=0.0, photometric=False)
    cfg = tiny_config(tmp_path / "fit", [one], steps=120, save_every=120, batch_size=2)
    cfg.data.augment = still
    cfg.data.crop_size = (128, 160)
    cfg.data.samples_per_epoch = 2
    cfg.optim.encoder_lr = cfg.optim.decoder_lr = 3e-3
    cfg.loss.silog_variance_focus = 0.0  # full weight on the scale: the fit must be metric, not only relative
    cfg.tensorboard = True
    result = train(cfg)
    losses = [r["total"] for r in result.history]
    assert np.mean(losses[-5:]) < np.mean(losses[:3]) / 10, (losses[:3], losses[-5:])
    assert list((tmp_path / "fit" / "tb").glob("events.out.tfevents.*"))

    state = load_checkpoint(result.checkpoint)
    assert all(k.startswith("depth_model.encoder.") or k.startswith("depth_model.decoder.")
               for k in state["model_state_dict"])
    sample = AnnotationDataset(one).load(0)
    predictor = load_predictor(result.checkpoint, device="cpu", input_size=(128, 160))
    pred = predictor.predict(sample.rgb, sample.intrinsics).depth
    rel = np.abs(pred - sample.depth)[sample.valid] / sample.depth[sample.valid]
    assert np.median(rel) < 0.1  # metric depth through the predictor's de-canonical path
    with pytest.raises(WeightsError, match="does not match"):
        Metric3DPredictor("convnext_tiny", result.checkpoint, device="cpu")

    # Fine-tuning starts from the given official-layout checkpoint.
    tune = tiny_config(tmp_path / "tune", [one], steps=1)
    tune.model.init_weights = str(result.checkpoint)
    trainer = Trainer(tune)
    assert all(torch.equal(v, state["model_state_dict"][k]) for k, v in trainer.model.state_dict().items())


def test_config_file_and_cli_errors(tmp_path, annotations):
    cfg = load_config(TrainConfig, Path(__file__).resolve().parents[1] / "configs" / "train" / "synthetic_small.yaml",
                      ["steps=3"])
    assert cfg.model.variant == "small" and cfg.data.cstm == "label" and len(cfg.data.datasets) == 2
    from metricslam.cli import main
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    bad = tiny_config(tmp_path / "bad", annotations, batch_size=3)
    save_config(replace(bad, data=replace(bad.data, crop_size=(60, 64))), tmp_path / "bad.yaml")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
