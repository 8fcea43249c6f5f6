"""Fixtures shared by several test files (paths to ../shared stay in shared_paths.py)."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from metricslam.depth.prior_protocol import DepthPrior
    from metricslam.io.frame import Frame
    from metricslam.io.synthetic import SyntheticSequence
    from metricslam.slam.reconstruction import Reconstruction


@pytest.fixture(scope="module")
def one_thread():
    """For modules of many small tensor ops (use with pytestmark): on a shared 2-core machine, thread hand-offs
    cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def oracle_room() -> Callable[..., tuple[SyntheticSequence, Reconstruction]]:
    """``make(width, height, frames, keyframe_every, seed, prior=None)`` -> (the synthetic room sequence, its
    reconstruction with ground-truth poses and ``prior``'s depth, default ground truth). Rendered frames are kept
    for the session, so several reconstructions of one rendering cost one rendering."""
    # Imported here: the renderer pulls in Open3D, which most test files never need.
    from metricslam.io.synthetic import SyntheticSequence
    from metricslam.testing.oracle import oracle_reconstruction

    rendered: dict[tuple[int, int, int, int], tuple[SyntheticSequence, list[Frame]]] = {}

    def make(width: int, height: int, frames: int, keyframe_every: int, seed: int,
             prior: DepthPrior | None = None) -> tuple[SyntheticSequence, Reconstruction]:
        key = (width, height, frames, seed)
        if key not in rendered:
            seq = SyntheticSequence("room", frames=frames, width=width, height=height, seed=seed)
            rendered[key] = seq, [seq[i] for i in range(frames)]
        seq, images = rendered[key]
        return seq, oracle_reconstruction(images, prior, keyframe_every=keyframe_every, image_area=width * height)

    return make
