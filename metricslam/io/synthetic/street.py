"""Outdoor world: a street canyon several hundred metres long with gentle turns, and a car driving along it.

World: z up, ground at z = 0. The street follows a smooth centreline whose curvature rises and falls as a
raised cosine through each turn (continuous heading and curvature). Buildings of varied size and setback line
both sides; parked cars, poles, trees, kerbed sidewalks and lane markings fill the street. Sky = no hit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metricslam.io.synthetic.poses import look_poses
from metricslam.io.synthetic.scene import Lighting, Material, Scene, SceneBuilder, random_colour

FPS = 10.0
DEPTH_SCALE = 256.0  # depth PNG units per metre: 0..256 m fits in uint16
MAX_DEPTH = 250.0
ROAD_HALF_WIDTH = 5.5
SIDEWALK_WIDTH = 3.0
CAMERA_HEIGHT = 1.65
START = 10.0  # arc length (m) where the car starts
STEP = 1.0  # metres per frame at speed 1 (varies +-15 % along the drive)
MIN_LENGTH = 700.0
_TAIL = 100.0  # straight street beyond the drivable length, so the view ahead is never empty


@dataclass
class Centreline:
    """The street's centre line sampled densely by arc length ``s``: positions ``xy`` and tangent ``heading``."""

    s: np.ndarray
    xy: np.ndarray
    heading: np.ndarray

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def at(self, s: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = np.asarray(s, np.float64)
        xy = np.stack([np.interp(s, self.s, self.xy[:, 0]), np.interp(s, self.s, self.xy[:, 1])], axis=-1)
        return xy, np.interp(s, self.s, self.heading)


def make_centreline(rng: np.random.Generator, length: float, ds: float = 0.25) -> Centreline:
    """Straights of 60-140 m joined by 30-80 degree turns of 35-60 m minimum radius; the overall heading stays
    within +-100 degrees of the start so the street never loops back on itself. The last ``_TAIL`` m are straight."""
    s = np.arange(0.0, length + _TAIL + ds, ds)
    kappa = np.zeros_like(s)
    pos, total = rng.uniform(40, 80), 0.0
    while True:
        angle, radius = np.radians(rng.uniform(30, 80)), rng.uniform(35, 60)
        span = 2 * angle * radius  # raised-cosine curvature peaks at 1 / radius
        if pos + span > length:
            break
        sign = rng.choice([-1.0, 1.0])
        if abs(total + sign * angle) > np.radians(100):
            sign = -sign
        sel = (s >= pos) & (s < pos + span)
        kappa[sel] = sign * angle / span * (1 - np.cos(2 * np.pi * (s[sel] - pos) / span))
        total += sign * angle
        pos += span + rng.uniform(60, 140)
    heading = np.concatenate([[0.0], np.cumsum(0.5 * (kappa[1:] + kappa[:-1]) * ds)])
    step = np.stack([np.cos(heading), np.sin(heading)], axis=1)
    xy = np.concatenate([[[0.0, 0.0]], np.cumsum(0.5 * (step[1:] + step[:-1]) * ds, axis=0)])
    return Centreline(s, xy, heading)


def _left(heading: np.ndarray) -> np.ndarray:
    return np.stack([-np.sin(heading), np.cos(heading)], axis=-1)


class _Street:
    """Places objects along a centreline, keeping the roadway and sidewalks clear."""

    def __init__(self, builder: SceneBuilder, rng: np.random.Generator, centre: Centreline):
        self.b, self.rng, self.centre = builder, rng, centre
        self._probe = centre.xy[:: max(1, int(2.0 / (centre.s[1] - centre.s[0])))]

    def place(self, s: float, offset: float, along: float, across: float) -> tuple[np.ndarray, float] | None:
        """Centre (x, y) and yaw of a footprint ``along`` x ``across`` m whose middle is ``offset`` m left of the
        centreline at arc length ``s``; None if it would intrude on the street anywhere (e.g. inside a turn)."""
        xy, heading = self.centre.at(s)
        centre = xy + offset * _left(heading)
        d = self._probe - centre
        c, si = np.cos(heading), np.sin(heading)
        local_along = np.abs(c * d[:, 0] + si * d[:, 1])
        local_across = np.abs(-si * d[:, 0] + c * d[:, 1])
        clear = ROAD_HALF_WIDTH + SIDEWALK_WIDTH - 0.05
        if abs(offset) > clear and np.any((local_along < along / 2 + clear) & (local_across < across / 2 + clear)):
            return None
        return centre, float(heading)

    def buildings(self, side: float) -> None:
        rng = self.rng
        s = rng.uniform(0, 8)
        while s < self.centre.length - 20:
            length, depth, height = rng.uniform(10, 30), rng.uniform(10, 20), rng.uniform(6, 35)
            offset = side * (ROAD_HALF_WIDTH + SIDEWALK_WIDTH + rng.uniform(0.5, 4.0) + depth / 2)
            spot = self.place(s + length / 2, offset, length, depth)
            if spot is not None:
                (x, y), yaw = spot
                self.b.box((x, y, height / 2), (length, depth, height), _facade(rng), yaw=yaw)
            s += length + (0.0 if rng.random() < 0.4 else rng.uniform(1, 8))

    def parked_cars(self, side: float) -> None:
        rng = self.rng
        s = rng.uniform(5, 20)
        while s < self.centre.length - 10:
            spot = self.place(s, side * (ROAD_HALF_WIDTH - 1.2), 4.2, 1.8)
            if spot is not None:
                (x, y), yaw = spot
                paint = Material("noise", random_colour(rng, tuple(rng.uniform(0.1, 0.9, 3)), 0.05),
                                 random_colour(rng, (0.2, 0.2, 0.22), 0.05), texel=0.006, noise=0.25)
                glass = Material("noise", (0.15, 0.18, 0.22), (0.3, 0.35, 0.42), texel=0.01, noise=0.3)
                self.b.box((x, y, 0.6), (4.2, 1.8, 0.8), paint, yaw=yaw)
                self.b.box((x, y, 1.25), (2.2, 1.6, 0.5), glass, yaw=yaw)
            s += 4.2 + rng.uniform(1.5, 30)

    def street_furniture(self, side: float) -> None:
        rng = self.rng
        metal = Material("stripes", (0.45, 0.45, 0.47), (0.3, 0.3, 0.32), period=0.3, texel=0.005, noise=0.3)
        s = rng.uniform(5, 30)
        while s < self.centre.length - 5:
            spot = self.place(s, side * (ROAD_HALF_WIDTH + SIDEWALK_WIDTH - 0.6), 0.2, 0.2)
            if spot is not None:
                (x, y), yaw = spot
                if rng.random() < 0.5:
                    self.b.box((x, y, 3.0), (0.15, 0.15, 6.0), metal, yaw=yaw)
                    head = np.array([x, y]) - side * 0.5 * _left(np.array(yaw))
                    self.b.box((head[0], head[1], 6.0), (0.25, 1.0, 0.15), metal, yaw=yaw)
                else:
                    bark = Material("noise", (0.35, 0.25, 0.15), (0.22, 0.16, 0.1), texel=0.01, noise=0.4)
                    leaves = Material("noise", random_colour(rng, (0.25, 0.45, 0.18)), (0.1, 0.25, 0.08),
                                      texel=0.02, noise=0.5)
                    self.b.box((x, y, 1.4), (0.3, 0.3, 2.8), bark, yaw=yaw)
                    self.b.box((x, y, 3.9), (2.4, 2.4, 2.4), leaves, yaw=float(yaw + rng.uniform(0, 1)))
            s += rng.uniform(15, 35)

    def markings(self) -> None:
        paint = Material("noise", (0.92, 0.92, 0.88), (0.8, 0.8, 0.78), texel=0.01, noise=0.1)
        for s in np.arange(5.0, self.centre.length, 10.0):
            placed = self.place(s, 0.0, 3.0, 0.15)
            if placed is None:
                continue
            (x, y), yaw = placed
            self.b.box((x, y, 0.005), (3.0, 0.15, 0.01), paint, yaw=yaw)


def _facade(rng: np.random.Generator) -> Material:
    kind = rng.choice(["windows", "windows", "bricks", "stripes"])
    wall = random_colour(rng, tuple(rng.uniform(0.35, 0.85, 3)), 0.05)
    if kind == "windows":
        return Material("windows", wall, random_colour(rng, (0.2, 0.25, 0.32), 0.05),
                        period=float(rng.uniform(2.0, 3.5)), aspect=float(rng.uniform(0.9, 1.3)), texel=0.01, noise=0.3)
    if kind == "bricks":
        return Material("bricks", random_colour(rng, (0.6, 0.3, 0.22)), (0.8, 0.78, 0.72),
                        period=0.25, aspect=0.3, texel=0.008, noise=0.3)
    return Material("stripes", wall, random_colour(rng, tuple(rng.uniform(0.2, 0.6, 3)), 0.05),
                    period=float(rng.uniform(0.4, 1.5)), texel=0.01, noise=0.3)


def build_street(seed: int = 0, length: float = MIN_LENGTH) -> Scene:
    """The street for ``seed`` with a drivable centreline of at least ``length`` metres (plus a straight tail)."""
    rng = np.random.default_rng([seed, 4])
    centre = make_centreline(rng, max(float(length), MIN_LENGTH))
    b = SceneBuilder(rng)
    lo, hi = centre.xy.min(0) - 80, centre.xy.max(0) + 80
    b.box(((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, -0.05), (hi[0] - lo[0], hi[1] - lo[1], 0.1),
          Material("noise", (0.33, 0.33, 0.35), (0.45, 0.44, 0.42), texel=0.01, noise=0.35))
    street = _Street(b, rng, centre)
    paving = Material("checker", (0.62, 0.6, 0.56), (0.5, 0.49, 0.47), period=0.6, texel=0.006, noise=0.3)
    kerb = centre.xy[::4], centre.heading[::4]
    for side in (1.0, -1.0):
        b.ribbon(*kerb, (side * ROAD_HALF_WIDTH, side * (ROAD_HALF_WIDTH + SIDEWALK_WIDTH)), 0.15, paving)
        street.buildings(side)
        street.parked_cars(side)
        street.street_furniture(side)
    street.markings()
    end_xy, end_heading = centre.at(centre.length)
    cap = end_xy + 15 * np.array([np.cos(end_heading), np.sin(end_heading)])
    b.box((cap[0], cap[1], 15.0), (20.0, 80.0, 30.0), _facade(rng), yaw=float(end_heading))

    sun = np.array([[0.45, 0.3, 0.84], [0.0, 0.0, 1.0], [-0.5, -0.6, 0.3]])
    lighting = Lighting(
        directions=(sun / np.linalg.norm(sun, axis=1, keepdims=True)).astype(np.float32),
        weights=np.array([0.5, 0.15, 0.15], np.float32),
        ambient=0.35,
    )
    return b.build("street", lighting, fps=FPS, depth_scale=DEPTH_SCALE, max_depth=MAX_DEPTH, centreline=centre)


def required_length(frames: int, speed: float) -> float:
    """Drivable centreline length needed for ``frames`` frames at ``speed``."""
    return START + frames * STEP * speed * 1.15 + 30.0


def street_trajectory(centre: Centreline, frames: int, speed: float = 1.0, seed: int = 0) -> np.ndarray:
    """(frames, 4, 4) T_wc of a forward-looking camera 1.65 m above the centreline, about 1 m per frame
    (+-15 % smooth speed changes) at speed 1, with a slight downward tilt and tiny suspension roll/pitch."""
    rng = np.random.default_rng([seed, 5])
    phase = rng.uniform(0, 2 * np.pi, 3)
    i = np.arange(frames)
    step = STEP * speed * (1 + 0.15 * np.sin(2 * np.pi * i / 150 + phase[0]))
    s = START + np.concatenate([[0.0], np.cumsum(step[:-1])])
    if s[-1] > centre.length - _TAIL:
        raise ValueError(f"street of {centre.length:.0f} m is too short for {frames} frames at speed {speed}")
    xy, heading = centre.at(s)
    positions = np.column_stack([xy, np.full(frames, CAMERA_HEIGHT)])
    pitch = -0.03 + 0.004 * np.sin(0.7 * i + phase[1])
    roll = 0.003 * np.sin(0.5 * i + phase[2])
    return look_poses(positions, heading, pitch, roll)
