"""Pose of a frame relative to a keyframe from sparse feature matches (ORB + PnP RANSAC on the keyframe depth).

Dense flow started from a constant-velocity prediction fails when the camera accelerates hard (tens of pixels of
unpredicted motion, motion blur). Binary features matched over the whole image have no such search limit, and the
keyframe's (prior or BA) depth lifts them to 3D, so PnP gives a measured pose to start the flow from, and a way
to relocalise against recent keyframes after tracking was lost.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from metricslam.geometry.camera import Intrinsics
from metricslam.slam.config import PnpConfig

_RATIO = 0.8  # best / second-best descriptor distance below which a match is kept
_THUMBNAIL = (32, 24)  # (w, h) of the images compared by appearance: the layout of the view, not its detail


@dataclass
class Features:
    points: np.ndarray  # (N, 2) float32 pixel coordinates
    descriptors: np.ndarray | None  # (N, 32) uint8, None when no keypoint was found


@dataclass
class PnpPose:
    """A PnP solution and the matches it was found from, which also score other poses of the same frame."""

    T: np.ndarray  # (4, 4) keyframe camera coordinates -> the frame's
    inliers: int  # RANSAC inliers of T
    points: np.ndarray  # (N, 3) matched keyframe points in the keyframe's camera coordinates
    pixels: np.ndarray  # (N, 2) their matched pixels in the frame


class PnpInitialiser:
    """Relative poses keyframe -> frame from ORB matches; keyframe features are cached by keyframe uid."""

    def __init__(self, config: PnpConfig, camera: Intrinsics, stride: int):
        self.config = config
        self.stride = stride
        self.K = camera.K.astype(np.float64)
        self._orb = cv2.ORB_create(config.features)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self._cache: dict[int, Features] = {}
        self._thumbnails: dict[int, np.ndarray] = {}

    def features(self, grey: np.ndarray) -> Features:
        keypoints, desc = self._orb.detectAndCompute(grey, None)
        pts = np.array([kp.pt for kp in keypoints], dtype=np.float32).reshape(-1, 2)
        return Features(pts, desc)

    def keyframe_features(self, uid: int, grey: np.ndarray) -> Features:
        if uid not in self._cache:
            self._cache[uid] = self.features(grey)
        return self._cache[uid]

    def forget(self, uid: int) -> None:
        self._cache.pop(uid, None)
        self._thumbnails.pop(uid, None)

    def most_similar(self, grey: np.ndarray, keyframes: list[tuple[int, np.ndarray]], count: int) -> list[int]:
        """Positions in ``keyframes`` ((uid, grey image) pairs) of the ``count`` that look most like ``grey``:
        normalised correlation of small blurred thumbnails, highest first."""
        if count <= 0 or not keyframes:
            return []
        for uid, image in keyframes:
            if uid not in self._thumbnails:
                self._thumbnails[uid] = _thumbnail(image)
        query = _thumbnail(grey)
        scores = np.array([float(self._thumbnails[uid] @ query) for uid, _ in keyframes])
        return [int(i) for i in np.argsort(-scores)[:count]]

    def relative_pose(self, kf: Features, kf_invdepth: np.ndarray, frame: Features) -> PnpPose | None:
        """The pose mapping keyframe camera coordinates to the frame's, with its matches; None when the matches do
        not determine a pose reliably. ``kf_invdepth`` is the keyframe's grid inverse depth (h, w)."""
        cfg = self.config
        if kf.descriptors is None or frame.descriptors is None:
            return None
        if len(kf.descriptors) < 2 or len(frame.descriptors) < 2:
            return None
        # Lowe's ratio test: a match clearly better than the second best (repeated texture fails it).
        pairs = self._matcher.knnMatch(kf.descriptors, frame.descriptors, k=2)
        matches = [p[0] for p in pairs if len(p) == 2 and p[0].distance < _RATIO * p[1].distance]
        if len(matches) < cfg.min_inliers:
            return None
        qi = np.array([m.queryIdx for m in matches])
        ti = np.array([m.trainIdx for m in matches])
        src, dst = kf.points[qi], frame.points[ti]
        inv = self._at_pixels(kf_invdepth, src)
        ok = inv > 1e-6
        if int(ok.sum()) < cfg.min_inliers:
            return None
        src, dst, z = src[ok].astype(np.float64), dst[ok].astype(np.float64), 1.0 / inv[ok].astype(np.float64)
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        pts3 = np.stack([(src[:, 0] - cx) / fx * z, (src[:, 1] - cy) / fy * z, z], axis=-1)
        try:
            found, rvec, tvec, inliers = cv2.solvePnPRansac(pts3, dst, self.K, None, reprojectionError=cfg.reproj_px,
                                                            iterationsCount=500, flags=cv2.SOLVEPNP_SQPNP)
        except cv2.error:  # degenerate samples (e.g. points of a constant-depth keyframe) can trip SQPnP
            return None
        if not found or inliers is None or len(inliers) < max(cfg.min_inliers, cfg.min_inlier_ratio * len(pts3)):
            return None
        idx = inliers[:, 0]
        rvec, tvec = cv2.solvePnPRefineLM(pts3[idx], dst[idx], self.K, None, rvec, tvec)
        T = np.eye(4)
        T[:3, :3] = cv2.Rodrigues(rvec)[0]
        T[:3, 3] = tvec[:, 0]
        return PnpPose(T, len(idx), pts3, dst)

    def inliers(self, found: PnpPose, T: np.ndarray) -> np.ndarray:
        """Which of ``found``'s matches the keyframe -> frame pose ``T`` (4, 4) reprojects within the RANSAC
        threshold: the same measure for the PnP pose and for a pose from another source (the dense flow)."""
        X = found.points @ T[:3, :3].T + T[:3, 3]
        z = X[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = X[:, :2] / z[:, None] * np.diag(self.K)[:2] + self.K[:2, 2]
        err = np.linalg.norm(uv - found.pixels, axis=1)
        return (z > 1e-6) & (err < self.config.reproj_px)

    def depth_ratio(self, found: PnpPose, frame_invdepth: np.ndarray, min_points: int = 20) -> float | None:
        """How much deeper ``found``'s inlier matches lie by the keyframe they were matched to (moved into the
        frame's camera by ``found.T``) than by the frame's own grid inverse depth (h, w): the median ratio, or None
        with fewer than ``min_points`` to measure it on. The scale between two maps with scales of their own."""
        ok = self.inliers(found, found.T)
        depth_there = (found.points[ok] @ found.T[:3, :3].T + found.T[:3, 3])[:, 2]
        inv_here = self._at_pixels(frame_invdepth, found.pixels[ok])
        valid = inv_here > 1e-6
        if int(valid.sum()) < min_points:
            return None
        return float(np.median(depth_there[valid] * inv_here[valid]))

    def _at_pixels(self, grid_values: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """Bilinear samples of a BA-grid map (h, w) at processing-resolution pixels (N, 2)."""
        # Grid pixel (u, v) is the centre of a stride x stride block: x_grid = (x + 0.5) / stride - 0.5.
        grid_xy = ((pixels + 0.5) / self.stride - 0.5).astype(np.float32)
        return cv2.remap(grid_values.astype(np.float32), grid_xy[:, :1].copy(), grid_xy[:, 1:].copy(),
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[:, 0]

    def support(self, found: PnpPose, T: np.ndarray) -> int:
        """How many of ``found``'s matches ``T`` reprojects within the RANSAC threshold (``inliers``)."""
        return int(self.inliers(found, T).sum())


def _thumbnail(grey: np.ndarray) -> np.ndarray:
    t = cv2.resize(grey, _THUMBNAIL, interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
    t -= t.mean()
    return t / max(float(np.linalg.norm(t)), 1e-9)
