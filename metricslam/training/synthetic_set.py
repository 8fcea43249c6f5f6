"""A multi-camera training set rendered from the synthetic worlds, written as Metric3D annotation files.

Each camera (a focal length from about 300 to 1500 px on one of several small sensors) looks at its own instance
of each scene type: indoors, across a furnished room from random spots near its walls (floor, furniture and far
walls in view); outdoors, forward along a street from a driving trajectory. One data set per scene type is
written, so the trainer can balance indoor and outdoor:

    OUT/room/annotation.json, OUT/room/{rgb,depth,normal}/cam03_0002.png, ...   (same for street)

Train and held-out splits use disjoint focal lengths and world seeds: the held-out cameras test metric depth on
focal lengths never seen in training. Images are small (at most 224 px wide) so that CPU training is quick.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from metricslam.errors import InputError
from metricslam.geometry.camera import Intrinsics
from metricslam.io.atomic import atomic_path, write_text_atomic
from metricslam.io.images import write_depth_png, write_rgb
from metricslam.training.normals import depth_to_normals

# (width, height): 4:3, 16:9, square, and a wide driving-camera crop.
SENSORS: tuple[tuple[int, int], ...] = ((160, 120), (192, 108), (144, 144), (224, 80))
TRAIN_FOCALS: tuple[float, ...] = (300, 360, 430, 520, 620, 750, 900, 1080, 1250, 1500)
HELD_OUT_FOCALS: tuple[float, ...] = (330, 470, 680, 980, 1370)
# Street frames about 4 m apart (1 m per frame at speed 1, see io.synthetic.street).
_STREET_STEP_SPEED = 4.0
# Indoor viewpoints (room of 6 x 5 x 3 m, see io.synthetic.room): a hand-held rig at chest height, tilted down
# so that the floor is in view (as a car-mounted camera outdoors, a consistent height and tilt), from spots inside
# this box, looking at a point around the room centre.
_ROOM_EYE_BOX = ((0.7, 5.3), (0.6, 4.4), (1.4, 1.6))
_ROOM_CENTRE, _ROOM_TARGET_SPREAD = np.array([3.0, 2.5]), np.array([1.2, 0.9])
_ROOM_PITCH = (-0.3, -0.2)


@dataclass
class SyntheticSetConfig:
    split: Literal["train", "held_out"] = "train"
    scenes: tuple[str, ...] = ("room", "street")
    focals: tuple[float, ...] | None = None  # None: the split's default list
    frames_per_camera: int = 8
    seed: int = 0
    max_depth: float = 80.0  # metres; farther ground truth is marked invalid (a LiDAR-like range)
    normals: bool = True


@dataclass(frozen=True)
class SyntheticCamera:
    width: int
    height: int
    focal: float


def cameras_for(cfg: SyntheticSetConfig) -> list[SyntheticCamera]:
    """The split's cameras: its focal lengths, assigned to the sensors in turn."""
    focals = cfg.focals if cfg.focals is not None else (TRAIN_FOCALS if cfg.split == "train" else HELD_OUT_FOCALS)
    offset = 0 if cfg.split == "train" else 1  # held-out cameras pair focal lengths with other sensors
    return [SyntheticCamera(*SENSORS[(k + offset) % len(SENSORS)], float(f)) for k, f in enumerate(focals)]


def _world_seed(cfg: SyntheticSetConfig, camera_index: int) -> int:
    return 10_000 * cfg.seed + 1_000 * (cfg.split != "train") + camera_index


def _room_poses(frames: int, seed: int) -> np.ndarray:
    """(frames, 4, 4) T_wc looking across the room from random eye points."""
    from metricslam.io.synthetic.poses import look_poses

    rng = np.random.default_rng([seed, 7])
    eye = np.stack([rng.uniform(lo, hi, frames) for lo, hi in _ROOM_EYE_BOX], axis=1)
    target = _ROOM_CENTRE + rng.uniform(-1, 1, (frames, 2)) * _ROOM_TARGET_SPREAD
    away = target - eye[:, :2]
    # Eyes that happen to be near the target look at the opposite side instead of at the floor at their feet.
    flip = np.linalg.norm(away, axis=1) < 1.0
    away[flip] = _ROOM_CENTRE - eye[flip, :2] + 1e-3
    yaw = np.arctan2(away[:, 1], away[:, 0])
    return look_poses(eye, yaw, rng.uniform(*_ROOM_PITCH, frames), rng.uniform(-0.03, 0.03, frames))


def _views(scene: str, camera: SyntheticCamera, frames: int, seed: int):
    """Yield (rgb, depth, intrinsics, depth PNG scale) of ``frames`` views of one world instance."""
    # Imported here: the renderer loads Open3D, which nothing else in training needs.
    from metricslam.io.synthetic import SyntheticSequence, make_world, render

    if scene == "room":
        world, _ = make_world("room", 1, seed=seed)
        w, h = camera.width, camera.height
        K = Intrinsics(camera.focal, camera.focal, (w - 1) / 2, (h - 1) / 2, w, h)  # as SyntheticSequence's
        for pose in _room_poses(frames, seed):
            rgb, depth = render(world, pose, K)
            yield rgb, depth, K, world.depth_scale
        return
    seq = SyntheticSequence(scene, frames=frames, width=camera.width, height=camera.height, fx=camera.focal,
                            seed=seed, speed=_STREET_STEP_SPEED)
    for frame in seq:
        yield frame.rgb, frame.depth, seq.intrinsics, seq.depth_scale


def _write_normals(path: Path, normal: np.ndarray) -> None:
    """16-bit PNG, R G B = x y z mapped from [-1, 1] to [0, 65535]; zero where there is no normal."""
    code = np.round((normal + 1.0) * 0.5 * 65535.0).astype(np.uint16)
    code[~np.any(normal != 0, axis=2)] = 0
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(code, cv2.COLOR_RGB2BGR)):
            raise InputError(f"{path}: could not write normals; check the folder is writable")


def write_synthetic_set(out_dir: str | os.PathLike, cfg: SyntheticSetConfig | None = None) -> list[Path]:
    """Render the split and write one annotation file per scene type; returns their paths."""
    from metricslam.io.synthetic import WORLDS

    cfg = cfg or SyntheticSetConfig()
    unknown = [s for s in cfg.scenes if s not in WORLDS]
    if unknown or not cfg.scenes or cfg.frames_per_camera < 1:
        raise InputError(f"synthetic set needs scenes from {', '.join(WORLDS)} and frames_per_camera >= 1, got "
                         f"scenes {list(cfg.scenes)}, frames_per_camera {cfg.frames_per_camera}")
    out = Path(out_dir)
    annotations = []
    for scene in cfg.scenes:
        root = out / scene
        files = []
        for k, cam in enumerate(cameras_for(cfg)):
            views = _views(scene, cam, cfg.frames_per_camera, _world_seed(cfg, k))
            for i, (rgb, depth, K, depth_scale) in enumerate(views):
                stem = f"cam{k:02d}_{i:04d}"
                depth = np.where(depth <= cfg.max_depth, depth, 0).astype(np.float32)
                entry = {"rgb": f"rgb/{stem}.png", "depth": f"depth/{stem}.png", "depth_scale": depth_scale,
                         "cam_in": [K.fx, K.fy, K.cx, K.cy]}
                write_rgb(root / entry["rgb"], rgb)
                write_depth_png(root / entry["depth"], depth, depth_scale)
                if cfg.normals:
                    entry["normal"] = f"normal/{stem}.png"
                    d = torch.from_numpy(depth)[None, None]
                    n, ok = depth_to_normals(d, torch.tensor([[K.fx, K.fy, K.cx, K.cy]]))
                    normal = torch.where(ok, n, torch.zeros_like(n))[0].permute(1, 2, 0).numpy()
                    _write_normals(root / entry["normal"], normal)
                files.append(entry)
        path = root / "annotation.json"
        write_text_atomic(path, json.dumps({"files": files}, indent=1))
        annotations.append(path)
    return annotations
