"""``Slam``: the one entry point. Feed frames with ``track``, get a ``Reconstruction`` from ``finish``.

Per frame: bring it to the processing resolution, track it against the last keyframe (flow + motion-only BA),
and when it has moved far enough make it a keyframe (front-end window BA). The back-end runs a global BA
periodically and at the end; the filler then gives every frame its final pose.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from metricslam.depth.prior_protocol import DepthPrior
from metricslam.device import resolve_device
from metricslam.geometry import se3
from metricslam.geometry.camera import Intrinsics
from metricslam.geometry.projective import pixel_grid, reproject
from metricslam.io.frame import Frame
from metricslam.slam.ba import refine_pose
from metricslam.slam.backend import Backend, proximity_pairs, segment_ids
from metricslam.slam.config import SlamConfig
from metricslam.slam.correspondence.classical import ClassicalCorrespondence, grey
from metricslam.slam.correspondence.factory import Edges, Tracker, make_correspondence
from metricslam.slam.filler import FrameRecord, fill_poses, reanchor
from metricslam.slam.frontend import Frontend
from metricslam.slam.graph import initial_flows
from metricslam.slam.keypoint_tracks import KeypointTracks
from metricslam.slam.pnp import Features, PnpInitialiser, PnpPose
from metricslam.slam.preprocess import prepare_frame, prior_to_grid, processing_camera
from metricslam.slam.prior_factory import make_prior
from metricslam.slam.prior_schedule import ScheduledPriors
from metricslam.slam.reconstruction import Reconstruction
from metricslam.slam.rgbd_refine import RefineStats, RgbdAligner, odometry_pairs, refine_keyframe_poses
from metricslam.slam.two_view import essential_pose, triangulate_invdepth
from metricslam.slam.updates import UpdateCallback, UpdateFeed
from metricslam.slam.video import KeyframeStore

log = logging.getLogger(__name__)

# Below this grey-level standard deviation a frame has too little texture to start a new keyframe on.
_MIN_TEXTURE_STD = 4.0
# A two-view start is refused when a homography explains at least this many correspondences per essential-matrix
# inlier: a rotating camera (or a plane), whose translation and depth two views do not determine.
_ROTATION_ONLY_SHARE = 1.0
# Below this fraction of confident grid pixels the flow is unsure of its pose (tracking.pnp.below's default).
_UNSURE = 0.3


class Slam:
    """Metric monocular SLAM with depth priors. ``prior`` overrides the one named in ``config.prior``;
    ``on_update`` is called after every frame with a ``SlamUpdate`` (its pose, the keyframes that joined)."""

    # Set on the first frame, by config.correspondence.
    corr: Tracker
    edges: Edges

    def __init__(self, config: SlamConfig | None = None, prior: DepthPrior | None = None,
                 on_update: UpdateCallback | None = None):
        self.config = config or SlamConfig()
        self._feed = UpdateFeed(on_update) if on_update is not None else None
        self.device = resolve_device(self.config.device)
        self.prior = prior if prior is not None else make_prior(self.config.prior)
        self.records: list[FrameRecord] = []
        self.events: list[str] = []
        self.segment_starts: list[int] = [0]
        self._failures = 0
        self._since_backend = 0
        self._camera: Intrinsics | None = None
        self._rgbd: RgbdAligner | None = None  # direct RGB-D alignment, when the prior is measured depth
        self._rgbd_keyframe: tuple[int, object] | None = None  # (uid, aligner image) of the latest keyframe
        self.rgbd_stats: RefineStats | None = None  # what the RGB-D refinement at the end did, if it ran

    # -- set-up on the first frame -------------------------------------------------------------------------
    def _start(self, frame: Frame) -> None:
        cfg = self.config
        if self.device.type == "cpu" and cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self._size, self._camera = processing_camera(frame.intrinsics, cfg.image_area, cfg.stride, cfg.upscale)
        self.grid_camera = self._camera.scaled(1.0 / cfg.stride)
        self.grid_intrinsics = torch.tensor(self.grid_camera.params, dtype=torch.float64, device=self.device)
        grid_hw = (self._camera.height // cfg.stride, self._camera.width // cfg.stride)
        self.store = KeyframeStore(grid_hw, self.device)
        self.priors = ScheduledPriors(self.prior, cfg.prior, self.store, self._camera, self.grid_intrinsics,
                                      cfg.stride, cfg.prior_grid_edge)
        self.corr, self.edges = make_correspondence(cfg.correspondence, cfg.flow, cfg.stride, self.grid_intrinsics,
                                                    cfg.ba.eta, cfg.droid_weights, self.device)
        weight = cfg.prior.weight if cfg.prior.weight is not None else self.prior.ba_weight
        self.tracks = KeypointTracks(cfg.sparse, cfg.stride, self.grid_intrinsics) if cfg.sparse.enabled else None
        self.frontend = Frontend(self.store, self.edges, cfg.frontend, cfg.ba_options("window", weight),
                                 self.grid_intrinsics, cfg.flow.refine, self.tracks)
        self.backend = Backend(self.store, self.edges, cfg.backend, cfg.ba_options("global", weight),
                               self.grid_intrinsics, self.tracks)
        self._track_opts = cfg.ba_options("tracking")
        self.pnp = PnpInitialiser(cfg.tracking.pnp, self._camera, cfg.stride) if cfg.tracking.pnp.enabled else None

    @property
    def camera(self):
        """Intrinsics at the processing resolution (None before the first frame)."""
        return self._camera

    # -- per frame --------------------------------------------------------------------------------------------
    def track(self, frame: Frame) -> None:
        """Process the next frame of the video (frames must come in time order)."""
        self._track(frame)
        if self._feed is not None:
            self._feed.send(frame, self.records[-1], self.store, self.grid_camera)

    def _track(self, frame: Frame) -> None:
        if self._camera is None:
            self._start(frame)
        assert self._camera is not None
        f = prepare_frame(frame, self._size, self._camera)
        g = grey(f.rgb)
        if len(self.store) == 0:
            self._add_keyframe(f, g, torch.eye(4, dtype=torch.float64, device=self.device))
            return
        k = len(self.store) - 1
        guess = self._predict(k)
        tw, ww, mean_flow, confident = self._flow_to(k, guess, f.rgb, g)
        feats = measured = None
        pose = None
        if self.pnp is not None and confident < self.config.tracking.pnp.below:
            # The constant-velocity start may have been too far off for the flow: start again from feature PnP.
            feats = self.pnp.features(g)
            found = self._pnp_match(k, feats)
            if found is None and self.config.tracking.min_confident <= confident < _UNSURE:
                # Unsure flow and no feature match with the last keyframe: the video may have jumped back to a
                # place mapped earlier, which the flow half-matches with the wrong keyframe.
                back = self._relocalise(g, feats)
                if back is not None and back[1] < self._newest_first():
                    self._relocalised(f, g, *back)
                    return
            if found is not None:
                measured = self._pnp_to_world(found, k)
                retry = self._flow_to(k, measured, f.rgb, g)
                if confident >= self.config.tracking.min_confident:
                    # Both starts give a pose. Flow confidence is photometric and flat regions pass it from
                    # either start, so the pose that more of the feature matches agree with is kept.
                    pose = self._refine(k, guess, tw, ww)
                    retried = self._refine(k, measured, retry[0], retry[1])
                    if self._support(found, retried, k) > self._support(found, pose, k):
                        pose, (tw, ww, mean_flow, confident) = retried, retry
                elif retry[3] > confident:
                    guess, (tw, ww, mean_flow, confident) = measured, retry
        prev = self.records[-1]
        if confident < self.config.tracking.min_confident:
            self._on_failure(f, g, prev, confident, feats, measured)
            return
        if pose is None:
            pose = self._refine(k, guess, tw, ww)
        if not self._plausible(pose, k):
            self._on_failure(f, g, prev, confident, feats, measured)
            return
        self._failures = 0
        if mean_flow > self.config.tracking.filter_thresh:
            if self._needs_bootstrap(k):
                started = self._bootstrap(k, g, f.index)
                if started is None and mean_flow < self.config.tracking.bootstrap_give_up * self.config.tracking.filter_thresh:
                    # Too little parallax for a two-view start yet: wait for more motion.
                    self.records.append(FrameRecord(f.index, f.timestamp, int(self.store.uid[k]),
                                                    pose @ se3.inverse(self.store.poses[k]), True, tw.half(), ww.half()))
                    return
                pose = pose if started is None else started
            self._add_keyframe(f, g, pose)
            self._join_previous_segment(f, g, feats)
        else:
            rel = pose @ se3.inverse(self.store.poses[k])
            aligned = self._align_rgbd(f, k, rel)
            if aligned is not None:
                self.records.append(FrameRecord(f.index, f.timestamp, int(self.store.uid[k]), aligned, True))
            else:
                self.records.append(FrameRecord(f.index, f.timestamp, int(self.store.uid[k]), rel, True,
                                                tw.half(), ww.half()))

    def _needs_bootstrap(self, k: int) -> bool:
        """Whether keyframe k is the only one of its segment and has no depth prior (a monocular start), with the
        classical flow to start it from (the learned back-end starts from a constant depth, as DROID-SLAM does)."""
        return (isinstance(self.corr, ClassicalCorrespondence) and k == self.frontend.segment_start
                and float(self.store.prior_conf[k].max()) <= 0)

    def _bootstrap(self, k: int, g: np.ndarray, index: int) -> torch.Tensor | None:
        """Start a monocular segment: the frame's T_cw from the essential matrix of the flow from keyframe k, and
        keyframe k's depth by triangulation (median depth 1), or None when the views have too little parallax."""
        cfg = self.config
        targets, weights = self._flow_targets(self.store.grey[k], g)
        good = (weights[..., 0] > 0.5)
        s = cfg.stride
        src = (pixel_grid(self.store.h, self.store.w, self.device, torch.float64)[good] * s + (s - 1) / 2).cpu().numpy()
        dst = (targets[good].to(torch.float64) * s + (s - 1) / 2).cpu().numpy()
        assert self._camera is not None
        camera = torch.tensor(self._camera.params, dtype=torch.float64)
        found = essential_pose(src, dst, camera, threshold_px=1.0)
        log.debug("two-view start at frame %d: %s", index, found and (found.parallax_deg, found.homography_share))
        if (found is None or found.parallax_deg < cfg.tracking.bootstrap_parallax
                or found.homography_share >= _ROTATION_ONLY_SHARE):
            return None
        T_ji = torch.from_numpy(found.T_ji).to(self.store.poses)
        invdepth, ok = self._triangulate(T_ji, targets, weights)
        if int(ok.sum()) < 50:
            return None
        scale = float(invdepth[ok].median())  # median depth 1 in the new segment's unit
        invdepth = (invdepth / scale).to(self.store.invdepth.dtype)
        self.store.invdepth[k] = torch.where(ok, invdepth, torch.ones_like(invdepth))
        T_ji[:3, 3] = T_ji[:3, 3] * scale
        self.events.append(f"frame {index}: monocular start from two views "
                           f"({found.parallax_deg:.1f} deg parallax)")
        log.info(self.events[-1])
        return T_ji @ self.store.poses[k]

    def _flow_targets(self, grey_i: np.ndarray, grey_j: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Graph-quality correspondences i -> j with no prediction: grid targets and weights (h, w, 2)."""
        assert isinstance(self.corr, ClassicalCorrespondence)
        t_ij, w_ij, _, _ = self.corr.pair(grey_i, grey_j)
        return torch.from_numpy(t_ij).to(self.device), torch.from_numpy(w_ij).to(self.device)

    def _triangulated_depth(self, g: np.ndarray, pose_cw: torch.Tensor, fill: float) -> torch.Tensor:
        """A new prior-less keyframe's inverse depth by triangulating its flow to the previous keyframe at the
        tracked pose; ``fill`` where the rays are too close to parallel or the flow is not confident."""
        k = len(self.store) - 1
        targets, weights = self._flow_targets(g, self.store.grey[k])
        invdepth, ok = self._triangulate(self.store.poses[k] @ se3.inverse(pose_cw), targets, weights)
        return torch.where(ok, invdepth, torch.full_like(invdepth, fill)).to(self.store.invdepth.dtype)

    def _triangulate(self, T_ji: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse depth of view i's grid pixels from their targets in view j (T_ji: i's camera to j's), and where
        it holds: confident flow, in front of both cameras, rays meeting at a quarter of the start's parallax."""
        invdepth, angle = triangulate_invdepth(T_ji, targets.to(torch.float64), self.grid_intrinsics)
        min_angle = np.radians(self.config.tracking.bootstrap_parallax) / 4
        return invdepth, (weights[..., 0] > 0.5) & (invdepth > 0) & (angle > min_angle)

    def _align_rgbd(self, f: Frame, k: int, rel: torch.Tensor) -> torch.Tensor | None:
        """The frame's pose relative to keyframe k (T_frame_kf) by direct RGB-D odometry from ``rel``, or None
        (no measured depth, or the odometry failed). The filler keeps such a pose as it is."""
        depth = self.store.prior_depth_full[k]
        if self._rgbd is None or depth is None:
            return None
        measured = self.prior(f)
        if measured is None:
            return None
        uid = int(self.store.uid[k])
        if self._rgbd_keyframe is None or self._rgbd_keyframe[0] != uid:
            self._rgbd_keyframe = (uid, self._rgbd.image(self.store.rgb[k], depth))
        found = self._rgbd.align(self._rgbd.image(f.rgb, measured[0]), self._rgbd_keyframe[1],
                                 np.linalg.inv(rel.cpu().numpy()))
        return None if found is None else torch.from_numpy(np.linalg.inv(found[0])).to(rel)

    def _flow_to(self, k: int, guess_cw: torch.Tensor, rgb: np.ndarray, g: np.ndarray
                 ) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """Correspondences keyframe k -> the frame with the flow started from ``guess_cw``'s reprojection:
        targets and weights (h, w, 2), mean flow (grid px) and the fraction of confident grid pixels."""
        both = torch.stack([self.store.poses[k], guess_cw])
        coords, valid = reproject(both, self.store.invdepth[k : k + 1].expand(2, -1, -1), self.grid_intrinsics,
                                  torch.tensor([0], device=self.device), torch.tensor([1], device=self.device))
        init = initial_flows(coords, valid, self.config.stride)[0]
        kf_image, image = (self.store.rgb[k], rgb) if self.corr.reads_colour else (self.store.grey[k], g)
        targets, weights, mean_flow = self.corr.track(kf_image, image, init)
        tw = torch.from_numpy(targets).to(self.device)
        ww = torch.from_numpy(weights).to(self.device)
        confident = float((ww[..., 0] > 0.5).float().mean())
        # Flat regions match photometrically whatever the flow: weigh them down in the pose, not in the count.
        texture = self.corr.texture(kf_image)
        if texture is not None:
            ww = ww * torch.from_numpy(texture).to(self.device)[..., None]
        return tw, ww, mean_flow, confident

    def _plausible(self, pose_cw: torch.Tensor, k: int) -> bool:
        """A tracked pose is finite and no farther from keyframe k than its median scene depth."""
        if not bool(torch.isfinite(pose_cw).all()):
            return False
        rel = pose_cw @ se3.inverse(self.store.poses[k])
        median_depth = 1.0 / float(self.store.invdepth[k].median().clamp_min(1e-6))
        return float(rel[:3, 3].norm()) < median_depth

    def _refine(self, k: int, start_cw: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The frame's T_cw fitted to its correspondences with keyframe k, from ``start_cw``."""
        return refine_pose(start_cw, self.store.poses[k : k + 1], self.store.invdepth[k : k + 1],
                           self.grid_intrinsics, torch.zeros(1, dtype=torch.long, device=self.device), targets[None],
                           weights[None], iters=self.config.tracking.iters, options=self._track_opts)

    def _pnp_match(self, k: int, feats: Features | None) -> PnpPose | None:
        """The frame's pose relative to keyframe k from feature matches, or None. A segment's first keyframe
        without a prior has no depth yet (a constant fill) to lift its features with."""
        if self.pnp is None or feats is None or (k == self.frontend.segment_start and float(self.store.prior_conf[k].max()) <= 0):
            return None
        kf = self.pnp.keyframe_features(int(self.store.uid[k]), self.store.grey[k])
        return self.pnp.relative_pose(kf, self.store.invdepth[k].cpu().numpy(), feats)

    def _pnp_to_world(self, found: PnpPose, k: int) -> torch.Tensor:
        """The frame's T_cw from a PnP solution against keyframe k."""
        return torch.from_numpy(found.T).to(self.store.poses) @ self.store.poses[k]

    def _support(self, found: PnpPose, pose_cw: torch.Tensor, k: int) -> int:
        """How many of ``found``'s feature matches the frame pose ``pose_cw`` reprojects within the PnP threshold."""
        assert self.pnp is not None
        if not bool(torch.isfinite(pose_cw).all()):
            return -1
        return self.pnp.support(found, (pose_cw @ se3.inverse(self.store.poses[k])).cpu().numpy())

    def _predict(self, k: int) -> torch.Tensor:
        """Constant-velocity guess of the new frame's T_cw from the last two frames."""
        recent = [r for r in self.records[-2:]]
        poses = [r.pose_cw(self.store) for r in recent]
        if len(poses) < 2:
            return poses[-1]
        return se3.orthonormalise(poses[1] @ se3.inverse(poses[0]) @ poses[1])

    def _relocalise(self, g: np.ndarray, feats: Features | None) -> tuple[torch.Tensor, int] | None:
        """T_cw from feature matches to the newest keyframes of the current segment (newest first), then to its
        older keyframes that look most like the frame, with the keyframe that gave it; or None.

        A pose enters the map only when it is plausible and, where a second keyframe also gives a pose, the two
        agree: a single PnP solution can fit a wrong set of matches (repeated texture)."""
        if self.pnp is None:
            return None
        feats = feats if feats is not None else self.pnp.features(g)
        last, first = len(self.store) - 1, self._newest_first()
        candidates = list(range(last, first - 1, -1)) + self._most_similar(g, range(self.segment_starts[-1], first))
        placed = self._placements(feats, candidates)
        if len(placed) == 1 and last == first:
            return placed[0][1], placed[0][0]  # the segment's only keyframe: nothing to check against
        agreed = self._agreed(placed)
        return None if agreed is None else (agreed[1], agreed[0])

    def _most_similar(self, g: np.ndarray, keyframes: range) -> list[int]:
        """The keyframes among ``keyframes`` that look most like the frame (tracking.pnp.relocalise_similar)."""
        assert self.pnp is not None
        ks = list(keyframes)
        similar = self.pnp.most_similar(g, [(int(self.store.uid[k]), self.store.grey[k]) for k in ks],
                                        self.config.tracking.pnp.relocalise_similar)
        return [ks[i] for i in similar]

    def _placements(self, feats: Features, candidates: list[int]) -> list[tuple[int, torch.Tensor, PnpPose]]:
        """(keyframe, T_cw, PnP solution) for each candidate keyframe that feature PnP places the frame against
        plausibly."""
        placed = []
        for k in candidates:
            found = self._pnp_match(k, feats)
            if found is not None and self._plausible(pose := self._pnp_to_world(found, k), k):
                placed.append((k, pose, found))
        return placed

    def _agreed(self, placed: list[tuple[int, torch.Tensor, PnpPose]]) -> tuple[int, torch.Tensor, PnpPose] | None:
        """The first placement that a later one agrees with; None when no two agree."""
        for a, (k, pose, _) in enumerate(placed):
            if any(self._agree(pose, other, k) for _, other, _ in placed[a + 1 :]):
                return placed[a]
        return None

    def _join_previous_segment(self, f: Frame, g: np.ndarray, feats: Features | None) -> None:
        """After a restart, once the frame's features place it against two keyframes of the previous segment
        that agree (the camera is back where it mapped before the loss), move the current segment's keyframes
        into the previous segment's frame (and, without a metric prior, its scale) and make the two one segment.
        ``feats``: the frame's features when tracking already computed them."""
        start = self.segment_starts[-1]
        k = len(self.store) - 1
        if self.pnp is None or len(self.segment_starts) < 2 or k == start or int(self.store.frame_index[k]) != f.index:
            return
        previous = range(self.segment_starts[-2], start)
        feats = feats if feats is not None else self.pnp.features(g)
        agreed = self._agreed(self._placements(feats, self._most_similar(g, previous)))
        if agreed is None:
            return
        matched, placed, found = agreed
        scale = 1.0 if self.prior.metric else self.pnp.depth_ratio(found, self.store.invdepth[k].cpu().numpy())
        if scale is None:
            return
        # Point X in the current segment's world and scale is s * X in the previous one's: each keyframe pose T_j
        # becomes scaled(T_j @ T_k^-1, s) @ T_placed, where T_k is the frame's pose in the current segment.
        to_frame = self.store.poses[start:] @ se3.inverse(self.store.poses[k])
        to_frame[:, :3, 3] *= scale
        self.store.poses[start:] = se3.orthonormalise(to_frame @ placed)
        self.store.invdepth[start:] /= scale
        moved = {int(u) for u in self.store.uid[start:]}
        for rec in self.records:
            if rec.ref_uid in moved:
                rec.rel = rec.rel.clone()
                rec.rel[:3, 3] *= scale
        self.segment_starts.pop()
        self.events.append(f"frame {f.index}: joined the segment to the previous one at keyframe {matched} "
                           f"(frame {int(self.store.frame_index[matched])})"
                           + ("" if self.prior.metric else f", scale x{scale:.3f}"))
        log.warning(self.events[-1])

    def _newest_first(self) -> int:
        """The oldest of the newest keyframes that relocalisation tries first (tracking.pnp.relocalise)."""
        return max(self.segment_starts[-1], len(self.store) - self.config.tracking.pnp.relocalise)

    def _agree(self, a_cw: torch.Tensor, b_cw: torch.Tensor, k: int) -> bool:
        """Two pose estimates of one frame agree: within 2 degrees and 5 % of keyframe k's median depth."""
        diff = a_cw @ se3.inverse(b_cw)
        angle = float(se3.so3_log(diff[:3, :3]).norm())
        median_depth = 1.0 / float(self.store.invdepth[k].median().clamp_min(1e-6))
        return angle < np.radians(2.0) and float(diff[:3, 3].norm()) < 0.05 * median_depth

    def _on_failure(self, f: Frame, g: np.ndarray, prev: FrameRecord, confident: float, feats: Features | None,
                    measured: torch.Tensor | None) -> None:
        self._failures += 1
        msg = f"frame {f.index}: tracking lost ({confident:.0%} confident correspondences)"
        if self._failures == 1:
            log.warning(msg)
            self.events.append(msg)
        if measured is not None and float(g.std()) > _MIN_TEXTURE_STD and self._plausible(measured, len(self.store) - 1):
            # The flow failed but sparse matches place the frame: a keyframe there keeps the map connected (its
            # edges start from that pose) where waiting would leave the last keyframe out of reach.
            self.events.append(f"frame {f.index}: placed by feature matches; new keyframe in the same segment")
            log.warning(self.events[-1])
            self._failures = 0
            self._add_keyframe(f, g, measured)
            return
        if self._failures >= self.config.tracking.reinit_after and float(g.std()) > _MIN_TEXTURE_STD:
            found = self._relocalise(g, feats)
            if found is not None:
                self._relocalised(f, g, *found)
                return
            ref = self.store.index_of(prev.ref_uid)
            pose = prev.rel @ self.store.poses[ref]
            self.frontend.segment_start = len(self.store)
            self.segment_starts.append(len(self.store))
            self.events.append(f"frame {f.index}: re-initialised a new segment at keyframe {len(self.store)}")
            log.warning(self.events[-1])
            self._failures = 0
            self._add_keyframe(f, g, pose)
            return
        self.records.append(FrameRecord(f.index, f.timestamp, prev.ref_uid, prev.rel.clone(), False))

    def _relocalised(self, f: Frame, g: np.ndarray, pose: torch.Tensor, matched: int) -> None:
        """The frame as a keyframe of the current segment at the pose feature PnP gave against keyframe
        ``matched``: still connected to the map."""
        self.events.append(f"frame {f.index}: relocalised against keyframe {matched} "
                           f"(frame {int(self.store.frame_index[matched])})")
        log.warning(self.events[-1])
        self._failures = 0
        if matched < self._newest_first() and self.prior.metric:
            # Back at a place mapped long before: the newest keyframes do not see it, so the window restarts here
            # instead of tying the keyframe to them with edges across unrelated views. The global BA's proximity
            # edges connect it to the keyframes it matched.
            self.frontend.segment_start = len(self.store)
        self._add_keyframe(f, g, pose)

    def _add_keyframe(self, f: Frame, g: np.ndarray, pose_cw: torch.Tensor) -> None:
        cfg = self.config
        prior = self.priors(f, pose_cw, first=len(self.store) == self.frontend.segment_start)
        h, w = self.store.h, self.store.w
        fill = float(self.store.invdepth[-1].median()) if len(self.store) else 1.0
        invdepth = torch.full((h, w), fill, dtype=torch.float32, device=self.device)
        prior_inv = prior_conf = prior_full = None
        if (prior is None and cfg.tracking.triangulate and len(self.store) > self.frontend.segment_start
                and isinstance(self.corr, ClassicalCorrespondence)):
            invdepth = self._triangulated_depth(g, pose_cw, fill)
        if prior is not None:
            depth, conf = prior
            inv_np, conf_np = prior_to_grid(depth, conf, cfg.stride, cfg.prior_grid_edge)
            prior_inv = torch.from_numpy(inv_np).to(self.device)
            prior_conf = torch.from_numpy(conf_np).to(self.device)
            has = prior_conf > 0
            if bool(has.any()):
                invdepth = torch.where(has, prior_inv, torch.full_like(prior_inv, float(prior_inv[has].median())))
            prior_full = depth.astype(np.float16)
            rgbd = self.config.rgbd_refine
            if self._rgbd is None and rgbd.enabled and self.prior.name in rgbd.priors and self._camera is not None:
                self._rgbd = RgbdAligner(self._camera, rgbd, depth)
        k = self.store.append(f.index, f.timestamp, pose_cw, invdepth, prior_inv, prior_conf, g, f.rgb, prior_full)
        self.records.append(FrameRecord(f.index, f.timestamp, int(self.store.uid[k]),
                                        torch.eye(4, dtype=torch.float64, device=self.device), True))
        if self.tracks is not None:
            self.tracks.add_keyframe(self.store, k, self.frontend.segment_start)
        if k == self.frontend.segment_start:
            return
        self.frontend.step()
        redundant = self.frontend.redundant()
        if redundant is not None:
            reanchor(self.records, self.store, redundant, redundant - 1)
            if self.pnp is not None:
                self.pnp.forget(int(self.store.uid[redundant]))
            self.frontend.remove(redundant)
        self._since_backend += 1
        if cfg.backend.enabled and self._since_backend >= cfg.backend.every:
            self.backend.run(self.segment_starts, cfg.backend.iters, window=100, loops_only_after=cfg.frontend.window)
            self._since_backend = 0

    def _refine_rgbd(self, progress: bool) -> None:
        """Direct RGB-D odometry + pose graph on the keyframes when the prior is measured depth."""
        depths = self.store.prior_depth_full
        if self._rgbd is None or len(self.store) < 2 or any(d is None for d in depths):
            return
        log.info("RGB-D refinement of %d keyframes", len(self.store))
        gaps, b = self.config.rgbd_refine.gaps, self.config.backend
        loops = proximity_pairs(self.store, self.grid_intrinsics, 0, max(gaps), b.proximity_thresh, b.nms,
                                b.max_edges_per_keyframe)
        pairs = odometry_pairs(segment_ids(self.segment_starts, len(self.store)), gaps, loops)
        present = [d for d in depths if d is not None]  # all of them (checked above)
        poses, stats = refine_keyframe_poses(self._rgbd, self.store.rgb, present, self.store.poses, pairs,
                                             self.segment_starts, progress=progress)
        self.store.poses[:] = poses
        self.rgbd_stats = stats
        log.info("RGB-D refinement: %d odometry edges kept, %d dropped", stats.edges, stats.dropped)

    # -- the end ----------------------------------------------------------------------------------------------
    def finish(self, progress: bool = False) -> Reconstruction:
        """Final global BA, a pose for every frame, and the reconstruction (``progress``: a bar over the RGB-D
        refinement, the one long step here)."""
        if self._camera is None:
            from metricslam.errors import InputError

            raise InputError("no frames were tracked; check that the sequence holds images")
        cfg = self.config
        self.priors.finish()
        if cfg.backend.enabled and len(self.store) > 1:
            self.backend.run(self.segment_starts, cfg.backend.final_iters)
        self._refine_rgbd(progress)
        poses_cw = fill_poses(self.records, self.store, self.grid_intrinsics, cfg.filler.iters, cfg.filler.chunk,
                              self._track_opts)
        store = self.store
        invd = store.invdepth.cpu().numpy()
        depths = np.where(invd > 0, 1.0 / np.maximum(invd, 1e-9), 0.0).astype(np.float32)
        priors = store.prior_depth_full
        kf_priors = (np.stack([p.astype(np.float32) for p in priors if p is not None])
                     if all(p is not None for p in priors) else None)
        return Reconstruction(
            timestamps=np.array([r.timestamp for r in self.records], dtype=np.float64),
            poses_wc=se3.inverse(poses_cw).cpu().numpy(),
            frame_indices=np.array([r.index for r in self.records], dtype=np.int64),
            tracked=np.array([r.tracked for r in self.records], dtype=bool),
            kf_frame_indices=store.frame_index.cpu().numpy(),
            kf_timestamps=store.timestamp.cpu().numpy(),
            kf_poses_wc=se3.inverse(store.poses).cpu().numpy(),
            kf_depths=depths,
            kf_confidences=store.conf.cpu().numpy(),
            kf_images=np.stack(store.rgb),
            intrinsics=self._camera,
            grid_intrinsics=self.grid_camera,
            # Metric only when a metric prior's depth reached a keyframe (a sensor prior on a sequence without depth
            # images, or a prior that gave nothing, leaves the scale arbitrary).
            metric=bool(self.prior.metric) and bool((store.prior_conf > 0).any()),
            prior=self.prior.name,
            kf_prior_depths=kf_priors,
            events=list(self.events),
        )
