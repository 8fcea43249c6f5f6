"""The named synthetic worlds: a scene and a camera trajectory through it, built from a seed."""
from __future__ import annotations

import numpy as np

from metricslam.io.synthetic.room import build_room, room_trajectory
from metricslam.io.synthetic.scene import Scene
from metricslam.io.synthetic.street import build_street, required_length, street_trajectory

WORLDS = ("room", "street")


def make_world(name: str, frames: int, speed: float = 1.0, seed: int = 0) -> tuple[Scene, np.ndarray]:
    """(scene, (frames, 4, 4) T_wc poses) of world ``name``; z-up world, OpenCV camera axes."""
    if name == "room":
        return build_room(seed), room_trajectory(frames, speed, seed)
    if name == "street":
        scene = build_street(seed, required_length(frames, speed))
        return scene, street_trajectory(scene.extras["centreline"], frames, speed, seed)
    raise ValueError(f"unknown synthetic world '{name}'; use one of {', '.join(WORLDS)}")
