"""metricslam.io.trajectory: TUM / KITTI / 4x4 files, format detection, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from metricslam.errors import InputError
from metricslam.geometry import se3
from metricslam.io.trajectory import Trajectory, detect_format, read_trajectory, write_trajectory
from shared_paths import DATA

EVO_DATA = DATA / "trajectories" / "evo_test_data"


def random_poses(n: int, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    xi = torch.randn(n, 6, generator=g, dtype=torch.float64) * torch.tensor([5.0, 5, 5, 1, 1, 1], dtype=torch.float64)
    return se3.se3_exp(xi).numpy()


@pytest.mark.parametrize("fmt", ["tum", "kitti", "matrix"])
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    poses = random_poses(20)
    stamps = 1305031102.0 + 0.033 * np.arange(20)
    path = tmp_path / f"traj_{fmt}.txt"
    write_trajectory(path, Trajectory(poses, stamps), fmt)
    assert detect_format(path) == fmt
    back = read_trajectory(path)  # auto
    np.testing.assert_allclose(back.poses, poses, atol=1e-8)
    if fmt == "tum":
        np.testing.assert_allclose(back.timestamps, stamps, rtol=0, atol=1e-8)
    else:
        assert back.timestamps is None
    assert np.allclose(back.poses[:, 3], [0, 0, 0, 1])


def test_tum_without_timestamps_writes_frame_indices(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    write_trajectory(path, Trajectory(random_poses(4)), "tum")
    np.testing.assert_array_equal(read_trajectory(path, "tum").timestamps, [0, 1, 2, 3])


def test_tum_quaternion_order_is_xyzw(tmp_path: Path) -> None:
    # 90 degrees about z: (qx, qy, qz, qw) = (0, 0, sin 45, cos 45); position (1, 2, 3).
    path = tmp_path / "q.txt"
    h = np.sqrt(0.5)
    path.write_text(f"# comment\n\n0.5 1 2 3 0 0 {h} {h}\n1.5,1,2,3,0,0,0,2\n")
    traj = read_trajectory(path)
    np.testing.assert_allclose(traj.poses[0, :3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(traj.poses[0, :3, 3], [1, 2, 3])
    np.testing.assert_allclose(traj.poses[1, :3, :3], np.eye(3), atol=1e-12)  # unnormalised quaternion
    np.testing.assert_array_equal(traj.timestamps, [0.5, 1.5])


@pytest.mark.skipif(not EVO_DATA.is_dir(), reason="shared data not available")
def test_matches_evo_readers() -> None:
    from evo.tools import file_interface

    tum = EVO_DATA / "freiburg1_xyz-rgbdslam.txt"
    ours, theirs = read_trajectory(tum), file_interface.read_tum_trajectory_file(str(tum))
    np.testing.assert_allclose(ours.poses, np.stack(theirs.poses_se3), atol=1e-12)
    np.testing.assert_array_equal(ours.timestamps, theirs.timestamps)
    kitti = EVO_DATA / "KITTI_00_ORB.txt"
    ours, theirs = read_trajectory(kitti), file_interface.read_kitti_poses_file(str(kitti))
    np.testing.assert_array_equal(ours.poses, np.stack(theirs.poses_se3))


@pytest.mark.skipif(not (DATA / "hololens_000").is_dir(), reason="shared data not available")
def test_reads_4x4_per_line_ground_truth() -> None:
    traj = read_trajectory(DATA / "hololens_000" / "poses.txt")
    assert len(traj) == 200 and traj.timestamps is None
    R = traj.poses[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    steps = np.linalg.norm(np.diff(traj.positions, axis=0), axis=1)
    assert 10 < steps.sum() < 20  # about 15.5 m path (data README)


@pytest.mark.parametrize(
    "content, fmt, expected",
    [
        ("", "auto", "empty"),
        ("1 2 3 x 5 6 7 8\n", "auto", "not a number"),
        ("1 2 3 4 5 6 7 8\n1 2 3\n", "auto", "different numbers"),
        ("1 2 3 4 5 6 7\n", "auto", "7 values per line"),
        ("0 1 2 3 0 0 0 1\n", "kitti", "format 'kitti' needs 12"),
        ("0 1 2 3 0 0 0 1\n", "bogus", "unknown trajectory format"),
        ("0 1 2 3 0 0 0 1\n1 1 nan 3 0 0 0 1\n", "auto", ":2: non-finite"),
        ("0 1 2 3 0 0 0 0\n", "tum", "zero quaternion"),
    ],
)
def test_bad_files_raise_one_line_input_errors(tmp_path: Path, content: str, fmt: str, expected: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(InputError, match=expected) as info:
        read_trajectory(path, fmt)
    assert "\n" not in str(info.value)


def test_missing_binary_and_unknown_writer(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_trajectory(tmp_path / "nope.txt")
    (tmp_path / "img.png").write_bytes(bytes(range(256)))
    with pytest.raises(InputError, match="img.png: not a text file"):
        read_trajectory(tmp_path / "img.png")
    with pytest.raises(InputError, match="unknown trajectory format"):
        write_trajectory(tmp_path / "x.txt", Trajectory(random_poses(2)), "csv")
