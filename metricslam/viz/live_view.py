"""The live view of a run: what ``metricslam run --viz`` streams to Rerun while tracking."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from metricslam.errors import MetricSlamError
from metricslam.viz.rerun_viewer import RerunLogger

if TYPE_CHECKING:
    import open3d as o3d

    from metricslam.slam.reconstruction import Reconstruction
    from metricslam.slam.updates import SlamUpdate


class LiveView:
    """Streams a run to Rerun (metricslam.viz.rerun_viewer.RerunLogger): after every frame its pose and image,
    keyframes as they are made or dropped (``update``, the callback ``Slam(on_update=...)`` calls); at the end the
    final trajectory, keyframes and mesh."""

    def __init__(self, target: str):
        self.logger = RerunLogger(target)
        self.shown: set[int] = set()

    def update(self, update: SlamUpdate) -> None:
        frame = update.frame
        self.logger.log_frame_pose(frame.index, frame.timestamp, update.pose_wc, image=frame.rgb,
                                   intrinsics=frame.intrinsics)
        for uid in self.shown.difference(update.keyframe_uids):
            self.logger.remove_keyframe(uid)
        for kf in update.new_keyframes:
            self.logger.log_keyframe(kf.uid, kf.frame_index, kf.pose_wc, kf.depth, update.grid_camera, image=kf.image,
                                     confidence=kf.confidence, timestamp=kf.timestamp)
        self.shown = set(update.keyframe_uids)

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
