"""Synthetic worlds as a Sequence (rendered lazily, with ground-truth depth and poses), and writing any
Sequence out in the generic folder layout."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from metricslam.errors import InputError
from metricslam.geometry.camera import Intrinsics
from metricslam.io.atomic import write_text_atomic
from metricslam.io.frame import Frame
from metricslam.io.images import write_depth_png, write_rgb
from metricslam.io.sequences.base import Sequence
from metricslam.io.synthetic.render import render
from metricslam.io.synthetic.worlds import WORLDS, make_world
from metricslam.io.trajectory import Trajectory, write_matrix

DEFAULT_HFOV_DEG = 65.0


def default_focal(width: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> float:
    """Focal length (px) giving a horizontal field of view of ``hfov_deg`` over ``width`` pixels."""
    return 0.5 * width / np.tan(np.radians(hfov_deg) / 2)


class SyntheticSequence(Sequence):
    """Frames rendered on demand from a procedural world ('room' at 30 fps, 'street' at 10 fps).

    Every frame carries ground-truth depth (metres, z-depth, 0 = sky/out of range) and its T_wc pose.
    The pinhole camera has square pixels, the principal point at the image centre and, unless ``fx`` is
    given, a 65 degree horizontal field of view. Deterministic from ``seed``; ``speed`` scales the motion.
    """

    def __init__(self, scene: str = "room", frames: int = 100, width: int = 640, height: int = 480,
                 fx: float | None = None, seed: int = 0, speed: float = 1.0):
        if scene not in WORLDS:
            raise InputError(f"unknown synthetic scene '{scene}'; use one of {', '.join(WORLDS)}")
        if frames < 1 or width < 8 or height < 8:
            raise InputError(f"synthetic sequence needs frames >= 1 and an image of at least 8x8, "
                             f"got frames={frames}, {width}x{height}")
        if fx is not None and not fx > 0:
            raise InputError(f"focal length must be positive, got fx={fx}")
        if not speed > 0 or seed < 0:
            raise InputError(f"speed must be positive and seed non-negative, got speed={speed}, seed={seed}")
        self.world, self._poses = make_world(scene, frames, speed, seed)
        f = float(fx) if fx is not None else default_focal(width)
        self._intrinsics = Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2, int(width), int(height))
        self._timestamps = np.arange(frames) / self.world.fps
        self.name = f"synthetic_{scene}_seed{seed}"
        self.depth_scale = self.world.depth_scale

    def __len__(self) -> int:
        return len(self._poses)

    def __getitem__(self, i: int) -> Frame:
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range for {len(self)} frames")
        i %= len(self)
        rgb, depth = render(self.world, self._poses[i], self._intrinsics)
        return Frame(index=i, timestamp=float(self._timestamps[i]), rgb=rgb, intrinsics=self._intrinsics,
                     depth=depth, pose_wc=self._poses[i].copy(), name=f"{i:05d}")

    @property
    def intrinsics(self) -> Intrinsics:
        return self._intrinsics

    @property
    def timestamps(self) -> np.ndarray:
        return self._timestamps.copy()

    @property
    def has_depth(self) -> bool:
        return True

    @property
    def has_gt(self) -> bool:
        return True

    def gt_trajectory(self) -> Trajectory:
        return Trajectory(self._poses.copy(), self._timestamps.copy())


def write_sequence(seq: Sequence, out_dir: str | os.PathLike, depth_scale: float | None = None,
                   progress: bool = True) -> Path:
    """Write ``seq`` in the generic folder layout and return the folder.

    images/00000.png ..., depth/00000.png (uint16, value = metres * depth_scale; written when the sequence has
    depth), depth_scale.txt, K.txt (3x3), poses.txt (4x4 T_wc per line, when it has ground truth), times.txt.
    ``depth_scale`` defaults to the sequence's own (synthetic: 1000 room, 256 street) or 1000.
    """
    out = Path(out_dir)
    scale = float(depth_scale or getattr(seq, "depth_scale", None) or 1000.0)
    poses = []
    for i, frame in enumerate(tqdm(seq, total=len(seq), desc=f"writing {out.name}", disable=not progress)):
        write_rgb(out / "images" / f"{i:05d}.png", frame.rgb)
        if frame.depth is not None:
            write_depth_png(out / "depth" / f"{i:05d}.png", frame.depth, scale)
        poses.append(frame.pose_wc)
    K = seq.intrinsics.K
    write_text_atomic(out / "K.txt", "\n".join(" ".join(f"{v:.10g}" for v in row) for row in K) + "\n")
    write_text_atomic(out / "times.txt", "".join(f"{t:.9f}\n" for t in seq.timestamps))
    if seq.has_depth:
        write_text_atomic(out / "depth_scale.txt", f"{scale:g}\n")
    if seq.has_gt and all(p is not None for p in poses):
        write_matrix(out / "poses.txt", Trajectory(np.stack(poses), np.asarray(seq.timestamps)))
    return out
