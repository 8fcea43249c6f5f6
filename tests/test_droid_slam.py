"""The learned (DROID) correspondences inside the SLAM: edges, tracker, damping in the BA, a short run (random
weights: plumbing and state handling, no accuracy claim)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metricslam.cli import main
from metricslam.config import load_config
from metricslam.errors import MetricSlamError, WeightsError
from metricslam.geometry.camera import Intrinsics
from metricslam.io.frame import Frame
from metricslam.io.trajectory import read_trajectory
from metricslam.slam.ba import dense_ba
from metricslam.slam.config import BAOptions, SlamConfig
from metricslam.slam.correspondence.droid import DroidNet, pixel_grid
from metricslam.slam.correspondence.droid.edges import DroidEdges, source_chunks
from metricslam.slam.correspondence.droid.tracker import DroidTracker
from metricslam.slam.frontend import optimise
from metricslam.slam.system import Slam
from metricslam.slam.video import KeyframeStore

H, W = 96, 128
GRID = (H // 8, W // 8)
INTR = torch.tensor([12.0, 12.0, 7.5, 5.5], dtype=torch.float64)
ETA = 1e-3

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> DroidNet:
    # PyTorch's default initialisation keeps activations in range, so the network's outputs are ordinary numbers.
    torch.manual_seed(0)
    return DroidNet().eval()


@pytest.fixture(scope="module")
def weights_file(model, tmp_path_factory) -> Path:
    """A droid.pth-style file: 'module.' prefixes and 3-channel weight / delta heads."""
    state = {}
    for k, v in model.state_dict().items():
        if k.startswith(("update.weight.2.", "update.delta.2.")):
            v = torch.cat([v, torch.zeros_like(v[:1])])
        state["module." + k] = v
    file = tmp_path_factory.mktemp("weights") / "droid.pth"
    torch.save(state, file)
    return file


def make_store(frames: int = 3) -> KeyframeStore:
    """Keyframes of a textured image moving sideways, 0.05 m apart, every pixel 2 m away."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (H, W + 8 * frames, 3), dtype=np.uint8)
    store = KeyframeStore(GRID, torch.device("cpu"))
    for k in range(frames):
        pose = torch.eye(4, dtype=torch.float64)
        pose[0, 3] = -0.05 * k
        rgb = np.ascontiguousarray(base[:, 4 * k : 4 * k + W])
        store.append(k, float(k), pose, torch.full(GRID, 0.5), None, None, rgb[..., 1].copy(), rgb)
    return store


def test_gather_updates_edges_and_keeps_their_hidden_state(model):
    store = make_store()
    edges = DroidEdges(model, INTR, ETA)
    edges.add(store, [(0, 1), (1, 2)])
    assert len(edges) == 4 and (0, 1) in edges and (2, 1) in edges and (0, 2) not in edges
    ii, jj, t1, w1 = edges.gather(store, [0, 1, 2])
    assert ii.tolist() == [0, 1, 1, 2] and jj.tolist() == [1, 0, 2, 1]
    assert t1.shape == w1.shape == (4, *GRID, 2)
    assert bool(torch.isfinite(t1).all()) and bool(((w1 > 0) & (w1 < 1)).all())
    # Damping from the network for each source frame: positive, finite, not the fallback.
    assert edges.damping.shape == (3, *GRID)
    assert bool((edges.damping > 0).all()) and not torch.allclose(edges.damping, torch.full_like(edges.damping, ETA))

    _, _, t2, w2 = edges.gather(store, [0, 1, 2])
    assert (t2 - t1).abs().max() > 1e-4 and (w2 - w1).abs().max() > 1e-4  # same geometry: only the state moved

    fresh = DroidEdges(model, INTR, ETA)
    fresh.add(store, [(0, 1), (1, 2)])
    torch.testing.assert_close(fresh.gather(store, [0, 1, 2])[2], t1)  # a first update is deterministic

    # Edges left out of an update lose their hidden state and restart from their source frame's context.
    edges.gather(store, [0, 1])
    _, _, t4, _ = edges.gather(store, [0, 1, 2])
    torch.testing.assert_close(t4[2:], t1[2:])
    assert (t4[:2] - t1[:2]).abs().max() > 1e-4


def test_chunked_updates_and_both_correlations_agree(model):
    ii = torch.tensor([0, 1, 0, 2, 1, 2, 2])
    chunks = source_chunks(ii, 2)
    assert sorted(torch.cat(chunks).tolist()) == list(range(7))
    assert all(len(set(ii[c].tolist()) & set(ii[d].tolist())) == 0 for c in chunks for d in chunks if c is not d)

    store = make_store(4)
    results = []
    for options in ({}, {"max_edges": 1}, {"corr": "volume"}):
        edges = DroidEdges(model, INTR, ETA, **options)
        edges.add(store, [(0, 1), (1, 2), (0, 2)])
        results.append((*edges.gather(store, [0, 1, 2, 3])[2:], edges.damping))
    for other in results[1:]:
        for a, b, atol in zip(results[0], other, (1e-5, 1e-5, 1e-9)):  # damping is about 1e-2: relative check
            torch.testing.assert_close(a, b, rtol=1e-4, atol=atol)
    assert bool((results[0][2][3] == ETA).all())  # keyframe 3 is no edge's source: the fallback damping


def test_drop_forgets_edges_and_features(model):
    store = make_store()
    edges = DroidEdges(model, INTR, ETA)
    edges.add(store, [(0, 1), (1, 2)])
    edges.gather(store, [0, 1, 2])
    assert set(edges.features) == {0, 1, 2}
    edges.drop(1)
    assert len(edges) == 0 and set(edges.features) == {0, 2}
    ii, _, targets, _ = edges.gather(store, [0, 2])
    assert ii.numel() == 0 and targets.shape == (0, *GRID, 2) and edges.damping is None


def test_frontend_bundle_adjustment_uses_the_network_damping(model):
    stores = make_store(), make_store()
    first, second = DroidEdges(model, INTR, ETA), DroidEdges(model, INTR, ETA)
    for store, edges in zip(stores, (first, second)):
        edges.add(store, [(0, 1), (1, 2)])
    options = BAOptions()
    optimise(stores[0], first, [0, 1, 2], [0], 2, options, INTR)

    ii, jj, targets, weights = second.gather(stores[1], [0, 1, 2])
    s = stores[1]
    args = (s.poses, s.invdepth, INTR, ii, jj, targets, weights)
    with_eta = dense_ba(*args, fixed=[0], iters=2, options=options, eta=second.damping)
    without = dense_ba(*args, fixed=[0], iters=2, options=options)
    torch.testing.assert_close(stores[0].invdepth, with_eta[1])
    torch.testing.assert_close(stores[0].poses, with_eta[0])
    assert (with_eta[1] - without[1]).abs().max() > 1e-4


def test_tracker_flow_starts_from_the_prediction(model, monkeypatch):
    store = make_store(2)
    tracker = DroidTracker(model)
    calls = []
    extract = model.extract
    monkeypatch.setattr(model, "extract", lambda images: calls.append(1) or extract(images))
    targets, weights, mean_flow = tracker.track(store.grey[0], store.grey[1])
    shift = np.broadcast_to(np.float32([16.0, 8.0]), (H, W, 2))  # image pixels: (2, 1) grid pixels
    shifted, _, _ = tracker.track(store.grey[0], store.grey[1], shift)
    assert len(calls) == 1  # the keyframe was encoded once
    assert targets.shape == weights.shape == (*GRID, 2) and np.isfinite(targets).all()
    assert ((weights > 0) & (weights < 1)).all()
    grid = pixel_grid(*GRID).numpy()
    assert mean_flow == pytest.approx(float(np.linalg.norm(targets - grid, axis=-1).mean()), rel=1e-5)
    # The network's revision is small next to the 2-pixel prediction it starts from.
    np.testing.assert_allclose((shifted - targets).mean(axis=(0, 1)), [2.0, 1.0], atol=0.5)
    with pytest.raises(MetricSlamError, match="stride=8"):
        DroidTracker(model, stride=4)


@pytest.mark.parametrize("prior", ["simulated", "none"])  # none: the monocular start is the classical flow's
def test_synthetic_run_with_droid_correspondences(weights_file, tmp_path, prior):
    from metricslam.io.synthetic import SyntheticSequence, write_sequence  # Open3D: only this test needs it

    frames = 8
    room = write_sequence(SyntheticSequence("room", frames=frames, width=W, height=H, seed=0), tmp_path / "room",
                          progress=False)
    out = tmp_path / "out"
    # Random weights barely move the targets: a zero motion-filter threshold makes every frame a keyframe.
    assert main(["run", str(room), "--out", str(out), "--prior", prior, "--quiet", "--set",
                 "correspondence=droid", f"droid_weights={weights_file}", "tracking.filter_thresh=0",
                 "frontend.warmup_iters=2", "frontend.updates=2", "backend.final_iters=2"]) == 0
    for name in ("trajectory_tum.txt", "trajectory_kitti.txt", "keyframes.npz", "config.yaml", "metrics.json",
                 "trajectory.png", "mesh.ply", "cloud.ply"):
        assert (out / name).is_file(), name
    traj = read_trajectory(out / "trajectory_tum.txt", "tum")
    assert len(traj) == frames and np.isfinite(traj.poses).all()
    assert len(read_trajectory(out / "trajectory_kitti.txt", "kitti")) == frames
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_frames"] == frames and metrics["num_keyframes"] >= 2
    cfg = load_config(SlamConfig, out / "config.yaml")
    assert cfg.correspondence == "droid" and cfg.droid_weights == str(weights_file)


def test_missing_droid_weights_are_one_line_errors(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(1)
    frame = Frame(0, 0.0, rng.integers(0, 256, (H, W, 3), dtype=np.uint8), Intrinsics(100, 100, 64, 48, W, H))
    absent = tmp_path / "absent.pth"
    with pytest.raises(WeightsError) as info:
        Slam(SlamConfig(correspondence="droid", droid_weights=str(absent))).track(frame)
    assert "\n" not in str(info.value) and str(absent) in str(info.value)

    # Unset: the registry's droid.pth, which is not in an empty cache.
    monkeypatch.setenv("METRICSLAM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError) as info:
        Slam(SlamConfig(correspondence="droid")).track(frame)
    assert "\n" not in str(info.value) and "metricslam weights download droid" in str(info.value)

    with pytest.raises(MetricSlamError, match="classical or droid"):
        Slam(SlamConfig(correspondence="raft")).track(frame)
