"""Camera poses from heading angles in the z-up synthetic world, OpenCV camera axes (x right, y down, z forward)."""
from __future__ import annotations

import numpy as np


def look_poses(positions: np.ndarray, yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray | None = None) -> np.ndarray:
    """(N, 4, 4) float64 T_wc for cameras at ``positions`` (N, 3) looking along heading ``yaw`` (rad, from +x
    towards +y), tilted up by ``pitch`` and rolled clockwise (as seen by the camera) by ``roll``."""
    yaw = np.asarray(yaw, np.float64)
    pitch = np.asarray(pitch, np.float64)
    roll = np.zeros_like(yaw) if roll is None else np.asarray(roll, np.float64)
    forward = np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], axis=-1)
    right = np.stack([np.sin(yaw), -np.cos(yaw), np.zeros_like(yaw)], axis=-1)
    down = np.cross(forward, right)
    c, s = np.cos(roll)[:, None], np.sin(roll)[:, None]
    right, down = c * right + s * down, c * down - s * right
    poses = np.tile(np.eye(4), (len(yaw), 1, 1))
    poses[:, :3, 0], poses[:, :3, 1], poses[:, :3, 2] = right, down, forward
    poses[:, :3, 3] = positions
    return poses
