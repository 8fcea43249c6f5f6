"""Coloured point clouds as binary little-endian PLY (readable by Open3D, MeshLab, CloudCompare)."""
from __future__ import annotations

import os

import numpy as np

from metricslam.errors import InputError
from metricslam.io.atomic import atomic_path


def write_ply(
    path: str | os.PathLike,
    points: np.ndarray,
    colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
) -> None:
    """Write N points (float, Nx3) with optional uint8 RGB colours (Nx3) and normals (Nx3), atomically."""
    points = np.asarray(points)
    n = len(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"{path}: points must be Nx3, got {points.shape}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    columns = [points]
    if normals is not None:
        normals = np.asarray(normals)
        if normals.shape != (n, 3):
            raise InputError(f"{path}: normals must be {n}x3 like the points, got {normals.shape}")
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
        columns.append(normals)
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != (n, 3) or colors.dtype != np.uint8:
            raise InputError(f"{path}: colours must be uint8 {n}x3 like the points, got {colors.dtype} {colors.shape}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        columns.append(colors)
    rows = np.empty(n, dtype=fields)
    assert rows.dtype.names is not None  # a structured dtype
    names = iter(rows.dtype.names)
    for column in columns:
        for j in range(3):
            rows[next(names)] = column[:, j]
    ply_type = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property {ply_type[t]} {name}" for name, t in fields]
    header.append("end_header")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(("\n".join(header) + "\n").encode("ascii"))
            f.write(rows.tobytes())
