"""The BA's scale anchor: the priors' scale over the problem's keyframes, without their shape or per-frame scale
errors."""
from dataclasses import replace

import pytest
import torch

from metricslam.errors import MetricSlamError
from metricslam.geometry import se3
from metricslam.slam.ba import _trimmed_mean, dense_ba
from metricslam.slam.config import BAOptions
from metricslam.testing.ba_problems import synthetic_problem

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def trend_prior_problem(scale: float = 1.1):
    """Noise-free flow; a prior whose log error grows with log depth (near too near, far too far; zero mean in
    log over every keyframe's pixels), and a start that is the truth scaled by ``scale`` (flow-consistent)."""
    truth = synthetic_problem(8, 24, 32, seed=3, dtype=F64)
    log_z = -truth.invdepths.log()
    trend = (log_z - log_z.mean(dim=(1, 2), keepdim=True)) / log_z.std()
    prior = truth.invdepths * torch.exp(-0.15 * trend)
    T_wc = se3.inverse(truth.poses_cw)
    T_wc[:, :3, 3] *= scale
    start = replace(truth, poses_cw=se3.inverse(T_wc), invdepths=truth.invdepths / scale, prior_invdepth=prior)
    return truth, start


def scales(truth, poses_cw, invdepths) -> tuple[float, float]:
    """Median (estimated / true) ratio of depths and of camera distances from the first camera."""
    depth = float((truth.invdepths / invdepths).log().median().exp())
    t_est = se3.inverse(poses_cw)[1:, :3, 3].norm(dim=-1)
    t_true = se3.inverse(truth.poses_cw)[1:, :3, 3].norm(dim=-1)
    return depth, float((t_est / t_true).median())


def shape_error(truth, invdepths, depth_scale: float) -> float:
    """Largest relative depth error once the overall scale is removed."""
    return float((truth.invdepths / invdepths / depth_scale - 1).abs().max())


def test_anchor_recovers_metric_scale_despite_correlated_prior_errors():
    truth, start = trend_prior_problem(1.1)
    # The per-pixel prior at DROID's weight imposes the prior's shape: the trajectory comes out far off.
    poses, invd = dense_ba(**vars(start), iters=10, options=BAOptions(alpha=0.05))
    d_scale, t_scale = scales(truth, poses, invd)
    assert abs(t_scale - 1) > 0.2 and shape_error(truth, invd, d_scale) > 0.1
    # A weak per-pixel prior leaves the shape to the flow, but its scale is that of the near pixels (whose
    # inverse-depth residuals dominate), which this prior puts too near.
    d_scale, _ = scales(truth, *dense_ba(**vars(start), iters=10, options=BAOptions(alpha=0.001)))
    assert d_scale < 0.97
    # The anchor alone: scale within 1 % in a few steps, the flow keeps the true shape.
    poses, invd = dense_ba(**vars(start), iters=6, options=BAOptions(alpha=0.0, scale_anchor=0.05))
    d_scale, t_scale = scales(truth, poses, invd)
    assert abs(d_scale - 1) < 0.01 and abs(t_scale - 1) < 0.01
    assert shape_error(truth, invd, d_scale) < 0.02


def test_anchor_averages_per_frame_scale_errors_over_keyframes():
    """Each keyframe's prior has its own scale error (+-6 %, zero mean in log over the keyframes): the anchor takes
    the scale from their mean, so every keyframe keeps the flow's relative scale and the whole is metric."""
    truth = synthetic_problem(8, 24, 32, seed=3, dtype=F64)
    jitter = 0.06 * torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0, -1.0, 1.0], dtype=F64)
    prior = truth.invdepths * torch.exp(jitter)[:, None, None]
    T_wc = se3.inverse(truth.poses_cw)
    T_wc[:, :3, 3] *= 1.1
    start = replace(truth, poses_cw=se3.inverse(T_wc), invdepths=truth.invdepths / 1.1, prior_invdepth=prior)
    poses, invd = dense_ba(**vars(start), iters=6, options=BAOptions(alpha=0.0, scale_anchor=0.05))
    d_scale, t_scale = scales(truth, poses, invd)
    assert abs(d_scale - 1) < 0.01 and abs(t_scale - 1) < 0.01
    per_keyframe = (truth.invdepths / invd).log().flatten(1).median(dim=1).values.exp()
    assert float((per_keyframe / d_scale - 1).abs().max()) < 0.01


def test_anchor_is_inert_without_prior():
    truth, start = trend_prior_problem(1.0)
    start = replace(start, prior_invdepth=None, prior_conf=None)
    a = dense_ba(**vars(start), fixed=(0, 1), iters=2, options=BAOptions(scale_anchor=0.05))
    b = dense_ba(**vars(start), fixed=(0, 1), iters=2, options=BAOptions())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_trimmed_mean_drops_tails_and_padding():
    inf = float("inf")
    values = torch.tensor([[5.0, 1.0, 2.0, 3.0, 4.0, 100.0, -50.0, 0.0, 0.0, 0.0],
                           [2.0, 4.0, inf, inf, inf, inf, inf, inf, inf, inf],
                           [inf] * 10])
    counts = torch.tensor([10, 2, 0])
    out = _trimmed_mean(values, counts, 0.1)
    assert out.tolist() == pytest.approx([15 / 8, 3.0, 0.0])


def test_negative_anchor_weight_is_rejected():
    with pytest.raises(MetricSlamError, match="scale_anchor"):
        BAOptions(scale_anchor=-1.0)
