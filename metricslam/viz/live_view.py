"""The live view of a run: what ``metricslam run --viz`` streams to Rerun while tracking."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from metricslam.errors import MetricSlamError
from metricslam.geometry import se3
from metricslam.io.frame import Frame
from metricslam.viz.rerun_viewer import RerunLogger

if TYPE_CHECKING:
    import open3d as o3d

    from metricslam.slam.reconstruction import Reconstruction
    from metricslam.slam.system import Slam


class LiveView:
    """Streams a run to Rerun (metricslam.viz.rerun_viewer.RerunLogger): after every frame its pose and image,
    keyframes as they are made or dropped; at the end the final trajectory, keyframes and mesh."""

    def __init__(self, target: str):
        self.logger = RerunLogger(target)
        self.shown: set[int] = set()

    def update(self, slam: Slam, frame: Frame) -> None:
        store, record = slam.store, slam.records[-1]
        pose_cw = record.pose_cw(store)
        self.logger.log_frame_pose(frame.index, frame.timestamp, se3.inverse(pose_cw).cpu().numpy(),
                                   image=frame.rgb, intrinsics=frame.intrinsics)
        uids = [int(u) for u in store.uid.tolist()]
        for uid in self.shown.difference(uids):
            self.logger.remove_keyframe(uid)
        for k, uid in enumerate(uids):
            if uid in self.shown:
                continue
            inv = store.invdepth[k].cpu().numpy()
            depth = np.where(inv > 0, 1.0 / np.maximum(inv, 1e-9), 0.0)
            self.logger.log_keyframe(uid, int(store.frame_index[k]), se3.inverse(store.poses[k]).cpu().numpy(), depth,
                                     slam.grid_camera, image=store.rgb[k], confidence=store.conf[k].cpu().numpy(),
                                     timestamp=float(store.timestamp[k]))
        self.shown = set(uids)

    def finish(self, rec: Reconstruction, mesh: o3d.geometry.TriangleMesh | None = None) -> None:
        self.logger.log_reconstruction(rec)
        if mesh is not None:
            self.logger.log_mesh(mesh)

    def close(self) -> None:
        self.logger.close()


@contextmanager
def open_viewer(viz: str | None) -> Iterator[LiveView | None]:
    """The live view for ``viz`` ('rerun' or a .rrd path; None: no viewer), closed on exit."""
    if viz is None:
        yield None
        return
    if viz != "rerun" and not viz.endswith(".rrd"):
        raise MetricSlamError(f"unknown viewer '{viz}'; use --viz rerun or --viz FILE.rrd")
    view = LiveView("spawn" if viz == "rerun" else viz)
    try:
        yield view
    finally:
        view.close()
