"""Which keyframes run the depth prior, and what the others receive (PriorConfig.schedule, .lag).

'every': each keyframe runs the prior. 'coverage': a keyframe runs it only when no recent prior keyframe (one that
ran it) covers enough of its view: the recent prior keyframes' BA depth is reprojected into the new keyframe with
the current poses, and the best one must fill ``min_coverage`` of the BA grid; at most ``max_gap`` keyframes pass
between runs, and the first keyframe of every segment runs it. A keyframe that does not run the prior receives the
best source's prior transferred by reprojection (metricslam.slam.prior_transfer) with its confidence times
``transfer_weight``. The BA links the keyframes, so the scale stays observable between prior keyframes.

With ``lag`` > 0 the prior runs on a background worker and its result enters the BA when the ``lag``-th keyframe
after its own is added (or at the end), waiting there if it is not ready: the insertion point depends only on the
input, so a run is deterministic. Keyframes that chose a source whose prior is still pending receive their transfer
at that point too, with the poses of that moment. Until then a keyframe waiting for a prior holds the best known
prior transferred (an interim one, replaced on arrival), so tracking keeps a metric anchor. The first keyframe of a
segment waits for its prior: the map's scale starts there.
"""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from metricslam.depth.prior_protocol import DepthPrior
from metricslam.errors import MetricSlamError
from metricslam.geometry.camera import Intrinsics
from metricslam.io.frame import Frame
from metricslam.slam.config import PriorConfig
from metricslam.slam.preprocess import prior_to_grid
from metricslam.slam.prior_transfer import coverage, transfer_prior
from metricslam.slam.prior_worker import Prior, PriorWorker, prior_device
from metricslam.slam.video import KeyframeStore

SCHEDULES = ("auto", "every", "coverage")
# Priors that cost a network forward per call: scheduled and predicted in the background by default.
NETWORK_PRIORS = ("metric3d",)
DEFAULT_NETWORK_LAG = 2


def resolve_schedule(config: PriorConfig, prior_name: str, device: torch.device | None = None) -> tuple[str, int]:
    """('every' | 'coverage', lag) for ``config`` and the prior called ``prior_name`` whose network runs on
    ``device`` (None: the CPU)."""
    if config.schedule not in SCHEDULES:
        raise MetricSlamError(f"unknown prior.schedule '{config.schedule}'; choose one of {', '.join(SCHEDULES)}")
    if config.max_gap < 1 or config.candidates < 1 or not 0 <= config.min_coverage <= 1:
        raise MetricSlamError("prior.max_gap and prior.candidates must be >= 1 and prior.min_coverage in [0, 1]")
    network = prior_name in NETWORK_PRIORS
    mode = ("coverage" if network else "every") if config.schedule == "auto" else config.schedule
    # On a CPU the forward already keeps every core busy: running it beside tracking measured no faster (room,
    # vit_small: 1.03 frames/s in line, 0.94 with lag 2) and the late priors cost accuracy (hololens_000 7.3 ->
    # 8.4 cm), so it runs in line there; on an accelerator it overlaps tracking for free.
    on_accelerator = device is not None and device.type != "cpu"
    lag = (DEFAULT_NETWORK_LAG if network and on_accelerator else 0) if config.lag is None else int(config.lag)
    if lag < 0:
        raise MetricSlamError(f"prior.lag must be >= 0 (0 = no background worker), got {lag}")
    return mode, lag


@dataclass
class _Pending:
    frame_index: int  # the keyframe whose prior is being predicted
    result: Future
    due: int  # keyframe count at which it enters the BA
    dependents: list[int] = field(default_factory=list)  # keyframes (frame indices) waiting for its transfer


class ScheduledPriors:
    """``priors(frame, pose_cw, first)`` -> the prior of a new keyframe (None: none now, maybe later).

    store: the keyframes, whose poses, BA depths and (late) priors it reads and writes; camera: the processing
    resolution; grid_intrinsics: [fx, fy, cx, cy] of the BA grid; stride and grid_edge as Slam converts priors.
    """

    def __init__(self, prior: DepthPrior, config: PriorConfig, store: KeyframeStore, camera: Intrinsics,
                 grid_intrinsics: torch.Tensor, stride: int, grid_edge: float):
        self.prior = prior
        self.config = config
        self.mode, self.lag = resolve_schedule(config, prior.name, prior_device(prior))
        self.store = store
        self.camera_params = list(camera.params)
        self.grid_intrinsics = grid_intrinsics
        self.stride, self.grid_edge = stride, grid_edge
        self.worker = PriorWorker(prior) if self.lag > 0 else None
        self.runs = 0  # keyframes that ran the prior
        self.transfers = 0  # keyframes that received a transferred prior
        self._count = 0  # keyframes seen
        self._since = 0  # keyframes since the last run
        self._recent: list[int] = []  # frame indices of recent prior keyframes (this segment), oldest first
        self._priors: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # their full-size priors, once known
        self._pending: list[_Pending] = []

    def __call__(self, frame: Frame, pose_cw: torch.Tensor, first: bool) -> Prior:
        self._count += 1
        self._insert_due(self._count)
        if first:
            self._recent.clear()
        if self.mode == "every" or first or self._since + 1 >= self.config.max_gap:
            return self._run(frame, pose_cw, wait=first)
        source = self._best_source(pose_cw, self._recent, self.config.min_coverage)
        if source is None:
            return self._run(frame, pose_cw, wait=False)
        self._since += 1
        if not self.config.transfer:
            return None
        if source in self._priors:
            self.transfers += 1
            return self._transfer(source, pose_cw)
        next(p for p in self._pending if p.frame_index == source).dependents.append(frame.index)
        return self._interim(pose_cw)

    # -- running the prior ----------------------------------------------------------------------------------
    def _run(self, frame: Frame, pose_cw: torch.Tensor, wait: bool) -> Prior:
        self._since = 0
        self.runs += 1
        self._recent = [*self._recent, frame.index][-self.config.candidates:]
        if self.worker is None:
            out = self.prior(frame)
        elif wait:
            out = self.worker.submit(frame).result()
        else:
            self._pending.append(_Pending(frame.index, self.worker.submit(frame), self._count + self.lag))
            return self._interim(pose_cw)
        if out is not None and self.mode == "coverage":  # kept only as a transfer source
            self._priors[frame.index] = out
        return out

    def _insert_due(self, count: int | None) -> None:
        """Insert every pending prior due by keyframe ``count`` (all of them for None), oldest first."""
        while self._pending and (count is None or self._pending[0].due <= count):
            job = self._pending.pop(0)
            out = job.result.result()
            k = self._index(job.frame_index)
            if out is None or k is None:
                continue
            self._priors[job.frame_index] = out
            self._write(k, out)
            for frame_index in job.dependents:
                kd = self._index(frame_index)
                if kd is not None:
                    self.transfers += 1
                    self._write(kd, self._transfer(job.frame_index, self.store.poses[kd]))
        self._priors = {i: p for i, p in self._priors.items() if i in self._recent}

    def finish(self) -> None:
        """Wait for and insert every pending prior (before the final BA) and stop the worker."""
        self._insert_due(None)
        if self.worker is not None:
            self.worker.close()

    # -- geometry --------------------------------------------------------------------------------------------
    def _index(self, frame_index: int) -> int | None:
        """The keyframe's position in the store, None if it has been removed."""
        hits = (self.store.frame_index == frame_index).nonzero()
        return int(hits[0, 0]) if len(hits) else None

    def _interim(self, pose_cw: torch.Tensor) -> Prior:
        """Until a keyframe's pending prior arrives: the best known prior transferred (None if none covers any
        of the view, or transfers are off). Tracking and the window BA keep a metric anchor meanwhile."""
        if not self.config.transfer:
            return None
        source = self._best_source(pose_cw, [i for i in self._recent if i in self._priors], 1e-6)
        return None if source is None else self._transfer(source, pose_cw)

    def _best_source(self, pose_cw: torch.Tensor, candidates: list[int], min_coverage: float) -> int | None:
        """The candidate prior keyframe covering most of the view from ``pose_cw``, if it covers at least
        ``min_coverage``."""
        best, best_cover = None, 0.0
        for frame_index in reversed(candidates):  # newest first: it wins ties
            k = self._index(frame_index)
            if k is None:
                continue
            cover = coverage(self.store.poses[k], pose_cw, self.store.invdepth[k], self.grid_intrinsics)
            if cover >= min_coverage and (best is None or cover > best_cover):
                best, best_cover = frame_index, cover
        return best

    def _transfer(self, source: int, pose_cw: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        depth, conf = self._priors[source]
        k = self._index(source)
        return transfer_prior(depth, conf, self.store.poses[k], pose_cw, self.camera_params,
                              self.config.transfer_weight)

    def _write(self, k: int, prior: tuple[np.ndarray, np.ndarray]) -> None:
        """Give keyframe k (already in the BA) its prior."""
        depth, conf = prior
        inv, grid_conf = prior_to_grid(depth, conf, self.stride, self.grid_edge)
        self.store.prior_invdepth[k] = torch.from_numpy(inv).to(self.store.device)
        self.store.prior_conf[k] = torch.from_numpy(grid_conf).to(self.store.device)
        self.store.prior_depth_full[k] = depth.astype(np.float16)
