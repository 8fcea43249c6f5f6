"""Keypoint tracks across keyframes: detection, verified matching, and the track table the BA reads.

Each new keyframe's keypoints (SIFT or ORB at the processing resolution) are matched to the newest few keyframes
of its segment (Lowe's ratio test, then a fundamental-matrix RANSAC), and linked into tracks: a match to a
keypoint that already belongs to a track extends it, otherwise a new track starts, hosted by the older keyframe at
its keypoint's sub-pixel position with the inverse depth of the host's BA depth there. ``gather`` hands the
tracks of a set of keyframes to the BA (``metricslam.slam.sparse_factors``); ``update`` takes its point depths
back and drops observations the BA could not fit.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from metricslam.geometry import se3
from metricslam.geometry.projective import MIN_DEPTH, unproject
from metricslam.slam.config import SparseTracksConfig
from metricslam.slam.sparse_factors import SparseObservations, residuals
from metricslam.slam.video import KeyframeStore


@dataclass
class _Recent:
    """A recent keyframe's keypoints, kept for matching the next keyframes."""

    uid: int
    points: np.ndarray  # (n, 2) float32 processing pixels
    descriptors: np.ndarray  # (n, d)
    track: np.ndarray  # (n,) int64 track of each keypoint, -1 for none


def detect(grey: np.ndarray, config: SparseTracksConfig) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (n, 2) float32 and descriptors (n, d) of a grey image."""
    det = cv2.SIFT_create(config.features) if config.detector == "sift" else cv2.ORB_create(config.features)
    keypoints, desc = det.detectAndCompute(grey, None)
    points = np.array([kp.pt for kp in keypoints], dtype=np.float32).reshape(-1, 2)
    if desc is None:
        desc = np.zeros((0, 128 if config.detector == "sift" else 32), np.float32 if config.detector == "sift" else np.uint8)
    return points, desc


def match(points_a: np.ndarray, desc_a: np.ndarray, points_b: np.ndarray, desc_b: np.ndarray,
          config: SparseTracksConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ia, ib) of verified matches between two keyframes' keypoints: ratio test, one match per keypoint
    of b (the closest), and inliers of a fundamental-matrix RANSAC."""
    none = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(desc_a) < 8 or len(desc_b) < 8:
        return none
    matcher = cv2.BFMatcher(cv2.NORM_L2 if config.detector == "sift" else cv2.NORM_HAMMING)
    pairs = matcher.knnMatch(desc_a, desc_b, k=2)
    found = np.array([(m[0].queryIdx, m[0].trainIdx, m[0].distance) for m in pairs
                      if len(m) == 2 and m[0].distance < config.ratio * m[1].distance]).reshape(-1, 3)
    if len(found) < 8:
        return none
    found = found[np.argsort(found[:, 2], kind="stable")]
    _, first = np.unique(found[:, 1], return_index=True)
    ia, ib = found[first, 0].astype(np.int64), found[first, 1].astype(np.int64)
    if len(ia) < 8:
        return none
    _, inliers = cv2.findFundamentalMat(points_a[ia], points_b[ib], cv2.FM_RANSAC, config.ransac_px, 0.999)
    if inliers is None:
        return none
    keep = inliers[:, 0].astype(bool)
    return ia[keep], ib[keep]


class KeypointTracks:
    """Tracks over the keyframes of a ``KeyframeStore`` (keyframes are named by uid, so removals elsewhere in
    the store do not disturb them). ``stride`` and ``grid_intrinsics`` ([fx, fy, cx, cy]) are the BA grid's."""

    def __init__(self, config: SparseTracksConfig, stride: int, grid_intrinsics: torch.Tensor):
        self.config = config
        self.stride = stride
        self.intrinsics = grid_intrinsics
        # Track table: host keyframe uid, position in the host (grid pixels), inverse depth (1/m).
        self.host = np.zeros(0, np.int64)
        self.uv = np.zeros((0, 2), np.float32)
        self.invdepth = np.zeros(0, np.float32)
        # Observations by keyframes other than the host.
        self.obs_track = np.zeros(0, np.int64)
        self.obs_uid = np.zeros(0, np.int64)
        self.obs_uv = np.zeros((0, 2), np.float32)
        self._recent: list[_Recent] = []

    def _grid(self, points: np.ndarray) -> np.ndarray:
        """Processing pixels -> BA grid pixels (pixel centres: g = (p + 0.5) / stride - 0.5)."""
        return ((points + 0.5) / self.stride - 0.5).astype(np.float32)

    def add_keyframe(self, store: KeyframeStore, k: int, first: int) -> None:
        """Detect keypoints on keyframe k and link them to the newest ``match_window`` keyframes from ``first``
        (the segment's first keyframe) on."""
        uid = int(store.uid[k])
        points, desc = detect(store.grey[k], self.config)
        track = np.full(len(points), -1, np.int64)
        first_uid = int(store.uid[first])
        for old in reversed(self._recent):
            if old.uid < first_uid:
                continue
            ia, ib = match(points, desc, old.points, old.descriptors, self.config)
            fresh = track[ia] < 0
            ia, ib = ia[fresh], ib[fresh]
            t = old.track[ib]
            new = t < 0
            if new.any():
                ids = len(self.host) + np.arange(int(new.sum()))
                host_uv = self._grid(old.points[ib[new]])
                self.host = np.concatenate([self.host, np.full(len(ids), old.uid)])
                self.uv = np.concatenate([self.uv, host_uv])
                kf = torch.full((len(ids),), store.index_of(old.uid), dtype=torch.long, device=store.device)
                start = bilinear(store.invdepth, kf, torch.from_numpy(host_uv).to(store.device))
                self.invdepth = np.concatenate([self.invdepth, start.cpu().numpy().astype(np.float32)])
                old.track[ib[new]] = ids
                t[new] = ids
            # A track takes one keypoint of the new keyframe (two could reach it through different keyframes).
            _, once = np.unique(t, return_index=True)
            taken = np.isin(t, self.obs_track[self.obs_uid == uid])
            once = once[~taken[once]]
            track[ia[once]] = t[once]
            self._observe(t[once], uid, self._grid(points[ia[once]]))
        self._recent.append(_Recent(uid, points, desc, track))
        self._recent = self._recent[-self.config.match_window:]

    def _observe(self, tracks: np.ndarray, uid: int, uv: np.ndarray) -> None:
        self.obs_track = np.concatenate([self.obs_track, tracks])
        self.obs_uid = np.concatenate([self.obs_uid, np.full(len(tracks), uid)])
        self.obs_uv = np.concatenate([self.obs_uv, uv])

    def forget(self, store: KeyframeStore, k: int) -> None:
        """Keyframe k is about to leave the store: drop its observations and move the tracks it hosts to their
        oldest remaining observer (position: that observation; depth: the point seen from there)."""
        uid = int(store.uid[k])
        self._recent = [r for r in self._recent if r.uid != uid]
        hosted = np.nonzero(self.host == uid)[0]
        if len(hosted):
            # The oldest remaining observation of each hosted track (observations are appended in uid order).
            obs = np.nonzero(np.isin(self.obs_track, hosted) & (self.obs_uid != uid))[0]
            _, first = np.unique(self.obs_track[obs], return_index=True)
            moved = obs[first]
            t = self.obs_track[moved]
            new_host = self.obs_uid[moved]
            kh = torch.from_numpy(_position(store.uid.cpu().numpy(), new_host)).to(store.device)
            X = self._points_in(store, torch.full_like(kh, k), torch.from_numpy(self.uv[t]), torch.from_numpy(
                self.invdepth[t]), kh)
            self.invdepth[t] = (1.0 / X[:, 2].clamp_min(1e-6)).cpu().numpy() * (X[:, 2] > 0).cpu().numpy()
            self.host[t] = new_host
            self.uv[t] = self.obs_uv[moved]
            self._keep(np.setdiff1d(np.arange(len(self.obs_track)), moved))
        # Tracks left without an observer keep the removed host's uid and are never gathered again.
        self._keep(np.nonzero(self.obs_uid != uid)[0])

    def _points_in(self, store: KeyframeStore, src: torch.Tensor, uv: torch.Tensor, invdepth: torch.Tensor,
                   dst: torch.Tensor) -> torch.Tensor:
        """Camera coordinates in keyframes ``dst`` of points at grid pixels uv with inverse depths of ``src``."""
        X = unproject(uv.to(torch.float64), torch.ones_like(invdepth, dtype=torch.float64), self.intrinsics)[:, :3]
        X = X.to(store.device) / invdepth.to(X).clamp_min(1e-9)[:, None]
        T = store.poses[dst] @ se3.inverse(store.poses[src])
        return (T[:, :3, :3] @ X.to(T)[:, :, None])[:, :, 0] + T[:, :3, 3]

    def _keep(self, rows: np.ndarray) -> None:
        self.obs_track, self.obs_uid, self.obs_uv = self.obs_track[rows], self.obs_uid[rows], self.obs_uv[rows]

    def gather(self, store: KeyframeStore, indices: list[int]) -> tuple[SparseObservations, np.ndarray] | None:
        """The tracks hosted and observed among keyframes ``indices`` (positions in the BA problem follow the
        order of ``indices``), and the track number of each point; None when there are none."""
        if len(self.obs_track) == 0:
            return None
        uids = store.uid[indices].cpu().numpy()
        frame = _position(uids, self.obs_uid)
        host = _position(uids, self.host[self.obs_track])
        rows = np.nonzero((frame >= 0) & (host >= 0))[0]
        if len(rows) == 0:
            return None
        tracks, point = np.unique(self.obs_track[rows], return_inverse=True)
        dev = store.device
        idx = torch.as_tensor(indices, dtype=torch.long, device=dev)
        host_t = torch.from_numpy(_position(uids, self.host[tracks])).to(dev)
        uv = torch.from_numpy(self.uv[tracks]).to(dev)
        prior, conf = _prior_at(store.prior_invdepth[idx], store.prior_conf[idx], host_t, uv)
        obs = SparseObservations(
            host=host_t, uv=uv, invdepth=torch.from_numpy(self.invdepth[tracks]).to(dev), prior=prior,
            prior_conf=conf, point=torch.from_numpy(point.astype(np.int64)).to(dev),
            frame=torch.from_numpy(frame[rows]).to(dev), target=torch.from_numpy(self.obs_uv[rows]).to(dev),
            weight=torch.full((len(rows),), self.config.weight, dtype=torch.float32, device=dev),
            robust_px=self.config.robust_px / self.stride)
        return obs, tracks

    def update(self, store: KeyframeStore, indices: list[int], gathered: tuple[SparseObservations, np.ndarray]
               ) -> None:
        """Take the BA's point depths back and drop the observations it left more than ``max_residual_px`` off
        (in the store's current poses)."""
        obs, tracks = gathered
        self.invdepth[tracks] = obs.invdepth.cpu().numpy()
        idx = torch.as_tensor(indices, dtype=torch.long, device=store.device)
        err = residuals(obs, store.poses[idx], self.intrinsics.to(obs.target), MIN_DEPTH) * self.stride
        bad = (err > self.config.max_residual_px).cpu().numpy()
        if bad.any():
            uids = store.uid[indices].cpu().numpy()
            drop = _pair_key(tracks[obs.point.cpu().numpy()[bad]], uids[obs.frame.cpu().numpy()[bad]])
            self._keep(np.nonzero(~np.isin(_pair_key(self.obs_track, self.obs_uid), drop))[0])

    def observations(self) -> int:
        """Number of track observations (besides the hosts)."""
        return len(self.obs_track)


def _position(uids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index in ``uids`` (distinct) of every entry of ``wanted``; -1 where absent."""
    order = np.argsort(uids)
    at = np.clip(np.searchsorted(uids[order], wanted), 0, len(uids) - 1)
    return np.where(uids[order][at] == wanted, order[at], -1)


def _pair_key(track: np.ndarray, uid: np.ndarray) -> np.ndarray:
    """One int64 per (track, keyframe uid) pair."""
    return track.astype(np.int64) * (1 << 32) + uid.astype(np.int64)


def bilinear(grids: torch.Tensor, k: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of grids (K, h, w) at grid pixels uv (n, 2) of grids k (n,), clamped to the border."""
    _, h, w = grids.shape
    u = uv[:, 0].to(grids.dtype).clamp(0, w - 1)
    v = uv[:, 1].to(grids.dtype).clamp(0, h - 1)
    u0 = u.floor().long().clamp(max=w - 2) if w > 1 else u.long()
    v0 = v.floor().long().clamp(max=h - 2) if h > 1 else v.long()
    a, b = u - u0, v - v0
    u1, v1 = (u0 + 1).clamp(max=w - 1), (v0 + 1).clamp(max=h - 1)
    return ((1 - a) * (1 - b) * grids[k, v0, u0] + a * (1 - b) * grids[k, v0, u1] + (1 - a) * b * grids[k, v1, u0]
            + a * b * grids[k, v1, u1])


def _prior_at(prior: torch.Tensor, conf: torch.Tensor, k: torch.Tensor, uv: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Prior inverse depth and confidence at sub-pixel points: bilinear where the four cells around have a prior,
    no prior elsewhere (an interpolation with a missing cell would pull the depth towards 0)."""
    value = bilinear(prior, k, uv)
    ok = bilinear((prior > 0).to(prior.dtype), k, uv) > 0.999
    return torch.where(ok, value, torch.zeros_like(value)), torch.where(ok, bilinear(conf, k, uv),
                                                                        torch.zeros_like(value))
