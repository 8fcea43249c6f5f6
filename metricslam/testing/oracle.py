"""A Reconstruction built from ground truth instead of SLAM: ground-truth poses, depth from a prior.

It isolates the mapping stage: fusing it measures what the depth source alone costs (and with the sensor prior on
ground-truth depth it is the reference map of ``evaluation/eval_mesh.py``). Keyframes are prepared exactly as
``Slam`` prepares them (processing resolution, prior depth block-averaged onto the BA grid), so the grid depth
stands in for the BA depth.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from metricslam.depth.prior_protocol import DepthPrior
from metricslam.depth.priors import SensorPrior
from metricslam.errors import InputError
from metricslam.io.frame import Frame
from metricslam.slam.preprocess import prepare_frame, prior_to_grid, processing_camera
from metricslam.slam.reconstruction import Reconstruction


def oracle_reconstruction(
    frames: Iterable[Frame],
    prior: DepthPrior | None = None,
    keyframe_every: int = 1,
    image_area: int = 384 * 512,
    stride: int = 8,
    grid_edge: float = 0.15,
) -> Reconstruction:
    """Every ``keyframe_every``-th frame becomes a keyframe with its ground-truth pose and ``prior``'s depth
    (default: the frames' own depth, i.e. ground truth or the sensor). Frames need ``pose_wc``."""
    prior = prior or SensorPrior()
    frames = list(frames)
    if not frames:
        raise InputError("no frames given to build the reconstruction from")
    missing = [f.index for f in frames if f.pose_wc is None]
    if missing:
        raise InputError(f"frame {missing[0]} has no ground-truth pose; use a sequence with ground truth")
    size, camera = processing_camera(frames[0].intrinsics, image_area, stride)
    grid = camera.scaled(1.0 / stride)
    kf_ids = list(range(0, len(frames), keyframe_every))
    images, priors, depths, confs = [], [], [], []
    for i in kf_ids:
        f = prepare_frame(frames[i], size, camera)
        out = prior(f)
        if out is None:
            raise InputError(f"frame {f.index} ({f.name}): the '{prior.name}' prior gave no depth; use frames with depth")
        depth, conf = out
        inv, grid_conf = prior_to_grid(depth, conf, stride, grid_edge)
        depths.append(np.where(inv > 0, 1.0 / np.maximum(inv, 1e-9), 0.0).astype(np.float32))
        confs.append(np.clip(grid_conf, 0.0, 1.0).astype(np.float32))
        images.append(f.rgb)
        priors.append(depth.astype(np.float32))
    missing = [f.index for f in frames if f.pose_wc is None]
    if missing:
        raise InputError(f"frames {missing[:5]} have no ground-truth pose; oracle reconstructions need them")
    poses = np.stack([f.pose_wc for f in frames if f.pose_wc is not None]).astype(np.float64)
    times = np.array([f.timestamp for f in frames], dtype=np.float64)
    index = np.array([f.index for f in frames], dtype=np.int64)
    return Reconstruction(
        timestamps=times, poses_wc=poses, frame_indices=index, tracked=np.ones(len(frames), bool),
        kf_frame_indices=index[kf_ids], kf_timestamps=times[kf_ids], kf_poses_wc=poses[kf_ids],
        kf_depths=np.stack(depths), kf_confidences=np.stack(confs), kf_images=np.stack(images),
        intrinsics=camera, grid_intrinsics=grid, metric=bool(prior.metric), prior=prior.name,
        kf_prior_depths=np.stack(priors),
    )
