"""Map accuracy against a reference: accuracy, completeness, precision / recall / F-score at a distance.

accuracy = mean distance from the reconstruction's points to the reference (how right what was built is);
completeness = mean distance from the reference's points to the reconstruction (how much of it was built);
precision / recall = fraction of those distances below ``threshold``; F = 2 P R / (P + R). Meshes are compared
through points sampled uniformly on their surface, so triangle sizes do not bias the numbers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import open3d as o3d
from scipy.spatial import cKDTree

from metricslam.geometry.camera import Intrinsics


@dataclass
class MapScores:
    accuracy: float  # metres
    completeness: float  # metres
    precision: float
    recall: float
    fscore: float
    threshold: float  # metres
    points: int  # reconstruction points compared
    reference_points: int

    def as_dict(self) -> dict:
        return asdict(self)


def sample_surface(vertices: np.ndarray, triangles: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` points uniformly distributed (by area) over a triangle mesh."""
    v = np.asarray(vertices, np.float64)
    tri = np.asarray(triangles, np.int64)
    if len(tri) == 0:
        return np.zeros((0, 3))
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if area.sum() <= 0:
        return np.zeros((0, 3))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tri), size=count, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(count))[:, None], rng.random(count)[:, None]
    return (1 - r1) * a[pick] + r1 * (1 - r2) * b[pick] + r1 * r2 * c[pick]


def geometry_points(geometry: o3d.geometry.TriangleMesh | o3d.geometry.PointCloud | np.ndarray,
                    spacing: float, max_points: int = 400_000, seed: int = 0) -> np.ndarray:
    """Points representing a mesh (sampled about ``spacing`` apart, at most ``max_points``) or a cloud (as is)."""
    if isinstance(geometry, np.ndarray):
        return np.asarray(geometry, np.float64).reshape(-1, 3)
    if isinstance(geometry, o3d.geometry.PointCloud):
        return np.asarray(geometry.points, np.float64)
    area = geometry.get_surface_area() if len(geometry.triangles) else 0.0
    count = int(np.clip(area / spacing**2, 1000, max_points))
    return sample_surface(np.asarray(geometry.vertices), np.asarray(geometry.triangles), count, seed)


def map_scores(points: np.ndarray, reference: np.ndarray, threshold: float = 0.05) -> MapScores:
    """Scores of reconstruction ``points`` (N, 3) against ``reference`` points (M, 3), both in metres."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    reference = np.asarray(reference, np.float64).reshape(-1, 3)
    if len(points) == 0 or len(reference) == 0:
        return MapScores(float("inf"), float("inf"), 0.0, 0.0, 0.0, threshold, len(points), len(reference))
    to_ref, _ = cKDTree(reference).query(points, workers=-1)
    to_rec, _ = cKDTree(points).query(reference, workers=-1)
    p, r = float(np.mean(to_ref < threshold)), float(np.mean(to_rec < threshold))
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return MapScores(float(to_ref.mean()), float(to_rec.mean()), p, r, f, threshold, len(points), len(reference))


def interior_mask(depth: np.ndarray, tolerance: float, margin: int) -> np.ndarray:
    """Pixels with depth that are at least ``margin`` pixels away from the image border, from pixels without depth
    and from depth discontinuities larger than ``tolerance`` (where a TSDF surface legitimately ends)."""
    valid = depth > 0
    if margin <= 0:
        return valid
    jump = np.zeros_like(valid)
    dx = np.abs(np.diff(depth, axis=1)) > tolerance
    dy = np.abs(np.diff(depth, axis=0)) > tolerance
    jump[:, 1:] |= dx
    jump[:, :-1] |= dx
    jump[1:] |= dy
    jump[:-1] |= dy
    bad = (~valid | jump).astype(np.uint8)
    bad[:margin], bad[-margin:], bad[:, :margin], bad[:, -margin:] = 1, 1, 1, 1
    bad = cv2.dilate(bad, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    return valid & (bad == 0)


def ray_coverage(mesh: o3d.geometry.TriangleMesh, camera: Intrinsics, poses_wc: np.ndarray, depths: np.ndarray,
                 tolerance: float, margin: int = 2) -> float:
    """Fraction of observed pixels (over all views) whose ray hits ``mesh`` within ``tolerance`` of their depth.

    A hole or a missing part of the surface where the views saw something lowers it: this is the test that the
    mesh is closed wherever the scene was observed. ``depths`` (V, H, W) are z-depths in metres, 0 = not observed;
    pixels within ``margin`` of the border, of unobserved pixels or of depth edges are not counted (a TSDF
    surface ends about a voxel before the edge of what was seen).
    """
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    v, u = np.mgrid[0 : camera.height, 0 : camera.width]
    rays_cam = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u, float)], -1)
    hits = total = 0
    for pose, depth in zip(poses_wc, depths):
        valid = interior_mask(depth, tolerance, margin)
        dirs = rays_cam[valid] @ pose[:3, :3].T
        origins = np.broadcast_to(pose[:3, 3], dirs.shape)
        rays = o3d.core.Tensor(np.concatenate([origins, dirs], 1).astype(np.float32))
        t_hit = scene.cast_rays(rays)["t_hit"].numpy()  # in units of the direction, whose z is 1: a z-depth
        hits += int(np.sum(np.abs(t_hit - depth[valid]) < tolerance))
        total += int(valid.sum())
    return hits / max(total, 1)
