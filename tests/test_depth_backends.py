"""Forward backends of the Metric3D predictor: OpenVINO parity with torch float32, fallback without the package,
bfloat16, and prior cache keys covering every setting that changes the output."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metricslam.depth import openvino_backend
from metricslam.depth.metric3d_prior import Metric3DPrior
from metricslam.depth.models.metric3d import build_metric3d
from metricslam.depth.predictor import Metric3DPredictor, resolve_backend
from metricslam.errors import MetricSlamError
from metricslam.geometry.camera import Intrinsics
from metricslam.io.frame import Frame
from metricslam.metrics.depth import depth_metrics

needs_openvino = pytest.mark.skipif(not openvino_backend.available(), reason="openvino is not installed")


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.uniform(30, 230, (5, 7, 3)).astype(np.float32)
    import cv2

    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def _seeded_state(variant: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_metric3d(variant).state_dict()


def _predictor(variant: str, state, size, **kw) -> Metric3DPredictor:
    return Metric3DPredictor(variant, state, device="cpu", input_size=size, **kw)


@pytest.mark.slow
@needs_openvino
@pytest.mark.parametrize("variant, size", [("vit_small", (112, 196)), ("convnext_tiny", (128, 256))])
def test_openvino_reproduces_the_torch_float32_forward(variant, size, tmp_path, monkeypatch):
    monkeypatch.setenv("METRICSLAM_CACHE", str(tmp_path))
    state = _seeded_state(variant)
    rgb = _image(120, 200)
    K = Intrinsics(180.0, 180.0, 100.0, 60.0, 200, 120)
    ref = _predictor(variant, state, size, backend="torch").predict(rgb, K)
    fast = _predictor(variant, state, size, backend="openvino")
    assert fast.backend == "openvino"
    out = fast.predict(rgb, K)
    # Stated tolerance: float32 on both sides, only the order of operations differs.
    rel = np.abs(out.depth - ref.depth) / ref.depth
    assert rel.max() < 2e-3, rel.max()
    m = depth_metrics(out.depth, ref.depth)
    assert m["abs_rel"] < 1e-4 and m["d1"] == 1.0, m
    assert np.abs(out.confidence - ref.confidence).max() < 1e-3
    if ref.normals is not None:
        assert np.abs(out.normals - ref.normals).max() < 1e-3
    # The converted network is kept on disk and reused by the next predictor of the same weights and size.
    assert len(list((tmp_path / "openvino").glob("*.xml"))) == 1
    again = _predictor(variant, state, size, backend="openvino").predict(rgb, K)
    np.testing.assert_allclose(again.depth, out.depth, rtol=2e-3)


def test_bf16_on_cpu_stays_close_to_float32():
    state = _seeded_state("convnext_tiny")
    rgb = _image(120, 200)
    K = Intrinsics(180.0, 180.0, 100.0, 60.0, 200, 120)
    ref = _predictor("convnext_tiny", state, (128, 256)).predict(rgb, K)
    low = _predictor("convnext_tiny", state, (128, 256), precision="bf16").predict(rgb, K)
    assert not np.array_equal(low.depth, ref.depth)  # it did run in bfloat16
    assert depth_metrics(low.depth, ref.depth)["abs_rel"] < 0.1


def test_without_openvino_auto_falls_back_to_torch_and_openvino_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(openvino_backend, "available", lambda: False)
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "torch"
    with pytest.raises(MetricSlamError, match="pip install openvino"):
        resolve_backend("openvino", cpu)
    with pytest.raises(MetricSlamError, match="unknown backend"):
        resolve_backend("tensorrt", cpu)
    with pytest.raises(MetricSlamError, match="unknown precision"):
        _predictor("convnext_tiny", None, (64, 96), allow_random=True, precision="int4")


def test_openvino_is_refused_off_the_cpu(monkeypatch):
    monkeypatch.setattr(openvino_backend, "available", lambda: True)
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    with pytest.raises(MetricSlamError, match="runs on the CPU"):
        resolve_backend("openvino", torch.device("cuda"))


@pytest.mark.slow
def test_prior_cache_keys_cover_every_setting_that_changes_the_output():
    state = _seeded_state("convnext_tiny")
    frame = Frame(0, 0.0, _image(48, 64), Intrinsics(70.0, 70.0, 32, 24, 64, 48))

    def key(**kw) -> str:
        settings = {"size": (64, 96), "backend": "torch", "precision": "fp32", **kw}
        size = settings.pop("size")
        weights = settings.pop("weights", state)
        return Metric3DPrior(_predictor("convnext_tiny", weights, size, **settings)).cache_key(frame)

    base = key()
    assert key() == base  # the same settings find the same entry
    other_weights = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    changed = [key(size=(128, 192)), key(precision="bf16"), key(weights=other_weights), key(focal_mode="mean")]
    if openvino_backend.available():
        changed.append(Metric3DPrior(_predictor("convnext_tiny", state, (64, 96), backend="openvino")).cache_key(frame))
    assert len(set(changed)) == len(changed) and base not in changed
    moved = Frame(0, 0.0, frame.rgb, Intrinsics(90.0, 90.0, 32, 24, 64, 48))
    assert Metric3DPrior(_predictor("convnext_tiny", state, (64, 96))).cache_key(moved) != base


def test_prior_config_reaches_the_predictor(tmp_path):
    from metricslam.slam.config import PriorConfig
    from metricslam.slam.prior_factory import make_prior

    file = tmp_path / "convtiny_hourglass_v1.pth"
    torch.save(_seeded_state("convnext_tiny"), file)
    prior = make_prior(PriorConfig(kind="metric3d", weights=str(file), input_size=(128, 256), backend="torch",
                                   precision="bf16", device="cpu"))
    p = prior.predictor
    assert (p.variant, p.input_size, p.backend, p.precision) == ("convnext_tiny", (128, 256), "torch", "bf16")
