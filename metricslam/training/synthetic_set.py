"""A multi-camera training set rendered from the synthetic worlds, written as Metric3D annotation files.

Each camera (a focal length from about 300 to 1500 px on one of several small sensors) takes its views in worlds
of each scene type. Every view is its own world instance, placed so that the scene's layout says little about
metric depth; what does is the physical size of objects and textures, which stays fixed -- the cue a canonical
camera relies on (canonical depth = f_c * size / size in pixels):
- indoors, a furnished room of random size (5-12 x 4.5-9 x 2.5-4 m) seen from a random spot at a random eye
  height (0.5-2.2 m) and tilt, looking across the room;
- outdoors, a street seen from a random place along it, a random lane position and a camera height from a low
  car to a bus (1.2-3.2 m), with a random downward tilt;
- noise textures have a physical grain (see NOISE_GRAIN) instead of the renderer's self-similar default.
With a fixed room and a fixed camera height, a network could read depth off the layout (wall distances, the floor
seen from a known height) without the focal length; with self-similar textures, most surfaces would not show
their distance at all. One data set per scene type is written, so the trainer can
balance indoor and outdoor:

    OUT/room/annotation.json, OUT/room/{rgb,depth,normal}/cam03_0002.png, ...   (same for street)

Train and held-out splits use disjoint focal lengths and world seeds: the held-out cameras test metric depth on
focal lengths never seen in training. Images are small (at most 224 px wide) so that CPU training is quick.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
import torch

from metricslam.errors import InputError
from metricslam.geometry.camera import Intrinsics
from metricslam.io.atomic import atomic_path, write_text_atomic
from metricslam.io.images import write_depth_png, write_rgb
from metricslam.training.normals import depth_to_normals

if TYPE_CHECKING:
    from metricslam.io.synthetic import Scene

# (width, height): 4:3, 16:9, square, and a wide driving-camera crop.
SENSORS: tuple[tuple[int, int], ...] = ((160, 120), (192, 108), (144, 144), (224, 80))
TRAIN_FOCALS: tuple[float, ...] = (300, 360, 430, 520, 620, 750, 900, 1080, 1250, 1500)
HELD_OUT_FOCALS: tuple[float, ...] = (330, 470, 680, 980, 1370)
# Indoor views: room size (sx, sy, sz) m, eye height m, tilt rad (up is positive). Eyes stay this far from the
# walls, clear of the furniture along them, and look at a point in the middle 40 % of the room.
_ROOM_SIZE = ((5.0, 12.0), (4.5, 9.0), (2.5, 4.0))
_ROOM_EYE_HEIGHT = (0.5, 2.2)
_ROOM_PITCH = (-0.5, 0.05)
_ROOM_WALL_CLEARANCE = 1.3
# Outdoor views: arc length along the street (m), offset left of the centreline (m, parked cars start at 3.4),
# camera height (m), tilt and heading change (rad).
_STREET_ARC = (10.0, 600.0)
_STREET_OFFSET = (-3.0, 3.0)
_STREET_HEIGHT = (1.2, 3.2)
_STREET_PITCH = (-0.15, -0.01)
_STREET_YAW = 0.15
# Noise textures roll off beyond this many texels (materials' texels are 2-20 mm, so grains of about 3-30 cm):
# the renderer's default self-similar noise looks the same at every distance and would hide the very cue a
# canonical camera relies on, the physical size of things.
NOISE_GRAIN = 16.0
# A view where fewer pixels have a depth label (sky, beyond max_depth) is drawn again, at most _REDRAWS times.
_MIN_VALID = 0.5
_REDRAWS = 10


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


def _world_seed(cfg: SyntheticSetConfig, camera_index: int, view: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, cfg.split != "train", camera_index, view]).generate_state(1)[0])


def _room_world(seed: int) -> Scene:
    """A furnished room of random size (Scene.extras['size'])."""
    # Imported in each function: the renderer loads Open3D, which nothing else in training needs.
    from metricslam.io.synthetic.room import build_room

    lo, hi = np.array(_ROOM_SIZE).T
    return build_room(seed, tuple(np.random.default_rng([seed, 7]).uniform(lo, hi)))


def _room_pose(world: Scene, rng: np.random.Generator) -> np.ndarray:
    """T_wc (4, 4) looking across the room from a random spot, eye height and tilt."""
    from metricslam.io.synthetic.poses import look_poses

    size = np.asarray(world.extras["size"])
    eye = np.append(rng.uniform(_ROOM_WALL_CLEARANCE, size[:2] - _ROOM_WALL_CLEARANCE),
                    rng.uniform(*_ROOM_EYE_HEIGHT))
    away = size[:2] * rng.uniform(0.3, 0.7, 2) - eye[:2]
    # An eye right next to its target looks in a random direction instead of at the floor at its feet.
    yaw = np.arctan2(away[1], away[0]) if np.linalg.norm(away) > 1.0 else rng.uniform(-np.pi, np.pi)
    return look_poses(eye[None], np.array([yaw]), rng.uniform(*_ROOM_PITCH, 1), rng.uniform(-0.05, 0.05, 1))[0]


def _street_world(seed: int) -> Scene:
    from metricslam.io.synthetic.street import build_street

    return build_street(seed)


def _street_pose(world: Scene, rng: np.random.Generator) -> np.ndarray:
    """T_wc (4, 4) looking along the street from a random place, lane position, camera height and tilt."""
    from metricslam.io.synthetic.poses import look_poses

    xy, heading = world.extras["centreline"].at(rng.uniform(*_STREET_ARC))
    left = np.array([-np.sin(heading), np.cos(heading)])
    eye = np.append(xy + rng.uniform(*_STREET_OFFSET) * left, rng.uniform(*_STREET_HEIGHT))
    yaw = heading + rng.uniform(-_STREET_YAW, _STREET_YAW, 1)
    return look_poses(eye[None], yaw, rng.uniform(*_STREET_PITCH, 1), rng.uniform(-0.02, 0.02, 1))[0]


# Per scene type: the world instance of a seed, and a random camera pose in it.
VIEWS = {"room": (_room_world, _room_pose), "street": (_street_world, _street_pose)}


def view_world(scene: str, seed: int) -> Scene:
    """World instance ``seed`` of ``scene`` as the set renders it: its noise textures have a physical grain."""
    from metricslam.io.synthetic.texture import NoiseTile

    build, _ = VIEWS[scene]
    return replace(build(seed), noise=NoiseTile(np.random.default_rng([seed, 9]), grain=NOISE_GRAIN))


def _render_view(scene: str, camera: SyntheticCamera, seed: int, max_depth: float):
    """(rgb, depth capped at ``max_depth``, intrinsics, depth PNG scale) of one view of its own world instance."""
    from metricslam.io.synthetic import render

    w, h = camera.width, camera.height
    K = Intrinsics(camera.focal, camera.focal, (w - 1) / 2, (h - 1) / 2, w, h)  # as SyntheticSequence's
    world, (_, draw_pose) = view_world(scene, seed), VIEWS[scene]
    rng = np.random.default_rng([seed, 8])
    for _ in range(_REDRAWS + 1):
        rgb, depth = render(world, draw_pose(world, rng), K)
        depth = np.where(depth <= max_depth, depth, 0).astype(np.float32)
        if (depth > 0).mean() >= _MIN_VALID:
            break
    return rgb, depth, K, world.depth_scale


def _write_normals(path: Path, normal: np.ndarray) -> None:
    """16-bit PNG, R G B = x y z mapped from [-1, 1] to [0, 65535]; zero where there is no normal."""
    code = np.round((normal + 1.0) * 0.5 * 65535.0).astype(np.uint16)
    code[~np.any(normal != 0, axis=2)] = 0
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(code, cv2.COLOR_RGB2BGR)):
            raise InputError(f"{path}: could not write normals; check the folder is writable")


def write_synthetic_set(out_dir: str | os.PathLike, cfg: SyntheticSetConfig | None = None) -> list[Path]:
    """Render the split and write one annotation file per scene type; returns their paths."""
    cfg = cfg or SyntheticSetConfig()
    unknown = [s for s in cfg.scenes if s not in VIEWS]
    if unknown or not cfg.scenes or cfg.frames_per_camera < 1:
        raise InputError(f"synthetic set needs scenes from {', '.join(VIEWS)} and frames_per_camera >= 1, got "
                         f"scenes {list(cfg.scenes)}, frames_per_camera {cfg.frames_per_camera}")
    out = Path(out_dir)
    annotations = []
    for scene in cfg.scenes:
        root = out / scene
        files = []
        for k, cam in enumerate(cameras_for(cfg)):
            for i in range(cfg.frames_per_camera):
                rgb, depth, K, depth_scale = _render_view(scene, cam, _world_seed(cfg, k, i), cfg.max_depth)
                stem = f"cam{k:02d}_{i:04d}"
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
