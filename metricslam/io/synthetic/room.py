"""Indoor world: a furnished room (6 x 5 x 3 m unless another size is given), and a smooth hand-held-like orbit
inside it.

World: z up, the floor is z = 0, the room spans x in [0, sx], y in [0, sy]. Furniture stands along the walls so
the central area (where the camera moves) stays free. Another room size moves the furniture with its walls but
keeps every object's and texture's physical size, so a bigger room only puts things farther away.
"""
from __future__ import annotations

import numpy as np

from metricslam.io.synthetic.poses import look_poses
from metricslam.io.synthetic.scene import Lighting, Material, Scene, SceneBuilder, random_colour

ROOM = (6.0, 5.0, 3.0)
MIN_ROOM = (5.0, 4.5, 2.5)  # smallest size the furniture fits in
FPS = 30.0
DEPTH_SCALE = 1000.0  # depth PNG units per metre (millimetres)


def _wall_material(rng: np.random.Generator) -> Material:
    kind = rng.choice(["paint", "wallpaper", "bricks"])
    if kind == "bricks":
        return Material("bricks", random_colour(rng, (0.62, 0.32, 0.24)), random_colour(rng, (0.82, 0.8, 0.74), 0.04),
                        period=0.25, aspect=0.3, texel=0.004, noise=0.3)
    if kind == "wallpaper":
        return Material("stripes", random_colour(rng, (0.78, 0.72, 0.6), 0.15), random_colour(rng, (0.5, 0.55, 0.62), 0.15),
                        period=float(rng.uniform(0.1, 0.3)), texel=0.005, noise=0.3)
    return Material("noise", random_colour(rng, (0.85, 0.82, 0.74), 0.1), random_colour(rng, (0.55, 0.6, 0.66), 0.1),
                    texel=0.006, noise=0.35)


def _plain(rng: np.random.Generator, base: tuple[float, float, float], texel: float = 0.004, noise: float = 0.3,
           spread: float = 0.12) -> Material:
    """A noise-textured material around ``base`` colour."""
    return Material("noise", random_colour(rng, base, spread), random_colour(rng, base, spread), texel=texel, noise=noise)


def _add_shell(b: SceneBuilder, rng: np.random.Generator, size: np.ndarray) -> None:
    sx, sy, sz = size
    t = 0.1
    floor = (Material("stripes", (0.56, 0.38, 0.22), (0.44, 0.29, 0.16), period=0.18, texel=0.003, noise=0.3)
             if rng.random() < 0.5 else
             Material("checker", (0.75, 0.74, 0.7), (0.35, 0.36, 0.4), period=0.5, texel=0.004, noise=0.25))
    b.box((sx / 2, sy / 2, -t / 2), (sx, sy, t), floor)
    b.box((sx / 2, sy / 2, sz + t / 2), (sx, sy, t), _plain(rng, (0.9, 0.9, 0.87), texel=0.008, noise=0.3, spread=0.04))
    b.box((-t / 2, sy / 2, sz / 2), (t, sy, sz), _wall_material(rng))
    b.box((sx + t / 2, sy / 2, sz / 2), (t, sy, sz), _wall_material(rng))
    b.box((sx / 2, -t / 2, sz / 2), (sx + 2 * t, t, sz), _wall_material(rng))
    b.box((sx / 2, sy + t / 2, sz / 2), (sx + 2 * t, t, sz), _wall_material(rng))


def _add_sofa(b: SceneBuilder, rng: np.random.Generator, stretch: np.ndarray) -> None:
    x0, length = rng.uniform(1.2, 2.4) * stretch[0], 2.1
    fabric = Material("checker", random_colour(rng, (0.3, 0.4, 0.55), 0.15), random_colour(rng, (0.25, 0.3, 0.42), 0.1),
                      period=0.06, texel=0.003, noise=0.3)
    cx = x0 + length / 2
    b.box((cx, 0.55, 0.22), (length, 0.9, 0.44), fabric)
    b.box((cx, 0.2, 0.5), (length, 0.25, 1.0), fabric)
    for x in (x0 + 0.11, x0 + length - 0.11):
        b.box((x, 0.55, 0.33), (0.22, 0.9, 0.66), fabric)
    cushion = _plain(rng, (0.75, 0.55, 0.3), texel=0.003)
    for x in (cx - 0.45, cx + 0.45):
        b.box((x, 0.6, 0.52), (0.8, 0.6, 0.16), cushion)
    b.box((cx, 0.02, 1.65), (1.0, 0.04, 0.7), _plain(rng, (0.5, 0.6, 0.4), texel=0.002, noise=0.45, spread=0.3))


def _add_shelves(b: SceneBuilder, rng: np.random.Generator, stretch: np.ndarray) -> None:
    y0, width, depth, height = rng.uniform(1.3, 2.2) * stretch[1], 1.4, 0.4, 2.0
    wood = Material("stripes", random_colour(rng, (0.48, 0.33, 0.2)), random_colour(rng, (0.4, 0.27, 0.15)),
                    period=0.02, texel=0.003, noise=0.25)
    for y in (y0, y0 + width):
        b.box((depth / 2, y, height / 2), (depth, 0.04, height), wood)
    b.box((0.01, y0 + width / 2, height / 2), (0.02, width, height), _plain(rng, (0.7, 0.66, 0.58)))
    boards = np.linspace(0.05, height - 0.15, 5)
    for z in boards:
        b.box((depth / 2, y0 + width / 2, z), (depth, width, 0.03), wood)
    for z in boards[:-1]:
        y = y0 + 0.04 + rng.uniform(0, 0.1)
        while True:
            w = rng.uniform(0.04, 0.22)
            if y + w > y0 + width - 0.03:
                break
            h, d = rng.uniform(0.15, 0.36), rng.uniform(0.18, 0.32)
            item = _plain(rng, tuple(rng.uniform(0.1, 0.9, 3)), texel=0.002, noise=0.35, spread=0.05)
            b.box((0.04 + d / 2, y + w / 2, z + 0.015 + h / 2), (d, w, h), item)
            y += w + rng.uniform(0.0, 0.08)


def _add_table(b: SceneBuilder, rng: np.random.Generator, stretch: np.ndarray, shift: np.ndarray) -> None:
    cx, cy = 5.25 + shift[0], rng.uniform(2.0, 3.0) * stretch[1]
    wood = Material("stripes", random_colour(rng, (0.62, 0.45, 0.28)), random_colour(rng, (0.52, 0.36, 0.2)),
                    period=0.04, texel=0.003, noise=0.25)
    b.box((cx, cy, 0.735), (0.9, 1.5, 0.05), wood)
    for dx in (-0.38, 0.38):
        for dy in (-0.68, 0.68):
            b.box((cx + dx, cy + dy, 0.355), (0.06, 0.06, 0.71), wood)
    for dy in (-1.05, 1.05):
        chair = _plain(rng, (0.2, 0.2, 0.22), texel=0.003, noise=0.4)
        b.box((cx, cy + dy, 0.45), (0.45, 0.45, 0.05), chair)
        b.box((cx, cy + dy + np.sign(dy) * 0.2, 0.7), (0.45, 0.05, 0.5), chair)
        b.box((cx, cy + dy, 0.21), (0.06, 0.06, 0.42), chair)
    for _ in range(3):
        size = (rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.4), rng.uniform(0.03, 0.25))
        pos = (cx + rng.uniform(-0.2, 0.2), cy + rng.uniform(-0.5, 0.5), 0.76 + size[2] / 2)
        b.box(pos, size, _plain(rng, tuple(rng.uniform(0.15, 0.9, 3)), texel=0.002), yaw=float(rng.uniform(0, np.pi)))
    b.box((5.98 + shift[0], cy, 1.6), (0.04, 0.8, 0.6),
          _plain(rng, (0.6, 0.4, 0.5), texel=0.002, noise=0.5, spread=0.3))
    b.box((5.94 + shift[0], cy + 1.5 if cy < 2.5 * stretch[1] else cy - 1.5, 0.45), (0.1, 0.9, 0.6),
          Material("stripes", (0.92, 0.92, 0.9), (0.6, 0.6, 0.62), period=0.05, texel=0.004, noise=0.2))


def _add_north_wall(b: SceneBuilder, rng: np.random.Generator, stretch: np.ndarray, shift: np.ndarray) -> None:
    xc, y = rng.uniform(3.8, 4.6) * stretch[0], shift[1]
    b.box((xc, 4.75 + y, 0.45), (1.6, 0.5, 0.9),
          Material("checker", random_colour(rng, (0.7, 0.6, 0.45)), random_colour(rng, (0.5, 0.4, 0.3)),
                   period=0.4, aspect=1.1, texel=0.003, noise=0.25))
    b.box((xc + 1.2, 4.7 + y, 0.8), (0.04, 0.04, 1.6), _plain(rng, (0.3, 0.3, 0.3)))
    b.box((xc + 1.2, 4.7 + y, 1.75), (0.35, 0.35, 0.3), _plain(rng, (0.95, 0.85, 0.6), spread=0.03))
    b.box((1.5, 4.98 + y, 1.025), (0.9, 0.04, 2.05),
          Material("stripes", random_colour(rng, (0.6, 0.5, 0.4)), random_colour(rng, (0.5, 0.4, 0.32)),
                   period=0.3, texel=0.004, noise=0.25))
    b.box((xc, 4.98 + y, 1.7), (1.0, 0.04, 0.7), _plain(rng, (0.4, 0.5, 0.6), texel=0.002, noise=0.5, spread=0.3))


def _add_boxes(b: SceneBuilder, rng: np.random.Generator, shift: np.ndarray) -> None:
    z = 0.0
    for _ in range(int(rng.integers(3, 5))):
        size = rng.uniform(0.3, 0.6, 3)
        cardboard = Material("noise", random_colour(rng, (0.7, 0.55, 0.35)), random_colour(rng, (0.55, 0.42, 0.27)),
                             texel=0.003, noise=0.35)
        b.box((0.7 + rng.uniform(-0.08, 0.08), 4.3 + shift[1] + rng.uniform(-0.08, 0.08), z + size[2] / 2), size,
              cardboard, yaw=float(rng.uniform(-0.4, 0.4)))
        z += size[2]
    b.box((5.6 + shift[0], 4.6 + shift[1], 0.35), (0.5, 0.5, 0.7),
          _plain(rng, (0.25, 0.45, 0.25), texel=0.003, noise=0.45))


def build_room(seed: int = 0, size: tuple[float, float, float] = ROOM) -> Scene:
    """The furnished room for ``seed`` (layout jitter, materials and noise all derive from it), ``size`` (sx, sy,
    sz) metres, at least MIN_ROOM. Furniture keeps its size: along a wall it moves with that wall, elsewhere its
    position is stretched with the room."""
    dims = np.asarray(size, np.float64)
    if dims.shape != (3,) or np.any(dims < MIN_ROOM):
        raise ValueError(f"room size must be 3 numbers of at least {MIN_ROOM} m, got {size}")
    # Both are exact (1 and 0) for the default size, which so renders exactly as before sizes existed.
    stretch, shift = dims / ROOM, dims - ROOM
    rng = np.random.default_rng([seed, 1])
    b = SceneBuilder(rng)
    _add_shell(b, rng, dims)
    b.box((dims[0] / 2, dims[1] / 2, 0.005), (2.4, 1.6, 0.01),
          Material("checker", random_colour(rng, (0.6, 0.2, 0.2), 0.2), random_colour(rng, (0.85, 0.8, 0.6)),
                   period=0.2, texel=0.003, noise=0.3))
    b.box((dims[0] / 2, dims[1] / 2, 2.96 + shift[2]), (0.6, 0.6, 0.08), _plain(rng, (0.95, 0.95, 0.9), spread=0.03))
    _add_sofa(b, rng, stretch)
    _add_shelves(b, rng, stretch)
    _add_table(b, rng, stretch, shift)
    _add_north_wall(b, rng, stretch, shift)
    _add_boxes(b, rng, shift)
    dirs = np.array([[0.3, 0.5, 1.0], [-0.6, -0.3, 0.4], [0.5, -0.8, 0.2]])
    lighting = Lighting(
        directions=(dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).astype(np.float32),
        weights=np.array([0.35, 0.25, 0.2], np.float32),
        ambient=0.45,
    )
    return b.build("room", lighting, fps=FPS, depth_scale=DEPTH_SCALE, size=tuple(float(v) for v in dims))


def room_trajectory(frames: int, speed: float = 1.0, seed: int = 0) -> np.ndarray:
    """(frames, 4, 4) T_wc along an elliptic loop around the room centre, looking outwards at the furniture.

    At speed 1 a frame moves about 1.8-2.8 cm and turns 0.7-1.6 degrees (0.5-0.8 m/s, at most ~50 deg/s at
    30 fps: a brisk hand-held scan, a little faster than TUM fr1); height and tilt vary smoothly.
    """
    rng = np.random.default_rng([seed, 2])
    phase = rng.uniform(0, 2 * np.pi, 5)
    theta = phase[0] + 0.02 * speed * np.arange(frames)
    positions = np.stack(
        [3.0 + 1.3 * np.cos(theta), 2.5 + 0.9 * np.sin(theta), 1.35 + 0.2 * np.sin(0.7 * theta + phase[1])], axis=1
    )
    yaw = theta + 0.4 * np.sin(theta + phase[2])
    pitch = -0.12 + 0.12 * np.sin(1.3 * theta + phase[3])
    roll = 0.03 * np.sin(0.9 * theta + phase[4])
    return look_poses(positions, yaw, pitch, roll)
