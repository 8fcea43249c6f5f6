"""Live view of a run in Rerun (``metricslam run --viz rerun``): camera poses, keyframe point clouds, images.

    viewer = RerunLogger("spawn")            # or RerunLogger("run_dir/live.rrd") to save a recording
    viewer.log_frame_pose(frame_index, timestamp, pose_wc, image=rgb, intrinsics=camera)  # every frame
    viewer.log_keyframe(uid, frame_index, pose_wc, depth, depth_intrinsics, image=rgb)     # new / updated keyframe
    viewer.remove_keyframe(uid)              # when SLAM drops a keyframe
    viewer.log_reconstruction(rec)           # final poses and depths after the global BA
    viewer.log_mesh(mesh); viewer.close()

Entities (world frame = the reconstruction's): world/camera (Transform3D) with world/camera/image (Pinhole +
Image), world/trajectory (LineStrips3D of all frame positions so far), world/keyframes/kf_<uid>/points
(Points3D), world/mesh (Mesh3D). Timelines: 'frame' (sequence) and 'time' (seconds). rerun-sdk is an optional
dependency (``pip install metricslam[viz]``), imported only when a logger is made.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import open3d as o3d

from metricslam.errors import MetricSlamError
from metricslam.geometry.camera import Intrinsics
from metricslam.slam.reconstruction import Reconstruction

CAMERA = "world/camera"
TRAJECTORY = "world/trajectory"
MESH = "world/mesh"
KEYFRAMES = "world/keyframes"


def keyframe_entity(uid: int) -> str:
    return f"{KEYFRAMES}/kf_{int(uid):05d}"


def _rerun() -> ModuleType:
    try:
        import rerun
    except ImportError:
        raise MetricSlamError("the live viewer needs rerun-sdk: pip install 'metricslam[viz]' (or drop --viz rerun)") from None
    return rerun


def depth_points(depth: np.ndarray, intrinsics: Intrinsics, pose_wc: np.ndarray, image: np.ndarray | None = None,
                 confidence: np.ndarray | None = None, min_confidence: float = 0.0, max_points: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """World points (N, 3) of a depth map and their colours (N, 3) uint8 from ``image`` (resized to the depth)."""
    h, w = depth.shape
    if (w, h) != (intrinsics.width, intrinsics.height):
        raise ValueError(f"depth is {w}x{h} but its intrinsics are for {intrinsics.width}x{intrinsics.height}")
    valid = depth > 0
    if confidence is not None:
        valid &= confidence >= min_confidence
    v, u = np.nonzero(valid)
    if max_points is not None and len(v) > max_points:
        keep = np.linspace(0, len(v) - 1, max_points).astype(np.int64)
        v, u = v[keep], u[keep]
    z = depth[v, u].astype(np.float64)
    cam = np.stack([(u - intrinsics.cx) / intrinsics.fx * z, (v - intrinsics.cy) / intrinsics.fy * z, z], axis=1)
    points = cam @ pose_wc[:3, :3].T + pose_wc[:3, 3]
    colours = None
    if image is not None:
        small = image if image.shape[:2] == (h, w) else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        colours = small[v, u]
    return points.astype(np.float32), colours


class RerunLogger:
    """Streams a run to a spawned Rerun viewer (``target='spawn'``) or into an .rrd file (``target`` a path)."""

    def __init__(self, target: str | os.PathLike = "spawn", app_id: str = "metricslam",
                 max_points_per_keyframe: int = 20000, min_confidence: float = 0.05):
        rr = _rerun()
        self._rr = rr
        self.max_points = max_points_per_keyframe
        self.min_confidence = min_confidence
        self._positions: list[np.ndarray] = []
        self.stream = rr.RecordingStream(app_id, recording_id=os.urandom(8).hex())
        if str(target) == "spawn":
            self.path = None
            self.stream.spawn()
        else:
            self.path = Path(target)
            if self.path.suffix != ".rrd":
                raise MetricSlamError(f"{self.path}: a Rerun recording must end in .rrd (or use 'spawn')")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.stream.save(self.path)
        self.stream.log("world", rr.ViewCoordinates.RIGHT_HAND_Y_DOWN, static=True)

    def _time(self, frame_index: int, timestamp: float | None) -> None:
        self.stream.set_time("frame", sequence=int(frame_index))
        if timestamp is not None:
            self.stream.set_time("time", duration=float(timestamp))

    def _transform(self, pose_wc: np.ndarray) -> Any:
        return self._rr.Transform3D(translation=pose_wc[:3, 3], mat3x3=pose_wc[:3, :3])

    def log_frame_pose(self, frame_index: int, timestamp: float | None, pose_wc: np.ndarray,
                       image: np.ndarray | None = None, intrinsics: Intrinsics | None = None) -> None:
        """The current camera (pose, and its image when given with the image's intrinsics) and the path so far."""
        rr = self._rr
        pose_wc = np.asarray(pose_wc, np.float64)
        if not np.isfinite(pose_wc).all():
            return
        self._time(frame_index, timestamp)
        self.stream.log(CAMERA, self._transform(pose_wc))
        self._positions.append(pose_wc[:3, 3].copy())
        self.stream.log(TRAJECTORY, rr.LineStrips3D([np.stack(self._positions)], colors=[[230, 60, 40]]))
        if image is not None and intrinsics is not None:
            self.stream.log(f"{CAMERA}/image", rr.Pinhole(image_from_camera=intrinsics.K,
                                                          resolution=[intrinsics.width, intrinsics.height]))
            self.stream.log(f"{CAMERA}/image", rr.Image(image))

    def log_keyframe(self, uid: int, frame_index: int, pose_wc: np.ndarray, depth: np.ndarray,
                     intrinsics: Intrinsics, image: np.ndarray | None = None, confidence: np.ndarray | None = None,
                     timestamp: float | None = None) -> int:
        """(Re)draw keyframe ``uid``'s points from its depth (any resolution, with matching ``intrinsics``) and
        pose; logging the same uid again replaces them (e.g. after BA). Returns the number of points logged."""
        self._time(frame_index, timestamp)
        points, colours = depth_points(np.asarray(depth, np.float32), intrinsics, np.asarray(pose_wc, np.float64),
                                       image, confidence, self.min_confidence, self.max_points)
        self.stream.log(f"{keyframe_entity(uid)}/points", self._rr.Points3D(points, colors=colours))
        return len(points)

    def remove_keyframe(self, uid: int) -> None:
        self.stream.log(keyframe_entity(uid), self._rr.Clear(recursive=True))

    def log_reconstruction(self, rec: Reconstruction) -> None:
        """The final state: every keyframe with its final pose and BA depth, and the final trajectory. The live
        keyframes are cleared first: the final keyframes are numbered 0..K-1, not by SLAM's internal uids."""
        last = int(rec.frame_indices[-1]) if rec.num_frames else 0
        self._time(last, float(rec.timestamps[-1]) if rec.num_frames else None)
        self._positions = [p[:3, 3].copy() for p in rec.poses_wc if np.isfinite(p).all()]
        if self._positions:
            self.stream.log(TRAJECTORY, self._rr.LineStrips3D([np.stack(self._positions)], colors=[[230, 60, 40]]))
        self.stream.log(KEYFRAMES, self._rr.Clear(recursive=True))
        for k in range(rec.num_keyframes):
            if not np.isfinite(rec.kf_poses_wc[k]).all():
                continue
            points, colours = depth_points(rec.kf_depths[k], rec.grid_intrinsics, rec.kf_poses_wc[k],
                                           rec.kf_images[k], rec.kf_confidences[k], self.min_confidence,
                                           self.max_points)
            self.stream.log(f"{keyframe_entity(k)}/points", self._rr.Points3D(points, colors=colours))

    def log_mesh(self, mesh: o3d.geometry.TriangleMesh) -> None:
        colours = (np.asarray(mesh.vertex_colors) * 255 + 0.5).astype(np.uint8) if mesh.has_vertex_colors() else None
        normals = np.asarray(mesh.vertex_normals) if mesh.has_vertex_normals() else None
        self.stream.log(MESH, self._rr.Mesh3D(vertex_positions=np.asarray(mesh.vertices),
                                              triangle_indices=np.asarray(mesh.triangles),
                                              vertex_normals=normals, vertex_colors=colours))

    def close(self) -> None:
        """Flush and finish the recording (the .rrd file is complete after this)."""
        self.stream.flush()
        self.stream.disconnect()

    def __enter__(self) -> RerunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
