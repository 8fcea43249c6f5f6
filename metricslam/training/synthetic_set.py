"""A multi-camera training set rendered from the synthetic worlds, written as Metric3D annotation files.

The same worlds are seen by different cameras: each view (a world instance on one sensor drawn at random) is
photographed by several of the split's focal lengths (``cameras_per_view``, about 300 to 1500 px), each from its
own random place and heading in that world, so neither the scene nor the image size tells which focal length took
a picture. Cameras sit at a height typical of their domain and are held almost level, as in real data sets (KITTI's
car camera at 1.65 m, hand-held and NYU cameras at 1.2-1.6 m):
- indoors, a furnished room of random size (5-12 x 4.5-9 x 2.5-4 m) seen from a random spot at eye height
  (1.2-1.6 m), looking across the room;
- outdoors, a street seen from a random place along it and a random lane position, from a car-mounted height
  (1.5-1.8 m);
- tilt -0.06..0.02 rad (up is positive) in both.
Then a ground pixel dv rows below the horizon has canonical depth f_c * h / dv, which the image shows (where it
sits relative to the horizon, and how large textures of standard physical size look, see PATTERN_PERIODS), and
metric depth f * h / dv, which needs the focal length: similar-looking images from different cameras have metric
depths in proportion to f. That is the ambiguity CSTM resolves (Metric3D, Fig. 2). One data set per scene type is
written, so the trainer can balance indoor and outdoor:

    OUT/room/annotation.json, OUT/room/{rgb,depth,normal}/cam03_0002.png, ...   (focal index, view index)

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
# Indoor views: room size (sx, sy, sz) m. Eyes stay this far from the walls, clear of the furniture along them,
# and look at a point in the middle 40 % of the room.
_ROOM_SIZE = ((5.0, 12.0), (4.5, 9.0), (2.5, 4.0))
_ROOM_WALL_CLEARANCE = 1.3
# Outdoor views: arc length along the street (m), offset left of the centreline (m, parked cars start at 3.4) and
# heading change (rad).
_STREET_ARC = (10.0, 600.0)
_STREET_OFFSET = (-3.0, 3.0)
_STREET_YAW = 0.15
# Per scene type: camera height above the ground (m) and tilt (rad, up is positive), domain-typical and near level
# (see the module docstring for why the data assume this).
CAMERA_PLACEMENT = {"room": {"height": (1.2, 1.6), "pitch": (-0.06, 0.02)},
                    "street": {"height": (1.5, 1.8), "pitch": (-0.06, 0.02)}}
# Standard physical sizes. Canonical depth is f_c * size / (size in pixels): it can be read off an image only
# where things have a known size. The renderer's materials do not: noise texels of 2-20 mm with a self-similar
# spectrum look alike at every distance, and pattern periods range from 2 cm to 3.5 m with no link to what the
# pattern is. Here every noise texture has one grain (NOISE_GRAIN texels of NOISE_TEXEL m: 8 cm) and every
# pattern kind one period in metres (as bricks, tiles and windows have), so that appearance tells metres per
# pixel, and only the focal length turns that into metric depth.
NOISE_GRAIN = 16.0
NOISE_TEXEL = 0.005
PATTERN_PERIODS = {"stripes": 0.15, "checker": 0.4, "bricks": 0.25, "windows": 2.5}
# A view where fewer pixels have a depth label (sky, beyond max_depth) is drawn again, at most _REDRAWS times.
_MIN_VALID = 0.5
_REDRAWS = 10


@dataclass
class SyntheticSetConfig:
    split: Literal["train", "held_out"] = "train"
    scenes: tuple[str, ...] = ("room", "street")
    focals: tuple[float, ...] | None = None  # None: the split's default list
    frames_per_camera: int = 8  # images per focal length and scene type
    # How many of the split's focal lengths photograph each view (same world and sensor, each its own pose).
    cameras_per_view: int = 5
    seed: int = 0
    max_depth: float = 80.0  # metres; farther ground truth is marked invalid (a LiDAR-like range)
    normals: bool = True


def split_focals(cfg: SyntheticSetConfig) -> tuple[float, ...]:
    """The split's focal lengths (px): ``cfg.focals``, or the split's default list."""
    focals = cfg.focals if cfg.focals is not None else (TRAIN_FOCALS if cfg.split == "train" else HELD_OUT_FOCALS)
    return tuple(float(f) for f in focals)


@dataclass(frozen=True)
class SyntheticView:
    """One world instance, photographed on one sensor by several focal lengths (indices into split_focals), each
    from its own pose."""

    index: int
    seed: int
    sensor: tuple[int, int]
    cameras: tuple[int, ...]


def views_for(cfg: SyntheticSetConfig, scene: str) -> list[SyntheticView]:
    """The split's views of ``scene``: each round gives every focal length one view, in groups of
    ``cameras_per_view`` drawn at random, and every view a random sensor -- so neither the world nor the image
    size tells which focal length took a picture."""
    n = len(split_focals(cfg))
    group = max(1, min(cfg.cameras_per_view, n))
    rng = np.random.default_rng([cfg.seed, cfg.split != "train", sorted(VIEWS).index(scene)])
    views: list[SyntheticView] = []
    for _ in range(cfg.frames_per_camera):
        order = rng.permutation(n)
        for start in range(0, n, group):
            seed = int(rng.integers(2**31))
            sensor = SENSORS[int(rng.integers(len(SENSORS)))]
            views.append(SyntheticView(len(views), seed, sensor, tuple(int(k) for k in order[start:start + group])))
    return views


def _room_world(seed: int) -> Scene:
    """A furnished room of random size (Scene.extras['size'])."""
    # Imported in each function: the renderer loads Open3D, which nothing else in training needs.
    from metricslam.io.synthetic.room import build_room

    lo, hi = np.array(_ROOM_SIZE).T
    return build_room(seed, tuple(np.random.default_rng([seed, 7]).uniform(lo, hi)))


def _room_pose(world: Scene, rng: np.random.Generator) -> np.ndarray:
    """T_wc (4, 4) looking across the room from a random spot at eye height, near level."""
    from metricslam.io.synthetic.poses import look_poses

    size = np.asarray(world.extras["size"])
    place = CAMERA_PLACEMENT["room"]
    eye = np.append(rng.uniform(_ROOM_WALL_CLEARANCE, size[:2] - _ROOM_WALL_CLEARANCE), rng.uniform(*place["height"]))
    away = size[:2] * rng.uniform(0.3, 0.7, 2) - eye[:2]
    # An eye right next to its target looks in a random direction instead of at the floor at its feet.
    yaw = np.arctan2(away[1], away[0]) if np.linalg.norm(away) > 1.0 else rng.uniform(-np.pi, np.pi)
    return look_poses(eye[None], np.array([yaw]), rng.uniform(*place["pitch"], 1), rng.uniform(-0.05, 0.05, 1))[0]


def _street_world(seed: int) -> Scene:
    from metricslam.io.synthetic.street import build_street

    return build_street(seed)


def _street_pose(world: Scene, rng: np.random.Generator) -> np.ndarray:
    """T_wc (4, 4) looking along the street from a random place and lane position, at car height, near level."""
    from metricslam.io.synthetic.poses import look_poses

    xy, heading = world.extras["centreline"].at(rng.uniform(*_STREET_ARC))
    left = np.array([-np.sin(heading), np.cos(heading)])
    place = CAMERA_PLACEMENT["street"]
    eye = np.append(xy + rng.uniform(*_STREET_OFFSET) * left, rng.uniform(*place["height"]))
    yaw = heading + rng.uniform(-_STREET_YAW, _STREET_YAW, 1)
    return look_poses(eye[None], yaw, rng.uniform(*place["pitch"], 1), rng.uniform(-0.02, 0.02, 1))[0]


# Per scene type: the world instance of a seed, and a random camera pose in it.
VIEWS = {"room": (_room_world, _room_pose), "street": (_street_world, _street_pose)}


def view_world(scene: str, seed: int) -> Scene:
    """World instance ``seed`` of ``scene`` as the set renders it: with the standard physical sizes above."""
    from metricslam.io.synthetic.scene import INV_TEXEL, PATTERN, PERIOD
    from metricslam.io.synthetic.texture import PATTERNS, NoiseTile

    build, _ = VIEWS[scene]
    world = replace(build(seed), noise=NoiseTile(np.random.default_rng([seed, 9]), grain=NOISE_GRAIN))
    world.surface[INV_TEXEL] = 1.0 / NOISE_TEXEL
    periods = np.array([PATTERN_PERIODS.get(kind, 1.0) for kind in PATTERNS], np.float32)
    world.surface[PERIOD] = periods[world.surface[PATTERN].astype(np.int64)]
    return world


def _render_view(scene: str, view: SyntheticView, focals: tuple[float, ...], max_depth: float):
    """[(rgb, depth capped at ``max_depth``, intrinsics)] of the view through each of its cameras, and the depth
    PNG scale. Each camera's pose is drawn again until its image has enough labelled pixels."""
    from metricslam.io.synthetic import render

    w, h = view.sensor
    world, (_, draw_pose) = view_world(scene, view.seed), VIEWS[scene]
    rng = np.random.default_rng([view.seed, 8])
    shots = []
    for k in view.cameras:
        K = Intrinsics(focals[k], focals[k], (w - 1) / 2, (h - 1) / 2, w, h)
        for _ in range(_REDRAWS + 1):
            rgb, depth = render(world, draw_pose(world, rng), K)
            depth = np.where(depth <= max_depth, depth, 0).astype(np.float32)
            if (depth > 0).mean() >= _MIN_VALID:
                break
        shots.append((rgb, depth, K))
    return shots, world.depth_scale


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
    if unknown or not cfg.scenes or cfg.frames_per_camera < 1 or cfg.cameras_per_view < 1:
        raise InputError(f"synthetic set needs scenes from {', '.join(VIEWS)}, frames_per_camera >= 1 and "
                         f"cameras_per_view >= 1, got scenes {list(cfg.scenes)}, frames_per_camera "
                         f"{cfg.frames_per_camera}, cameras_per_view {cfg.cameras_per_view}")
    out = Path(out_dir)
    focals = split_focals(cfg)
    annotations = []
    for scene in cfg.scenes:
        root = out / scene
        files = []
        for view in views_for(cfg, scene):
            shots, depth_scale = _render_view(scene, view, focals, cfg.max_depth)
            for k, (rgb, depth, K) in zip(view.cameras, shots):
                stem = f"cam{k:02d}_{view.index:04d}"
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
