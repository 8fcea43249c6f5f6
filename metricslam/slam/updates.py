"""What ``Slam`` tells an observer (a live view, a logger) after each frame: plain data, no access to its state.

    slam = Slam(config, on_update=lambda update: print(update.frame.index, len(update.keyframe_uids)))
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from metricslam.geometry import se3
from metricslam.geometry.camera import Intrinsics
from metricslam.io.frame import Frame
from metricslam.slam.filler import FrameRecord
from metricslam.slam.video import KeyframeStore


@dataclass(frozen=True)
class KeyframeView:
    """A keyframe as it was when it joined the map."""

    uid: int  # stable id (keyframe indices shift when keyframes are removed)
    frame_index: int
    timestamp: float
    pose_wc: np.ndarray  # (4, 4) T_wc
    depth: np.ndarray  # (h, w) on the BA grid, 0 = none (metres with a metric prior)
    confidence: np.ndarray  # (h, w) in [0, 1]
    image: np.ndarray  # RGB uint8 at processing resolution


@dataclass(frozen=True)
class SlamUpdate:
    """The state after one input frame."""

    frame: Frame  # the frame as it came in
    pose_wc: np.ndarray  # (4, 4) its current T_wc
    keyframe_uids: tuple[int, ...]  # the keyframes in the map now
    new_keyframes: tuple[KeyframeView, ...]  # keyframes that joined since the previous update
    grid_camera: Intrinsics  # intrinsics of the keyframes' depth grid


UpdateCallback = Callable[[SlamUpdate], None]


class UpdateFeed:
    """Builds a ``SlamUpdate`` after each frame and hands it to the callback; each keyframe is sent once."""

    def __init__(self, callback: UpdateCallback):
        self.callback = callback
        self._sent: set[int] = set()

    def send(self, frame: Frame, record: FrameRecord, store: KeyframeStore, grid_camera: Intrinsics) -> None:
        uids = tuple(int(u) for u in store.uid.tolist())
        new = []
        for k, uid in enumerate(uids):
            if uid in self._sent:
                continue
            inv = store.invdepth[k].cpu().numpy()
            new.append(KeyframeView(
                uid, int(store.frame_index[k]), float(store.timestamp[k]), se3.inverse(store.poses[k]).cpu().numpy(),
                np.where(inv > 0, 1.0 / np.maximum(inv, 1e-9), 0.0), store.conf[k].cpu().numpy(), store.rgb[k],
            ))
        self._sent = set(uids)
        pose_wc = se3.inverse(record.pose_cw(store)).cpu().numpy()
        self.callback(SlamUpdate(frame, pose_wc, uids, tuple(new), grid_camera))
