"""Trajectory files: TUM ('t tx ty tz qx qy qz qw'), KITTI (12 numbers, top 3x4), 4x4-per-line (16 numbers) and
EuRoC ground-truth csv ('ns, px, py, pz, qw, qx, qy, qz[, ...]': the body poses, read as evo reads them).

All poses are camera-to-world (T_wc), float64 arrays of shape (N, 4, 4).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metricslam.errors import InputError
from metricslam.geometry import se3
from metricslam.io.atomic import write_text_atomic

FORMATS = ("tum", "kitti", "matrix", "euroc")


@dataclass
class Trajectory:
    """Camera-to-world poses with optional timestamps (seconds)."""

    poses: np.ndarray  # (N, 4, 4) float64
    timestamps: np.ndarray | None = None  # (N,) float64

    def __len__(self) -> int:
        return len(self.poses)

    @property
    def positions(self) -> np.ndarray:
        return self.poses[:, :3, 3]


def _load_rows(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: trajectory file not found; check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file; expected a TUM, KITTI, 4x4 or EuRoC csv trajectory") from None
    rows, line_nos = [], []
    for line_no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            rows.append([float(v) for v in line.replace(",", " ").split()])
        except ValueError:
            raise InputError(f"{path}:{line_no}: not a number in '{line[:60]}'; expected a TUM, KITTI or 4x4 trajectory") from None
        line_nos.append(line_no)
    if not rows:
        raise InputError(f"{path}: trajectory file is empty; expected one pose per line")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise InputError(f"{path}: lines have different numbers of values {sorted(widths)}; expected one format throughout")
    values = np.asarray(rows, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if len(bad):
        raise InputError(f"{path}:{line_nos[bad[0]]}: non-finite value (nan or inf); remove or repair that pose")
    return values


def _format_for_width(path: str | os.PathLike, width: int) -> str:
    fmt = {8: "tum", 12: "kitti", 16: "matrix"}.get(width)
    if fmt is None:
        raise InputError(f"{path}: {width} values per line; expected 8 (TUM), 12 (KITTI) or 16 (4x4 matrix)")
    return fmt


def _is_euroc_csv(path: Path, rows: np.ndarray) -> bool:
    """EuRoC csv: a .csv file of at least 8 columns, timestamps in nanoseconds (evo's rule is the .csv name)."""
    return path.suffix.lower() == ".csv" and rows.shape[1] >= 8


def detect_format(path: str | os.PathLike) -> str:
    """'euroc' (.csv), else 'tum' (8 values per line), 'kitti' (12) or 'matrix' (16)."""
    rows = _load_rows(Path(path))
    return "euroc" if _is_euroc_csv(Path(path), rows) else _format_for_width(path, rows.shape[1])


def read_trajectory(path: str | os.PathLike, fmt: str = "auto") -> Trajectory:
    """Read a trajectory; ``fmt`` is 'tum', 'kitti', 'matrix', 'euroc' or 'auto' (EuRoC for .csv files, else by
    values per line)."""
    path = Path(path)
    rows = _load_rows(path)
    if fmt == "auto":
        fmt = "euroc" if _is_euroc_csv(path, rows) else _format_for_width(path, rows.shape[1])
    expected = {"tum": 8, "kitti": 12, "matrix": 16, "euroc": 8}
    if fmt not in expected:
        raise InputError(f"unknown trajectory format '{fmt}'; use one of {', '.join(FORMATS)}, auto")
    if fmt == "euroc" and rows.shape[1] >= 8:
        # ns, p xyz, q wxyz -> seconds and tx ty tz qx qy qz qw
        rows = np.concatenate([rows[:, :1] * 1e-9, rows[:, 1:4], rows[:, 5:8], rows[:, 4:5]], axis=1)
        fmt = "tum"
    if rows.shape[1] != expected[fmt]:
        raise InputError(
            f"{path}: {rows.shape[1]} values per line, but format '{fmt}' needs {expected[fmt]}; "
            "give the file's real format or 'auto'"
        )
    if fmt == "tum":
        bad = np.flatnonzero(np.linalg.norm(rows[:, 4:], axis=1) < 1e-12)
        if len(bad):
            raise InputError(
                f"{path}: pose {bad[0] + 1} has a zero quaternion; expected 'timestamp tx ty tz qx qy qz qw'"
            )
        poses = se3.pose7_to_matrix(torch.from_numpy(rows[:, 1:])).numpy()
        return Trajectory(poses, rows[:, 0].copy())
    n = len(rows)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :4] = rows[:, :12].reshape(n, 3, 4)
    if fmt == "matrix":
        poses = rows.reshape(n, 4, 4)
    return Trajectory(poses, None)


def write_tum(path: str | os.PathLike, traj: Trajectory) -> None:
    ts = traj.timestamps if traj.timestamps is not None else np.arange(len(traj), dtype=np.float64)
    p7 = se3.matrix_to_pose7(torch.from_numpy(np.ascontiguousarray(traj.poses, dtype=np.float64))).numpy()
    lines = [f"{t:.9f} " + " ".join(f"{v:.9f}" for v in p) for t, p in zip(ts, p7)]
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_kitti(path: str | os.PathLike, traj: Trajectory) -> None:
    lines = [" ".join(f"{v:.9e}" for v in T[:3, :4].reshape(-1)) for T in traj.poses]
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_matrix(path: str | os.PathLike, traj: Trajectory) -> None:
    lines = [" ".join(f"{v:.9e}" for v in T.reshape(-1)) for T in traj.poses]
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_trajectory(path: str | os.PathLike, traj: Trajectory, fmt: str) -> None:
    writers = {"tum": write_tum, "kitti": write_kitti, "matrix": write_matrix}
    if fmt not in writers:
        raise InputError(f"unknown trajectory format '{fmt}'; use one of {', '.join(writers)}")
    writers[fmt](path, traj)
