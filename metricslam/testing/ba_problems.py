"""Factor-graph data of the dense BA: the problem container, edge patterns, and exact synthetic problems.

``BAProblem`` holds exactly the inputs of ``metricslam.slam.ba.dense_ba`` (field names match its parameters,
so ``dense_ba(**vars(problem))`` works). ``synthetic_problem`` builds a random scene whose targets are the exact
reprojections of a known state: the ground truth for tests and benchmarks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from metricslam.geometry import se3
from metricslam.geometry.projective import reproject


@dataclass
class BAProblem:
    """Dense BA inputs: poses_cw (K, 4, 4) world-to-camera, invdepths (K, h, w), intrinsics (4,) at grid
    resolution, edges ii/jj (E,), targets and weights (E, h, w, 2), optional prior inverse depth and confidence."""

    poses_cw: torch.Tensor
    invdepths: torch.Tensor
    intrinsics: torch.Tensor
    ii: torch.Tensor
    jj: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    prior_invdepth: torch.Tensor | None = None
    prior_conf: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> BAProblem:
        moved: dict[str, Any] = {f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                                 for f in fields(self)}
        return BAProblem(**moved)


def window_edges(K: int, radius: int = 3, device: torch.device | str | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges i -> j for all 0 < |i - j| <= radius, both directions (about 2 * radius per keyframe)."""
    i, j = torch.meshgrid(torch.arange(K, device=device), torch.arange(K, device=device), indexing="ij")
    keep = ((i - j).abs() > 0) & ((i - j).abs() <= radius)
    return i[keep], j[keep]


def synthetic_problem(K: int, h: int, w: int, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None, radius: int = 3, baseline: float = 0.15,
                      target_noise: float = 0.0, prior_noise: float = 0.0) -> BAProblem:
    """A random scene seen by K keyframes, with the state set to the ground truth.

    Cameras move about ``baseline`` metres per keyframe (sideways and forward) with small rotations; every
    keyframe sees a smooth surface 2 to 5 m away; the first camera is the world frame. Targets are the exact
    reprojections plus Gaussian noise of ``target_noise`` pixels, weights are 1, and the prior is the true
    inverse depth times (1 + prior_noise * N(0, 1)) with confidence 1.
    """
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    k = torch.arange(K, dtype=f64)
    xi = torch.zeros(K, 6, dtype=f64)
    xi[:, 0] = baseline * k
    xi[:, 1] = 0.3 * baseline * torch.sin(0.7 * k)
    xi[:, 2] = 0.3 * baseline * k
    xi[:, 3:] = math.radians(2.0) * torch.randn(K, 3, generator=g, dtype=f64)
    T_wc = se3.se3_exp(xi)
    poses_cw = se3.inverse(se3.inverse(T_wc[:1]) @ T_wc)

    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, dtype=f64), torch.linspace(-1, 1, w, dtype=f64), indexing="ij")
    a = torch.rand(K, 4, 1, 1, generator=g, dtype=f64)
    depth = 3.5 + 0.8 * a[:, 0] * xx + 0.5 * a[:, 1] * yy + 0.6 * torch.sin(3 * xx + 6 * a[:, 2]) * torch.cos(
        (2 + 2 * a[:, 3]) * yy)
    invdepths = 1.0 / depth
    intrinsics = torch.tensor([0.9 * w, 0.9 * w, (w - 1) / 2, (h - 1) / 2], dtype=f64)
    ii, jj = window_edges(K, radius)
    targets, _ = reproject(poses_cw, invdepths, intrinsics, ii, jj)
    targets = targets + target_noise * torch.randn(targets.shape, generator=g, dtype=f64)
    prior = invdepths * (1 + prior_noise * torch.randn(invdepths.shape, generator=g, dtype=f64))
    problem = BAProblem(poses_cw, invdepths.to(dtype), intrinsics.to(dtype), ii, jj, targets.to(dtype),
                        torch.ones_like(targets, dtype=dtype), prior.clamp_min(1e-3).to(dtype),
                        torch.ones_like(invdepths, dtype=dtype))
    return problem.to(device) if device is not None else problem
