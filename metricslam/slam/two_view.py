"""Two-view geometry for keyframes without a depth prior: relative pose from the essential matrix, and depth by
triangulating correspondences with known poses.

A monocular segment starts with no depth at all: tracking against a constant-depth keyframe cannot tell a
translation from a rotation (forward driving is the worst case), and the front-end then settles in the wrong
minimum. The essential matrix of the first keyframe pair gives the motion up to scale, and triangulation gives
each new keyframe a depth map the bundle adjustment can start from.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from metricslam.geometry.projective import pixel_grid, unproject


@dataclass
class TwoViewPose:
    """T_ji (4x4, translation of unit length) and which correspondences agreed with it."""

    T_ji: np.ndarray
    inliers: np.ndarray  # (N,) bool over the correspondences given
    parallax_deg: float  # median angle between the two rays of the inliers
    # Correspondences a homography explains within the same threshold, per essential-matrix inlier: near 1 the
    # views are related by a rotation (or see a plane) and the translation is not observable.
    homography_share: float


def _camera_matrix(intrinsics: torch.Tensor) -> np.ndarray:
    fx, fy, cx, cy = intrinsics.tolist()
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def essential_pose(src: np.ndarray, dst: np.ndarray, intrinsics: torch.Tensor, threshold_px: float,
                   min_inliers: int = 50) -> TwoViewPose | None:
    """Relative pose of view j from pixel correspondences src (i) -> dst (j), (N, 2) each, in the pixels of
    ``intrinsics`` [fx, fy, cx, cy]; None when RANSAC finds too few inliers or no pose in front of both views."""
    if len(src) < min_inliers:
        return None
    K = _camera_matrix(intrinsics)
    src64, dst64 = np.ascontiguousarray(src, np.float64), np.ascontiguousarray(dst, np.float64)
    try:
        return _essential_pose(src64, dst64, K, threshold_px, min_inliers)
    except cv2.error:  # degenerate input (no motion, all points on a line) trips OpenCV's solvers
        return None


def _essential_pose(src64: np.ndarray, dst64: np.ndarray, K: np.ndarray, threshold_px: float, min_inliers: int
                    ) -> TwoViewPose | None:
    E, mask = cv2.findEssentialMat(src64, dst64, K, cv2.RANSAC, 0.999, threshold_px)
    if E is None or E.shape != (3, 3) or mask is None or int(mask.sum()) < min_inliers:
        return None
    # RANSAC accepts any model within the threshold; least median of squares over its inliers is precise.
    keep = mask.ravel() > 0
    refined, _ = cv2.findEssentialMat(src64[keep], dst64[keep], K, cv2.LMEDS, 0.999)
    if refined is not None and refined.shape == (3, 3):
        E = refined
    good, R, t, mask = cv2.recoverPose(E, src64, dst64, K, mask=mask.copy())
    inliers = mask.ravel() > 0
    if good < min_inliers:
        return None
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t.ravel()
    rays_i = np.linalg.solve(K, np.c_[src64[inliers], np.ones(int(inliers.sum()))].T)
    rays_j = R.T @ np.linalg.solve(K, np.c_[dst64[inliers], np.ones(int(inliers.sum()))].T)
    cos = (rays_i * rays_j).sum(0) / (np.linalg.norm(rays_i, axis=0) * np.linalg.norm(rays_j, axis=0))
    _, h_mask = cv2.findHomography(src64, dst64, cv2.RANSAC, threshold_px)
    h_inliers = 0 if h_mask is None else int(h_mask.sum())
    return TwoViewPose(T, inliers, float(np.degrees(np.median(np.arccos(np.clip(cos, -1.0, 1.0))))),
                       h_inliers / max(int(inliers.sum()), 1))


def triangulate_invdepth(T_ji: torch.Tensor, targets: torch.Tensor, intrinsics: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse depth in view i of every grid pixel (h, w) from its target (h, w, 2) in view j, with
    T_ji (4x4) taking i's camera coordinates to j's; and the angle (radians) between the pixel's two rays.

    The depth d along the ray r of pixel u minimises the reprojection error in j to first order: with
    X_j = d R r + t, each image axis gives the linear equation d (a - u' c) = u' t_z - t_a. Points behind
    either camera or without parallax come out with inverse depth <= 0 (invalid)."""
    h, w = targets.shape[:2]
    dtype = torch.float64
    T = T_ji.to(dtype)
    rays = unproject(pixel_grid(h, w, targets.device, dtype), torch.zeros((), dtype=dtype), intrinsics)[..., :3]
    fx, fy, cx, cy = intrinsics.to(dtype).unbind()
    rot = rays @ T[:3, :3].T  # R r, (h, w, 3)
    t = T[:3, 3]
    x = (targets[..., 0].to(dtype) - cx) / fx
    y = (targets[..., 1].to(dtype) - cy) / fy
    ax, bx = rot[..., 0] - x * rot[..., 2], x * t[2] - t[0]
    ay, by = rot[..., 1] - y * rot[..., 2], y * t[2] - t[1]
    depth = (ax * bx + ay * by) / (ax * ax + ay * ay).clamp_min(1e-12)
    point_j = depth[..., None] * rot + t
    in_front = (depth > 0) & (point_j[..., 2] > 0)
    invdepth = torch.where(in_front, 1.0 / depth.clamp_min(1e-9), torch.zeros_like(depth))
    # Parallax: the angle at the point between the rays from the two camera centres.
    centre_j_in_i = -(T[:3, :3].T @ t)
    point_i = depth[..., None] * rays
    to_j = point_i - centre_j_in_i
    cos = (point_i * to_j).sum(-1) / (point_i.norm(dim=-1) * to_j.norm(dim=-1)).clamp_min(1e-12)
    angle = torch.where(in_front, torch.arccos(cos.clamp(-1.0, 1.0)), torch.zeros_like(cos))
    return invdepth.to(targets.dtype), angle.to(targets.dtype)
