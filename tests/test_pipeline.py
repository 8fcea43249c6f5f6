"""metricslam.pipeline: frame prefetching, one run end to end (plumbing, not accuracy), metrics, configs/slam."""
from __future__ import annotations

import json
import threading
import time
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from metricslam.cli import main
from metricslam.cli._summary import format_summary
from metricslam.config import load_config
from metricslam.depth.priors import SimulatedPrior
from metricslam.errors import InputError, MetricSlamError
from metricslam.io.prefetch import prefetched
from metricslam.io.synthetic import SyntheticSequence
from metricslam.io.trajectory import read_trajectory
from metricslam.mapping.export import MappingConfig, map_reconstruction, rigid_poses
from metricslam.metrics.run_report import run_metrics
from metricslam.pipeline import run_sequence
from metricslam.slam.config import SlamConfig, default_config_yaml
from metricslam.slam.reconstruction import Reconstruction
from metricslam.slam.system import Slam
from metricslam.testing.oracle import oracle_reconstruction

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "slam"
METRIC_KEYS = ("ate_se3_rmse_m", "ate_sim3_rmse_m", "sim3_scale", "rpe_trans_rmse_m", "num_frames", "num_keyframes",
               "fps", "kitti_t_err_pct", "kitti_r_err_deg_per_100m", "prior", "metric", "events", "scale_note")


class _SlowFrames:
    """An iterable that records which items were read and when."""

    def __init__(self, n: int, delay: float = 0.0, fail_at: int | None = None):
        self.n, self.delay, self.fail_at = n, delay, fail_at
        self.read: list[int] = []
        self.reader: set[str] = set()

    def __iter__(self):
        for i in range(self.n):
            if i == self.fail_at:
                raise InputError(f"frame {i}: unreadable")
            time.sleep(self.delay)
            self.read.append(i)
            self.reader.add(threading.current_thread().name)
            yield i


def test_prefetch_keeps_order_and_reads_ahead_in_a_thread():
    frames = _SlowFrames(10)
    with closing(prefetched(frames, depth=3)) as items:
        first = next(items)
        deadline = time.time() + 5
        while len(frames.read) < 4 and time.time() < deadline:  # 1 taken + 3 waiting in the queue
            time.sleep(0.01)
        time.sleep(0.1)
        # Bounded: the queue holds `depth`, plus at most one frame read and waiting for a free slot.
        assert first == 0 and 4 <= len(frames.read) <= 5
        rest = list(items)
    assert rest == list(range(1, 10))
    assert frames.reader == {"frame-prefetch"}


def test_prefetch_reraises_reader_errors_at_that_frame():
    got = []
    with pytest.raises(InputError, match="frame 3: unreadable"):
        for item in prefetched(_SlowFrames(6, fail_at=3)):
            got.append(item)
    assert got == [0, 1, 2]


def test_prefetch_stops_its_thread_when_closed_early():
    before = {t.ident for t in threading.enumerate()}
    gen = prefetched(_SlowFrames(1000, delay=0.001), depth=2)
    next(gen)
    gen.close()
    time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name == "frame-prefetch" and t.ident not in before]


class _CountingPrior(SimulatedPrior):
    def __init__(self, config):
        super().__init__(config)
        self.calls = 0

    def __call__(self, frame):
        self.calls += 1
        return super().__call__(frame)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    seq = SyntheticSequence("room", frames=24, width=128, height=96, seed=1)
    cfg = load_config(SlamConfig, overrides=["prior.kind=simulated", "backend.final_iters=4"])
    prior = _CountingPrior(cfg.prior.simulated)
    out = tmp_path_factory.mktemp("run")
    return seq, cfg, prior, run_sequence(seq, out, cfg, progress=False, prior=prior)


def test_run_writes_every_output_with_one_pose_per_frame(synthetic_run):
    seq, cfg, prior, result = synthetic_run
    out = result.out_dir
    for name in ("trajectory_tum.txt", "trajectory_kitti.txt", "keyframes.npz", "config.yaml", "metrics.json",
                 "groundtruth_tum.txt", "trajectory.png"):
        assert (out / name).is_file() and name in result.files, name
    tum = read_trajectory(out / "trajectory_tum.txt", "tum")
    assert len(tum) == len(seq) == result.reconstruction.num_frames
    np.testing.assert_allclose(tum.timestamps, seq.timestamps, atol=1e-6)
    assert len(read_trajectory(out / "trajectory_kitti.txt", "kitti")) == len(seq)
    assert Reconstruction.load(out).num_keyframes == result.reconstruction.num_keyframes
    assert load_config(SlamConfig, out / "config.yaml") == cfg
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_run_uses_the_given_prior_once_per_keyframe(synthetic_run):
    _, _, prior, result = synthetic_run
    assert prior.calls >= result.reconstruction.num_keyframes >= 1
    assert result.reconstruction.prior == "simulated" and result.reconstruction.metric


def test_run_metrics_json(synthetic_run):
    seq, _, _, result = synthetic_run
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(metrics)
    assert metrics == result.metrics
    assert metrics["num_frames"] == len(seq) and metrics["num_poses"] == len(seq)
    assert metrics["num_keyframes"] == result.reconstruction.num_keyframes
    assert metrics["fps"] == pytest.approx(result.fps) and result.fps > 0
    assert metrics["fps"] == pytest.approx(len(seq) / metrics["seconds"])
    assert metrics["scale_note"] == "metric" and metrics["prior"] == "simulated"
    assert metrics["kitti_t_err_pct"] is None  # a room path is far shorter than 100 m
    assert np.isfinite(metrics["ate_se3_rmse_m"]) and metrics["ate_sim3_rmse_m"] <= metrics["ate_se3_rmse_m"] + 1e-9
    summary = format_summary(result)
    assert f"frames    {len(seq)}" in summary and "ATE       SE3" in summary and str(result.out_dir) in summary


def test_metrics_leave_out_nonfinite_poses(synthetic_run):
    seq, _, _, result = synthetic_run
    rec = result.reconstruction
    broken = Reconstruction(**{**rec.__dict__, "poses_wc": rec.poses_wc.copy()})
    broken.poses_wc[[3, 7]] = np.nan
    metrics = run_metrics(broken, seq.gt_trajectory(), fps=10.0, seconds=2.4)
    assert metrics["num_frames_nonfinite"] == 2 and metrics["num_poses"] == len(seq) - 2
    assert np.isfinite(metrics["ate_se3_rmse_m"])
    assert any("2 frames have no finite pose" in e for e in metrics["events"])


def test_no_prior_run_reports_arbitrary_scale(tmp_path):
    seq = SyntheticSequence("room", frames=12, width=96, height=72, seed=2)
    cfg = load_config(SlamConfig, overrides=["prior.kind=none"])
    result = run_sequence(seq, tmp_path, cfg, progress=False)
    assert not result.reconstruction.metric
    assert result.metrics["metric"] is False and result.metrics["scale_note"].startswith("arbitrary")


def test_slam_config_files_load_and_default_matches_the_dataclass():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert "default" in {p.stem for p in files}
    for path in files:
        assert isinstance(load_config(SlamConfig, path), SlamConfig)
    assert load_config(SlamConfig, CONFIGS / "default.yaml") == SlamConfig()
    assert (CONFIGS / "default.yaml").read_text() == default_config_yaml(), (
        "configs/slam/default.yaml is out of date with SlamConfig; regenerate it: "
        "metricslam config --write configs/slam/default.yaml"
    )


def test_config_command_prints_the_defaults(tmp_path, capsys):
    assert main(["config"]) == 0
    assert capsys.readouterr().out == default_config_yaml()
    assert main(["config", "--write", str(tmp_path / "d.yaml")]) == 0
    assert load_config(SlamConfig, tmp_path / "d.yaml") == SlamConfig()


def test_the_default_prior_is_none_not_the_simulated_test_prior():
    assert SlamConfig().prior.kind == "none"


def test_metric_follows_the_priors_that_arrived(tmp_path):
    """A sensor prior on frames without depth gives no depth: the result is not metric, whatever the class."""
    seq = SyntheticSequence("room", frames=12, width=96, height=72, seed=2)
    cfg = load_config(SlamConfig, overrides=["prior.kind=sensor"])
    with_depth = Slam(cfg)
    without_depth = Slam(cfg)
    for i in range(len(seq)):
        frame = seq[i]
        with_depth.track(frame)
        without_depth.track(replace(frame, depth=None))
    assert with_depth.finish().metric
    assert not without_depth.finish().metric


def test_mapping_step_writes_the_map_of_a_reconstruction(tmp_path):
    seq = SyntheticSequence("room", frames=9, width=128, height=96, seed=3)
    rec = oracle_reconstruction(seq, keyframe_every=2)
    outputs = map_reconstruction(rec, tmp_path, MappingConfig())
    assert outputs is not None and outputs.fusion.mesh.has_triangles()
    assert [p.name for p in outputs.files] == ["mesh.ply", "mesh_points.ply", "cloud.ply", "mapping.yaml"]
    assert all(p.is_file() for p in outputs.files)
    assert outputs.cloud_data is not None and len(outputs.cloud_data[0]) == outputs.cloud_points


def test_mapping_step_skips_a_single_keyframe(tmp_path, caplog):
    seq = SyntheticSequence("room", frames=2, width=96, height=72, seed=3)
    rec = oracle_reconstruction(seq, keyframe_every=2)
    assert rec.num_keyframes == 1
    assert map_reconstruction(rec, tmp_path, MappingConfig()) is None
    assert "mapping skipped" in caplog.text and not (tmp_path / "mesh.ply").exists()


def test_live_view_records_a_rerun_file(tmp_path):
    pytest.importorskip("rerun")
    seq = SyntheticSequence("room", frames=8, width=96, height=72, seed=4)
    cfg = load_config(SlamConfig, overrides=["prior.kind=simulated"])
    run_sequence(seq, tmp_path / "run", cfg, progress=False, viz=str(tmp_path / "live.rrd"))
    assert (tmp_path / "live.rrd").stat().st_size > 10_000  # poses, 8 images and keyframe points
    with pytest.raises(MetricSlamError, match="unknown viewer"):
        run_sequence(seq, tmp_path / "run2", cfg, progress=False, viz="vtk")


def test_mapping_step_skips_broken_keyframe_poses(tmp_path, caplog):
    seq = SyntheticSequence("room", frames=6, width=96, height=72, seed=3)
    rec = oracle_reconstruction(seq, keyframe_every=2)
    rec.kf_poses_wc[1, :3, :3] *= 1e-3  # a collapsed rotation, as a diverged BA can leave behind
    assert rigid_poses(rec.kf_poses_wc).tolist() == [True, False, True]
    assert map_reconstruction(rec, tmp_path, MappingConfig()) is None
    assert "not rigid transforms (first: keyframe 1)" in caplog.text
