"""The result of a SLAM run: every frame's pose, the keyframes' poses, depths and images; save and load."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metricslam.errors import InputError
from metricslam.geometry.camera import Intrinsics
from metricslam.io.atomic import atomic_path
from metricslam.io.run_dir import KEYFRAMES_FILE, TRAJECTORY_KITTI_FILE, TRAJECTORY_TUM_FILE
from metricslam.io.trajectory import Trajectory, write_kitti, write_tum


@dataclass
class Reconstruction:
    """All poses are camera-to-world (T_wc), float64; depths in metres (0 = invalid) when ``metric``.

    timestamps / poses_wc / frame_indices / tracked: one entry per input frame.
    kf_*: one entry per keyframe; kf_depths and kf_confidences are on the BA grid (``grid_intrinsics``),
    kf_images (and kf_prior_depths when kept) at the processing resolution (``intrinsics``).
    """

    timestamps: np.ndarray
    poses_wc: np.ndarray
    frame_indices: np.ndarray
    tracked: np.ndarray
    kf_frame_indices: np.ndarray
    kf_timestamps: np.ndarray
    kf_poses_wc: np.ndarray
    kf_depths: np.ndarray
    kf_confidences: np.ndarray
    kf_images: np.ndarray
    intrinsics: Intrinsics
    grid_intrinsics: Intrinsics
    metric: bool
    prior: str
    kf_prior_depths: np.ndarray | None = None
    events: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.timestamps)

    @property
    def num_keyframes(self) -> int:
        return len(self.kf_frame_indices)

    def trajectory(self) -> Trajectory:
        return Trajectory(self.poses_wc.copy(), self.timestamps.copy())

    def keyframe_trajectory(self) -> Trajectory:
        return Trajectory(self.kf_poses_wc.copy(), self.kf_timestamps.copy())

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """trajectory_tum.txt and trajectory_kitti.txt (every frame), keyframes.npz (everything else); returns
        the files written."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_tum(out / TRAJECTORY_TUM_FILE, self.trajectory())
        write_kitti(out / TRAJECTORY_KITTI_FILE, self.trajectory())
        arrays: dict[str, Any] = {
            "timestamps": self.timestamps,
            "poses_wc": self.poses_wc,
            "frame_indices": self.frame_indices,
            "tracked": self.tracked,
            "kf_frame_indices": self.kf_frame_indices,
            "kf_timestamps": self.kf_timestamps,
            "kf_poses_wc": self.kf_poses_wc,
            "kf_depths": self.kf_depths.astype(np.float32),
            "kf_confidences": self.kf_confidences.astype(np.float32),
            "kf_images": self.kf_images,
            "intrinsics": _camera_array(self.intrinsics),
            "grid_intrinsics": _camera_array(self.grid_intrinsics),
            "meta": np.array(json.dumps({"metric": self.metric, "prior": self.prior, "events": self.events})),
        }
        if self.kf_prior_depths is not None:
            arrays["kf_prior_depths"] = self.kf_prior_depths.astype(np.float16)
        with atomic_path(out / KEYFRAMES_FILE) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        return [out / TRAJECTORY_TUM_FILE, out / TRAJECTORY_KITTI_FILE, out / KEYFRAMES_FILE]

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> Reconstruction:
        path = Path(run_dir) / KEYFRAMES_FILE
        if not path.is_file():
            raise InputError(f"{path}: not found; pass the output folder of 'metricslam run'")
        try:
            z = np.load(path)
            meta = json.loads(str(z["meta"]))
            prior = z["kf_prior_depths"].astype(np.float32) if "kf_prior_depths" in z else None
            return cls(
                timestamps=z["timestamps"], poses_wc=z["poses_wc"], frame_indices=z["frame_indices"],
                tracked=z["tracked"], kf_frame_indices=z["kf_frame_indices"], kf_timestamps=z["kf_timestamps"],
                kf_poses_wc=z["kf_poses_wc"], kf_depths=z["kf_depths"], kf_confidences=z["kf_confidences"],
                kf_images=z["kf_images"], intrinsics=_camera_from(z["intrinsics"]),
                grid_intrinsics=_camera_from(z["grid_intrinsics"]), metric=bool(meta["metric"]),
                prior=str(meta["prior"]), kf_prior_depths=prior, events=list(meta.get("events", [])),
            )
        except (KeyError, ValueError, OSError) as exc:
            raise InputError(f"{path}: unreadable or incomplete ({exc}); re-run 'metricslam run' to write it again") from None


def _camera_array(cam: Intrinsics) -> np.ndarray:
    return np.array([cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height], dtype=np.float64)


def _camera_from(a: np.ndarray) -> Intrinsics:
    return Intrinsics(float(a[0]), float(a[1]), float(a[2]), float(a[3]), int(a[4]), int(a[5]))
