"""The prior schedule: transfer geometry, which keyframes run the prior, and the background worker's determinism."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from metricslam.config import apply_overrides
from metricslam.depth.priors import SimulatedPrior
from metricslam.depth.simulated import SimulatedPriorConfig
from metricslam.errors import MetricSlamError
from metricslam.geometry import se3
from metricslam.io.frame import Frame
from metricslam.io.synthetic import SyntheticSequence
from metricslam.io.trajectory import Trajectory
from metricslam.metrics.trajectory import evaluate_trajectory
from metricslam.slam.config import PriorConfig, SlamConfig
from metricslam.slam.prior_schedule import ScheduledPriors, resolve_schedule
from metricslam.slam.prior_transfer import coverage, transfer_prior
from metricslam.slam.system import Slam
from metricslam.slam.video import KeyframeStore

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def room() -> SyntheticSequence:
    return SyntheticSequence("room", frames=60, width=256, height=192, seed=0)


def _pose_cw(frame: Frame) -> torch.Tensor:
    return torch.from_numpy(np.linalg.inv(frame.pose_wc))


def test_a_transferred_prior_equals_the_true_depth_of_the_other_view(room):
    a, b = room[0], room[12]
    K = room.intrinsics.params
    depth, conf = transfer_prior(a.depth, np.full_like(a.depth, 0.8), _pose_cw(a), _pose_cw(b), K, weight=0.5)
    both = (depth > 0) & (b.depth > 0)
    assert both.mean() > 0.5  # 25 cm and a turn apart, most of b's view was seen by a
    rel = np.abs(depth[both] - b.depth[both]) / b.depth[both]
    # Nearest-pixel splatting: exact up to the depth change within half a pixel, except at a few occlusion edges.
    assert np.median(rel) < 2e-3 and np.percentile(rel, 99) < 0.02, np.percentile(rel, [50, 99])
    assert np.allclose(conf[depth > 0], 0.4) and not conf[depth == 0].any()


def test_the_nearest_surface_wins_where_two_land_on_one_pixel():
    K = [50.0, 50.0, 8.0, 8.0]
    depth = np.full((17, 17), 4.0, np.float32)
    depth[:, 8:] = 2.0  # right half nearer
    same = torch.eye(4, dtype=torch.float64)
    moved = same.clone()
    moved[0, 3] = 0.16  # the camera moves left by 16 cm: the near half slides 4 px right, the far half 2 px
    out, _ = transfer_prior(depth, np.ones_like(depth), same, moved, K)
    assert (out[:, 12:16] == pytest.approx(2.0))  # occluding surface kept where both land
    assert (out[:, :10][out[:, :10] > 0] == pytest.approx(4.0))
    assert not out[:, 10:12].any()  # disoccluded: nothing known there


def test_coverage_falls_as_the_view_turns_away(room):
    a = room[0]
    inv = torch.from_numpy(np.where(a.depth > 0, 1.0 / np.maximum(a.depth, 1e-6), 0.0)).float()
    K = room.intrinsics.params
    pose = _pose_cw(a)
    turned = [se3.from_rt(torch.from_numpy(_yaw(deg)), torch.zeros(3, dtype=torch.float64)) @ pose
              for deg in (0, 10, 30, 60)]
    covers = [coverage(pose, t, inv, K) for t in turned]
    assert covers[0] == pytest.approx(1.0)
    assert covers == sorted(covers, reverse=True) and covers[-1] < 0.2, covers


def _yaw(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


class CountingPrior:
    """A constant-depth prior that records the frames it ran on (optionally slowly, at random)."""

    name, metric, ba_weight = "metric3d", True, 0.02

    def __init__(self, depth: float = 2.0, jitter: float = 0.0, seed: int = 0):
        self.calls: list[int] = []
        self.depth = depth
        self.jitter = jitter
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()

    def __call__(self, frame: Frame):
        if self.jitter:
            with self.lock:
                pause = self.jitter * self.rng.random()
            time.sleep(pause)
        self.calls.append(frame.index)
        return np.full(frame.rgb.shape[:2], self.depth, np.float32), np.ones(frame.rgb.shape[:2], np.float32)


def _schedule(prior, **overrides) -> tuple[ScheduledPriors, KeyframeStore]:
    store = KeyframeStore((12, 16), torch.device("cpu"))
    from metricslam.geometry.camera import Intrinsics

    camera = Intrinsics(100.0, 100.0, 63.5, 47.5, 128, 96)
    grid = torch.tensor(camera.scaled(1 / 8).params, dtype=torch.float64)
    config = PriorConfig(kind="metric3d", **overrides)
    return ScheduledPriors(prior, config, store, camera, grid, 8, 0.05), store


def _add(schedule: ScheduledPriors, store: KeyframeStore, index: int, pose: torch.Tensor, first: bool = False):
    rgb = np.zeros((96, 128, 3), np.uint8)
    frame = Frame(index=index, timestamp=float(index), rgb=rgb, intrinsics=None)  # type: ignore[arg-type]
    out = schedule(frame, pose, first)
    inv = torch.full((12, 16), 0.5)
    store.append(index, float(index), pose, inv, None, None, rgb[..., 0], rgb)
    return out


def _moved(x: float, yaw_deg: float = 0.0) -> torch.Tensor:
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = torch.from_numpy(_yaw(yaw_deg))
    pose[0, 3] = x
    return pose


def test_the_schedule_runs_the_prior_only_where_no_prior_keyframe_covers_the_view():
    prior = CountingPrior()
    schedule, store = _schedule(prior, lag=0, max_gap=4, min_coverage=0.7)
    outs = [_add(schedule, store, i, _moved(0.01 * i), first=i == 0) for i in range(6)]
    # First keyframe, then the max_gap rule: every 4th keyframe; the others get the transfer.
    assert prior.calls == [0, 4]
    assert schedule.runs == 2 and schedule.transfers == 4
    for out in outs[1:4]:
        depth, conf = out
        has = depth > 0
        assert has.mean() > 0.8 and np.allclose(depth[has], 2.0, rtol=0.02) and np.allclose(conf[has], 0.5)
    # A 40 degree turn leaves the last prior keyframe's view: the prior runs again at once.
    _add(schedule, store, 6, _moved(0.06, 40.0))
    assert prior.calls == [0, 4, 6]
    # A new segment always runs it and never transfers from the old one.
    _add(schedule, store, 7, _moved(0.06, 40.0), first=True)
    assert prior.calls == [0, 4, 6, 7]


def test_every_keyframe_and_no_transfer_settings():
    prior = CountingPrior()
    schedule, store = _schedule(prior, lag=0, schedule="every")
    for i in range(3):
        assert _add(schedule, store, i, _moved(0.01 * i), first=i == 0) is not None
    assert prior.calls == [0, 1, 2]
    prior = CountingPrior()
    schedule, store = _schedule(prior, lag=0, transfer=False)
    outs = [_add(schedule, store, i, _moved(0.01 * i), first=i == 0) for i in range(3)]
    assert prior.calls == [0] and outs[1] is None and outs[2] is None


def test_late_priors_enter_the_store_after_lag_keyframes_with_their_transfers():
    prior = CountingPrior(jitter=0.02)
    schedule, store = _schedule(prior, lag=2, max_gap=3)
    assert _add(schedule, store, 0, _moved(0.0), first=True) is not None  # a segment's first waits
    outs = [_add(schedule, store, i, _moved(0.01 * i)) for i in range(1, 5)]
    # Keyframe 3 ran the prior on the worker (gap rule); it and keyframe 4 (transfer from 3) are pending and hold
    # keyframe 0's prior transferred meanwhile.
    assert schedule.runs == 2
    for interim in outs[2:]:
        assert np.allclose(interim[0][interim[0] > 0], 2.0, rtol=0.02) and np.allclose(interim[1][interim[0] > 0], 0.5)
    assert float(store.prior_conf[3].max()) == 0 and float(store.prior_conf[4].max()) == 0
    _add(schedule, store, 5, _moved(0.05))  # the 2nd keyframe after 3: its prior is inserted now
    assert prior.calls == [0, 3]
    assert float(store.prior_conf[3].max()) > 0 and float(store.prior_conf[4].max()) > 0
    assert store.prior_invdepth[3][store.prior_conf[3] > 0].mean() == pytest.approx(0.5, rel=1e-3)
    assert store.prior_depth_full[4] is not None
    schedule.finish()


def test_bad_schedule_settings_are_refused():
    with pytest.raises(MetricSlamError, match="prior.schedule"):
        resolve_schedule(PriorConfig(schedule="sometimes"), "metric3d")
    with pytest.raises(MetricSlamError, match="lag"):
        resolve_schedule(PriorConfig(lag=-1), "metric3d")
    assert resolve_schedule(PriorConfig(), "metric3d", torch.device("cuda")) == ("coverage", 2)
    assert resolve_schedule(PriorConfig(), "metric3d", torch.device("cpu")) == ("coverage", 0)
    assert resolve_schedule(PriorConfig(lag=3), "metric3d", torch.device("cpu")) == ("coverage", 3)
    assert resolve_schedule(PriorConfig(), "simulated", torch.device("cuda")) == ("every", 0)


class SlowSimulatedPrior(SimulatedPrior):
    """The simulated network, taking a random time per call like a busy CPU would."""

    name = "metric3d"

    def __init__(self, seed: int):
        super().__init__(SimulatedPriorConfig())
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()

    def __call__(self, frame: Frame):
        with self.lock:
            pause = 0.05 * self.rng.random()
        time.sleep(pause)
        return super().__call__(frame)


def test_the_background_worker_gives_the_same_trajectory_whatever_its_timing(room):
    frames = [room[i] for i in range(40)]
    cfg = apply_overrides(SlamConfig(), ["prior.kind=simulated", "prior.schedule=coverage", "prior.lag=2"])
    runs = []
    for seed in (0, 1):
        slam = Slam(cfg, SlowSimulatedPrior(seed))
        for f in frames:
            slam.track(f)
        rec = slam.finish()
        runs.append(rec)
        assert slam.priors.runs < rec.num_keyframes + len(slam.events)  # the schedule skipped some keyframes
        assert bool((slam.store.prior_conf.amax(dim=(1, 2)) > 0).all())  # every late prior made it into the BA
    assert np.array_equal(runs[0].poses_wc, runs[1].poses_wc)
    # 0.9 m in 5 keyframes: metric, but too short for the benchmark's accuracy (evaluation/bench_prior_schedule.py).
    metrics = evaluate_trajectory(room.gt_trajectory(), Trajectory(runs[0].poses_wc, runs[0].timestamps))
    assert metrics["ate_se3_rmse_m"] < 0.05 and abs(metrics["scale_error"]) < 0.15, metrics
