"""RGB-D pose refinement: direct odometry on measured depth for non-keyframes, and a keyframe pose graph.

Dense flow is good to about half a pixel on real images, which limits the BA's relative keyframe poses to about
8 mm (neighbours) to 2 cm (four apart) on hololens_000; aligning the images and depth maps directly (Open3D's
hybrid photometric + geometric RGB-D odometry) gets 4.5 mm and 13 mm there. With a depth sensor:
- each frame that does not become a keyframe is aligned to its keyframe when it is tracked (the filler then keeps
  that pose instead of refining it with flow);
- at the end, before the filler, keyframes i and i + g are aligned for every gap g and every loop pair, started
  from the BA's relative pose; a result that lands further than ``max_change`` (fraction of the median depth)
  from its start is dropped; Open3D's pose graph optimisation, with line-process pruning of the non-consecutive
  edges, then places the keyframes, each segment's first keyframe staying where the BA put it.

Open3D's legacy odometry runs on the CPU only; its tensor version (CPU/CUDA) was 1.5-2x less accurate on
hololens_000 keyframe pairs with every loss setting tried, so this stage uses the legacy one on every device.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import open3d as o3d
import torch
from tqdm import tqdm

from metricslam.geometry import se3
from metricslam.geometry.camera import Intrinsics
from metricslam.io.images import resize_depth
from metricslam.slam.config import RgbdRefineConfig

_JACOBIANS = {
    "hybrid": o3d.pipelines.odometry.RGBDOdometryJacobianFromHybridTerm,
    "color": o3d.pipelines.odometry.RGBDOdometryJacobianFromColorTerm,
}
# Open3D's odometry defaults (depth difference 3 cm, correspondence distance 7.5 cm) suit rooms seen from about
# 2 m; they are scaled with the scene's median depth.
_REFERENCE_DEPTH = 2.0


@contextmanager
def _one_open3d_thread() -> Iterator[None]:
    """Open3D's parallel sums add in a thread-dependent order; the last-bit differences grew into 2.9-3.3 cm
    ATE spread between identical hololens_000 runs. One thread makes runs repeatable, at the same speed for
    images this small (odometry about 39 ms per pair either way)."""
    before = o3d.utility.get_max_threads()
    o3d.utility.set_max_threads(1)
    try:
        yield
    finally:
        o3d.utility.set_max_threads(before)


@dataclass
class RefineStats:
    edges: int  # odometry edges kept
    dropped: int  # odometry edges that failed or moved too far


class RgbdAligner:
    """Open3D RGB-D odometry at about ``config.image_area`` pixels, with thresholds scaled to the scene (the
    median depth of ``depth_sample``, metres)."""

    def __init__(self, camera: Intrinsics, config: RgbdRefineConfig, depth_sample: np.ndarray):
        valid = depth_sample[depth_sample > 0]
        self.median_depth = float(np.median(valid)) if valid.size else _REFERENCE_DEPTH
        s = self.median_depth / _REFERENCE_DEPTH
        far = float(np.percentile(valid, 99.5)) if valid.size else 4 * _REFERENCE_DEPTH
        self.config = config
        self.correspondence_distance = 0.075 * s
        self._option = o3d.pipelines.odometry.OdometryOption(depth_diff_max=0.03 * s, depth_max=2.0 * far)
        self._jacobian = _JACOBIANS[config.method]()
        self._scale = min(1.0, math.sqrt(config.image_area / (camera.width * camera.height)))
        cam = camera.scaled(self._scale)
        self._min_matches = config.min_overlap * cam.width * cam.height
        self._intrinsic = o3d.camera.PinholeCameraIntrinsic(cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy)

    def image(self, rgb: np.ndarray, depth: np.ndarray) -> o3d.geometry.RGBDImage:
        """RGB (H, W, 3) uint8 and depth (H, W) metres at the processing resolution, ready to align."""
        depth = np.ascontiguousarray(depth, dtype=np.float32)
        if self._scale < 1.0:
            w, h = self._intrinsic.width, self._intrinsic.height
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            depth = resize_depth(depth, (w, h))
        return o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(rgb)), o3d.geometry.Image(depth), depth_scale=1.0,
            depth_trunc=np.inf, convert_rgb_to_intensity=True)

    def align(self, source: o3d.geometry.RGBDImage, target: o3d.geometry.RGBDImage, start: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray] | None:
        """Source camera -> target camera transformation (4, 4) and its information (6, 6), started from
        ``start``; None when the odometry fails, matches too few pixels or lands further than ``max_change`` x
        median depth away."""
        with _one_open3d_thread():
            ok, T, info = o3d.pipelines.odometry.compute_rgbd_odometry(source, target, self._intrinsic, start,
                                                                       self._jacobian, self._option)
        T, info = np.asarray(T), np.asarray(info)
        # Each depth correspondence adds the identity to the translation block of the information matrix.
        if not ok or not np.isfinite(T).all() or info[3, 3] < self._min_matches or \
                np.linalg.norm(T[:3, 3] - start[:3, 3]) > self.config.max_change * self.median_depth:
            return None
        return T, info


def odometry_pairs(segment: list[int], gaps: tuple[int, ...], loops: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Keyframe pairs (i < j) to align: i and i + g for every gap, and the loop pairs, all inside one segment
    (``segment``: each keyframe's segment number)."""
    temporal = {(i, i + g) for g in gaps for i in range(len(segment) - g)}
    return sorted(p for p in temporal | set(loops) if segment[p[0]] == segment[p[1]])


def refine_keyframe_poses(aligner: RgbdAligner, images: list[np.ndarray], depths: list[np.ndarray],
                          poses_cw: torch.Tensor, pairs: list[tuple[int, int]], segment_starts: list[int],
                          progress: bool = False) -> tuple[torch.Tensor, RefineStats]:
    """Refined keyframe poses T_cw (K, 4, 4) from RGB (H, W, 3) uint8 and depth (H, W) metres (0 = invalid),
    aligning keyframes i < j for each pair (see ``odometry_pairs``). Each segment's first keyframe keeps its
    pose. ``progress`` shows a bar over the pairs."""
    if not pairs:
        return poses_cw, RefineStats(0, 0)
    frames = [aligner.image(im, d) for im, d in zip(images, depths)]
    poses_wc = se3.inverse(poses_cw).cpu().numpy()
    graph = o3d.pipelines.registration.PoseGraph()
    for pose in poses_wc:
        graph.nodes.append(o3d.pipelines.registration.PoseGraphNode(pose))
    edges = []
    for i, j in tqdm(pairs, desc="RGB-D refinement", unit="pair", disable=not progress, dynamic_ncols=True):
        found = aligner.align(frames[j], frames[i], np.linalg.inv(poses_wc[i]) @ poses_wc[j])
        if found is not None:
            edges.append((i, j, *found))
    kept = len(edges)
    # Where the odometry between neighbours failed (blur, little overlap), the BA's relative pose keeps the chain
    # connected, weighted like a typical odometry edge at a quarter (the BA's neighbour poses are about half as
    # accurate); without it the pieces on either side drift apart in the solve.
    aligned, wanted = {(i, j) for i, j, _, _ in edges}, set(pairs)
    typical = np.median(np.stack([info for _, _, _, info in edges]), axis=0) if edges else np.eye(6)
    for k in range(len(frames) - 1):
        if (k, k + 1) in wanted and (k, k + 1) not in aligned:
            edges.append((k, k + 1, np.linalg.inv(poses_wc[k]) @ poses_wc[k + 1], 0.25 * typical))
    for i, j, T, info in edges:
        graph.edges.append(o3d.pipelines.registration.PoseGraphEdge(j, i, T, info, uncertain=j - i > 1))
    with _one_open3d_thread():
        o3d.pipelines.registration.global_optimization(
            graph, o3d.pipelines.registration.GlobalOptimizationLevenbergMarquardt(),
            o3d.pipelines.registration.GlobalOptimizationConvergenceCriteria(),
            o3d.pipelines.registration.GlobalOptimizationOption(
                max_correspondence_distance=aligner.correspondence_distance, edge_prune_threshold=0.25,
                reference_node=0))
    out = np.stack([np.asarray(node.pose) for node in graph.nodes])
    # Segments share no edges, so the solve leaves each one where it was up to a rigid motion; put every
    # segment's first keyframe back where the BA had it.
    bounds = list(segment_starts) + [len(frames)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        out[a:b] = poses_wc[a] @ np.linalg.inv(out[a]) @ out[a:b]
    return se3.inverse(torch.from_numpy(out).to(poses_cw)), RefineStats(kept, len(pairs) - kept)
