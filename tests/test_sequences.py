"""Sequence readers on the real clips in ../shared/data and on KITTI / TUM / EuRoC / folder / video layouts built here."""
from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from metricslam.errors import InputError
from metricslam.geometry import se3
from metricslam.geometry.calibration import read_sensor_yaml
from metricslam.geometry.camera import Intrinsics
from metricslam.io.images import list_images
from metricslam.io.sequences import Sequence, detect_layout, open_sequence
from metricslam.io.sequences.association import associate_nearest, interpolate_poses
from metricslam.io.sequences.tum import FREIBURG
from metricslam.io.trajectory import Trajectory, read_trajectory, write_kitti, write_matrix, write_tum
from shared_paths import DATA

HOLO = DATA / "hololens_000"
EUROC = DATA / "euroc_v1_01_micro"
KITTI_GT = DATA / "trajectories" / "kitti_odom_eval" / "dataset" / "kitti_odom" / "gt_poses" / "00.txt"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared data folder not present")

P2_LINE = "7.188560e+02 0 6.071928e+02 4.538225e+01 0 7.188560e+02 1.852157e+02 -1.130887e-01 0 0 1 3.779761e-03"
P0_LINE = "7.188560e+02 0 6.071928e+02 0 0 7.188560e+02 1.852157e+02 0 0 0 1 0"


def write_images(folder: Path, n: int, width: int, height: int, names: list[str] | None = None, seed: int = 0) -> list[np.ndarray]:
    """n random RGB images (returned in RGB order) written as PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        name = names[i] if names else f"{i:05d}"
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        images.append(rgb)
    return images


def assert_one_line(exc: pytest.ExceptionInfo, *names: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    for name in names:
        assert name in msg, msg


# ---------------------------------------------------------------- real data


@needs_data
def test_hololens_folder_as_is():
    seq = open_sequence(HOLO)
    assert isinstance(seq, Sequence) and detect_layout(HOLO) == "folder"
    assert len(seq) == 200 and seq.name == "hololens_000" and seq.has_depth and seq.has_gt
    cam = seq.intrinsics
    assert round(cam.fx, 2) == 495.57 and (cam.width, cam.height) == (540, 360)
    np.testing.assert_allclose(seq.timestamps, np.arange(200) / 30.0)
    poses = np.loadtxt(HOLO / "poses.txt").reshape(-1, 4, 4)
    frame = seq[5]
    assert frame.name == "00008" and frame.index == 5 and frame.rgb.shape == (360, 540, 3) and frame.rgb.dtype == np.uint8
    np.testing.assert_array_equal(frame.rgb, cv2.imread(str(HOLO / "images" / "00008.png"))[..., ::-1])
    np.testing.assert_allclose(frame.pose_wc, poses[5])
    raw = cv2.imread(str(HOLO / "depth" / "00008.png"), cv2.IMREAD_ANYDEPTH)
    assert raw.dtype == np.uint16
    np.testing.assert_allclose(frame.depth, raw / 1000.0, rtol=1e-6)
    assert frame.depth.dtype == np.float32 and 0.3 < np.median(frame.depth[frame.depth > 0]) < 10
    gt = seq.gt_trajectory()
    np.testing.assert_allclose(gt.poses, poses)
    np.testing.assert_allclose(gt.timestamps, seq.timestamps)


@needs_data
def test_hololens_selection():
    poses = np.loadtxt(HOLO / "poses.txt").reshape(-1, 4, 4)
    seq = open_sequence(HOLO, start=10, end=50, stride=4)
    assert len(seq) == 10
    assert [seq[i].name for i in (0, 1, -1)] == ["00013", "00017", "00049"]
    np.testing.assert_allclose(seq.timestamps, np.arange(10, 50, 4) / 30.0)
    np.testing.assert_allclose(seq.gt_trajectory().poses, poses[10:50:4])
    np.testing.assert_allclose(seq[3].pose_wc, poses[22])
    frames = list(seq)
    assert [f.index for f in frames] == list(range(10)) and frames[2].name == "00021"
    with pytest.raises(IndexError):
        seq[10]


@needs_data
def test_hololens_resize_intrinsics_and_depth_follow():
    full = open_sequence(HOLO, end=3)
    half = open_sequence(HOLO, end=3, resize=(270, 180))
    cam = half.intrinsics
    assert cam == full.intrinsics.resized(270, 180)
    np.testing.assert_allclose([cam.fx, cam.cx], [full.intrinsics.fx / 2, (full.intrinsics.cx + 0.5) / 2 - 0.5])
    f, h = full[1], half[1]
    assert h.rgb.shape == (180, 270, 3) and h.depth.shape == (180, 270) and h.intrinsics == cam
    # Nearest at pixel centres: output pixel x samples source pixel 2x + 1 (never an interpolated depth).
    np.testing.assert_array_equal(h.depth, f.depth[1::2, 1::2])
    np.testing.assert_allclose(h.rgb.astype(float).mean(), f.rgb.astype(float).mean(), atol=1.0)
    # Area form: about 40000 pixels with the aspect ratio kept.
    small = open_sequence(HOLO, end=2, resize=40000)
    w, hh = small.intrinsics.width, small.intrinsics.height
    assert abs(w * hh - 40000) < 300 and abs(w / hh - 1.5) < 0.01 and small[0].rgb.shape == (hh, w, 3)


@needs_data
def test_euroc_micro():
    seq = open_sequence(EUROC)
    assert detect_layout(EUROC) == "euroc" and len(seq) == 95 and not seq.has_depth
    raw_cam, _ = read_sensor_yaml(EUROC / "mav0" / "cam0" / "sensor.yaml")
    assert raw_cam.is_distorted and seq.intrinsics == raw_cam.undistorted() and seq.intrinsics.distortion == "none"
    names = sorted(p.stem for p in (EUROC / "mav0" / "cam0" / "data").glob("*.png"))
    np.testing.assert_allclose(seq.timestamps, np.array([int(n) for n in names]) * 1e-9, rtol=0, atol=1e-6)
    frame = seq[30]
    raw = cv2.imread(str(EUROC / "mav0" / "cam0" / "data" / f"{names[30]}.png"))[..., ::-1]
    np.testing.assert_array_equal(frame.rgb, raw_cam.undistort_image(np.ascontiguousarray(raw)))
    assert np.abs(frame.rgb.astype(int) - raw).mean() > 5  # undistortion changed the image
    # Ground truth covers the last 74 frames only.
    gt_file = read_trajectory(EUROC / "mav0" / "groundtruth_cam0_tum.txt")
    has = [seq[i].pose_wc is not None for i in (0, 20, 21, 94)]
    assert has == [False, False, True, True]
    gt = seq.gt_trajectory()
    assert len(gt) == 74
    np.testing.assert_allclose(gt.timestamps, gt_file.timestamps, atol=1e-6, rtol=0)
    np.testing.assert_allclose(gt.poses, gt_file.poses, atol=1e-9)
    np.testing.assert_allclose(seq[21].pose_wc, gt_file.poses[0], atol=1e-9)


@needs_data
def test_euroc_body_groundtruth_csv_is_moved_to_cam0(tmp_path):
    """A state_groundtruth_estimate0/data.csv built from the camera GT must read back as that camera GT."""
    mav = tmp_path / "V1_01_mini" / "mav0"
    cam_gt = read_trajectory(EUROC / "mav0" / "groundtruth_cam0_tum.txt")
    _, T_BS = read_sensor_yaml(EUROC / "mav0" / "cam0" / "sensor.yaml")
    names = sorted(p.stem for p in (EUROC / "mav0" / "cam0" / "data").glob("*.png"))[21:25]
    write_images(mav / "cam0" / "data", 4, 752, 480, names=names)
    (mav / "cam0" / "sensor.yaml").write_text((EUROC / "mav0" / "cam0" / "sensor.yaml").read_text())
    T_WB = cam_gt.poses @ np.linalg.inv(T_BS)
    p7 = se3.matrix_to_pose7(torch.from_numpy(T_WB)).numpy()
    ns = [int(round(t * 1e9 / 1000)) * 1000 for t in cam_gt.timestamps]  # microsecond-exact ns
    lines = ["#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], q_RS_y [], q_RS_z []"]
    lines += [f"{n},{p[0]:.12f},{p[1]:.12f},{p[2]:.12f},{p[6]:.12f},{p[3]:.12f},{p[4]:.12f},{p[5]:.12f}" for n, p in zip(ns, p7)]
    (mav / "state_groundtruth_estimate0").mkdir()
    (mav / "state_groundtruth_estimate0" / "data.csv").write_text("\n".join(lines) + "\n")
    seq = open_sequence(tmp_path / "V1_01_mini")
    assert seq.name == "V1_01_mini" and len(seq) == 4
    np.testing.assert_allclose(seq.gt_trajectory().poses, cam_gt.poses[:4], atol=1e-9)
    assert open_sequence(mav).name == "V1_01_mini"  # mav0 itself is accepted too


# ---------------------------------------------------------------- KITTI


def make_kitti(tmp_path: Path, n: int, poses: np.ndarray | None, poses_beside: bool = False) -> Path:
    seq = tmp_path / "dataset" / "sequences" / "00"
    write_images(seq / "image_2", n, 124, 38, names=[f"{i:06d}" for i in range(n)])
    (seq / "calib.txt").write_text(f"P0: {P0_LINE}\nP1: {P0_LINE}\nP2: {P2_LINE}\nP3: {P2_LINE}\n")
    (seq / "times.txt").write_text("\n".join(f"{0.1036 * i:.6e}" for i in range(n)) + "\n")
    if poses is not None:
        folder = seq / "poses" if poses_beside else tmp_path / "dataset" / "poses"
        folder.mkdir(parents=True)
        write_kitti(folder / "00.txt", Trajectory(poses))
    return seq


@needs_data
@pytest.mark.parametrize("poses_beside", [False, True])
def test_kitti_layout_with_real_ground_truth(tmp_path, poses_beside):
    gt0 = read_trajectory(KITTI_GT, fmt="kitti").poses[:12]
    root = make_kitti(tmp_path, 12, gt0, poses_beside)
    seq = open_sequence(root)
    assert detect_layout(root) == "kitti" and seq.name == "kitti_00" and len(seq) == 12 and seq.has_gt
    np.testing.assert_allclose(seq.intrinsics.params, [718.856, 718.856, 607.1928, 185.2157])
    np.testing.assert_allclose(seq.timestamps, 0.1036 * np.arange(12), atol=1e-9)
    gt = seq.gt_trajectory().poses
    # Camera 2 has camera 0's orientation and sits t = K^-1 P2[:, 3] behind it in camera coordinates.
    t = np.array([45.38225 / 718.856 - 607.1928 * 3.779761e-03 / 718.856,
                  -0.1130887 / 718.856 - 185.2157 * 3.779761e-03 / 718.856, 3.779761e-03])
    np.testing.assert_allclose(gt[:, :3, :3], gt0[:, :3, :3])
    np.testing.assert_allclose(gt[:, :3, 3], gt0[:, :3, 3] - np.einsum("nij,j->ni", gt0[:, :3, :3], t), atol=1e-9)
    assert abs(np.linalg.norm(gt[0, :3, 3] - gt0[0, :3, 3]) - 0.0599) < 1e-3
    # Relative motion between frames is the real one (about 0.86 m per frame at the start of 00).
    assert abs(np.linalg.norm(gt[1, :3, 3] - gt[0, :3, 3]) - 0.859) < 0.01
    frame = seq[4]
    assert frame.name == "000004" and frame.rgb.shape == (38, 124, 3)


@needs_data
def test_kitti_ground_truth_row_count_must_match(tmp_path):
    root = make_kitti(tmp_path, 5, None)
    (tmp_path / "dataset" / "poses").mkdir()
    (tmp_path / "dataset" / "poses" / "00.txt").write_text(KITTI_GT.read_text())
    with pytest.raises(InputError, match="4541 poses for 5 images") as exc:
        open_sequence(root)
    assert_one_line(exc, "00.txt")


def test_kitti_without_ground_truth(tmp_path):
    root = make_kitti(tmp_path, 3, None)
    seq = open_sequence(root)
    assert not seq.has_gt and seq.gt_trajectory() is None and seq[0].pose_wc is None


# ---------------------------------------------------------------- TUM


def tum_pose(t: np.ndarray) -> np.ndarray:
    """A smooth analytic camera trajectory."""
    xi = np.stack([np.sin(t), np.cos(0.7 * t), 0.2 * t, 0.3 * np.sin(t), 0.2 * t, 0.1 * np.cos(t)], -1)
    return se3.se3_exp(torch.from_numpy(xi)).numpy()


def make_tum(tmp_path: Path, name: str, n: int = 6) -> tuple[Path, np.ndarray, list[np.ndarray]]:
    root = tmp_path / name
    rgb_t = 100.0 + np.arange(n) / 30.0
    depth_t = rgb_t + 0.004
    depth_t[2] += 0.05  # this frame has no depth within 0.02 s
    names = [f"{t:.6f}" for t in rgb_t]
    images = write_images(root / "rgb", n, 640, 480, names=names)
    (root / "depth").mkdir()
    depths = []
    for i, t in enumerate(depth_t):
        d = np.random.default_rng(i).integers(2000, 20000, (480, 640)).astype(np.uint16)
        cv2.imwrite(str(root / "depth" / f"{t:.6f}.png"), d)
        depths.append(d)
    (root / "rgb.txt").write_text("# color images\n# file: x\n# timestamp filename\n"
                                  + "".join(f"{t:.6f} rgb/{t:.6f}.png\n" for t in rgb_t))
    (root / "depth.txt").write_text("# depth\n" + "".join(f"{t:.6f} depth/{t:.6f}.png\n" for t in depth_t))
    gt_t = np.arange(100.06, 100.0 + n / 30.0 + 0.05, 0.01)  # starts 0.027 s after the second frame
    write_tum(root / "groundtruth.txt", Trajectory(tum_pose(gt_t), gt_t))
    return root, rgb_t, images + depths


def test_tum_freiburg3_depth_association_and_interpolated_gt(tmp_path):
    root, rgb_t, arrays = make_tum(tmp_path, "rgbd_dataset_freiburg3_office")
    seq = open_sequence(root)
    assert detect_layout(root) == "tum" and len(seq) == 6 and seq.has_depth and seq.has_gt
    assert seq.intrinsics == FREIBURG["3"] and seq.intrinsics.params.tolist() == [535.4, 539.2, 320.1, 247.6]
    np.testing.assert_allclose(seq.timestamps, rgb_t)
    images, depths = arrays[:6], arrays[6:]
    f = seq[1]
    np.testing.assert_array_equal(f.rgb, images[1])
    np.testing.assert_allclose(f.depth, depths[1] / 5000.0, rtol=1e-6)
    assert seq[2].depth is None  # nearest depth is 0.054 s away
    assert seq[0].pose_wc is None and seq[1].pose_wc is None  # before the first ground-truth sample
    for i in (2, 3, 5):
        expected = tum_pose(rgb_t[i:i + 1])[0]
        np.testing.assert_allclose(seq[i].pose_wc[:3, 3], expected[:3, 3], atol=2e-4)
        R_err = seq[i].pose_wc[:3, :3].T @ expected[:3, :3]
        assert np.degrees(np.arccos(np.clip((np.trace(R_err) - 1) / 2, -1, 1))) < 0.01
    assert len(seq.gt_trajectory()) == 4


def test_tum_freiburg1_is_undistorted(tmp_path):
    root, _, arrays = make_tum(tmp_path, "rgbd_dataset_freiburg1_xyz", n=3)
    seq = open_sequence(root)
    assert FREIBURG["1"].is_distorted and seq.intrinsics == FREIBURG["1"].undistorted()
    f = seq[0]
    np.testing.assert_array_equal(f.rgb, FREIBURG["1"].undistort_image(arrays[0]))
    np.testing.assert_array_equal(f.depth, FREIBURG["1"].undistort_image(arrays[3] / np.float32(5000), interpolation=cv2.INTER_NEAREST))


def test_tum_unknown_camera_needs_calib(tmp_path):
    root, _, _ = make_tum(tmp_path, "my_kinect_recording", n=3)
    with pytest.raises(InputError, match="no calibration") as exc:
        open_sequence(root)
    assert_one_line(exc, str(root), "--calib FILE")
    (tmp_path / "cam.txt").write_text("520 520 320 240\n")
    assert open_sequence(root, calib=tmp_path / "cam.txt").intrinsics.fx == 520


def test_pose_interpolation_and_nearest_fallback():
    t = np.array([10.0, 10.01, 10.02, 10.5])
    poses = tum_pose(t)
    q = np.array([10.005, 9.995, 9.97, 10.015, 10.3, 10.49])
    out = interpolate_poses(t, poses, q)
    np.testing.assert_allclose(out[0, :3, 3], (poses[0, :3, 3] + poses[1, :3, 3]) / 2, atol=1e-12)
    halfway = poses[0, :3, :3] @ se3.so3_exp(torch.from_numpy(0.5 * se3.so3_log(torch.from_numpy(poses[0, :3, :3].T @ poses[1, :3, :3])).numpy())).numpy()
    np.testing.assert_allclose(out[0, :3, :3], halfway, atol=1e-12)
    np.testing.assert_allclose(out[1], poses[0])  # 5 ms before the first sample: nearest
    assert np.isnan(out[2]).all()  # 30 ms before: nothing
    np.testing.assert_allclose(out[3, :3, 3], (poses[1, :3, 3] + poses[2, :3, 3]) / 2, atol=1e-12)
    assert np.isnan(out[4]).all()  # inside a 0.48 s hole in the ground truth: not bridged
    np.testing.assert_allclose(out[5], poses[3])  # 10 ms from a sample: nearest
    np.testing.assert_array_equal(associate_nearest(np.array([1.0, 2.0, 3.5]), np.array([3.49, 0.99, 9.0]), 0.02), [1, -1, 0])


# ---------------------------------------------------------------- generic folder


def make_folder(tmp_path: Path, n: int = 5, width: int = 48, height: int = 32) -> Path:
    root = tmp_path / "clip"
    write_images(root / "images", n, width, height)
    (root / "K.txt").write_text(f"40 0 {width / 2}\n0 41 {height / 2}\n0 0 1\n")
    return root


def test_folder_depth_npy_scale_times_and_tum_gt(tmp_path):
    root = make_folder(tmp_path)
    (root / "depth").mkdir()
    depth = np.random.default_rng(0).uniform(0.5, 4, (5, 32, 48)).astype(np.float32)
    for i in range(5):
        np.save(root / "depth" / f"{i:05d}.npy", depth[i])
    times = 50 + 0.2 * np.arange(5)
    (root / "times.txt").write_text("\n".join(map(str, times)))
    gt_t = times[1:] + 0.001
    write_tum(root / "poses.txt", Trajectory(tum_pose(gt_t), gt_t))
    seq = open_sequence(root)
    np.testing.assert_allclose(seq.timestamps, times)
    np.testing.assert_array_equal(seq[2].depth, depth[2])
    assert seq[0].pose_wc is None and len(seq.gt_trajectory()) == 4
    np.testing.assert_allclose(seq[3].pose_wc, tum_pose(gt_t[2:3])[0], atol=1e-9)


def test_folder_png_depth_scale_file_and_kitti_gt(tmp_path):
    root = make_folder(tmp_path, n=3)
    (root / "depth").mkdir()
    raw = np.full((32, 48), 512, np.uint16)
    for i in range(3):
        cv2.imwrite(str(root / "depth" / f"{i:05d}.png"), raw)
    (root / "depth_scale.txt").write_text("256\n")
    poses = tum_pose(np.arange(3) * 0.1)
    write_kitti(root / "poses.txt", Trajectory(poses))
    seq = open_sequence(root)
    assert np.all(seq[0].depth == 2.0)
    np.testing.assert_allclose(seq.gt_trajectory().poses, poses, atol=1e-8)
    assert open_sequence(root, depth_scale=512)[0].depth.max() == 1.0


def test_folder_calib_txt_with_distortion(tmp_path):
    root = tmp_path / "clip"
    images = write_images(root / "images", 2, 376, 240)
    (root / "calib.txt").write_text("229.3 228.6 183.4 123.9 -0.2834 0.0740 0.0002 0.00002\n")
    seq = open_sequence(root)
    cam = Intrinsics(229.3, 228.6, 183.4, 123.9, 376, 240, "radtan", (-0.2834, 0.0740, 0.0002, 0.00002))
    assert seq.intrinsics == cam.undistorted()
    np.testing.assert_array_equal(seq[1].rgb, cam.undistort_image(images[1]))


def test_explicit_overrides_win(tmp_path):
    root = make_folder(tmp_path, n=4)
    other = Intrinsics(60, 60, 24, 16, 48, 32)
    assert open_sequence(root, calib=other).intrinsics == other
    depth_dir = tmp_path / "predicted"
    depth_dir.mkdir()
    for i in range(4):
        cv2.imwrite(str(depth_dir / f"{i:05d}.png"), np.full((32, 48), 100 * (i + 1), np.uint16))
    poses = tum_pose(np.arange(4) * 0.1)
    write_matrix(tmp_path / "gt.txt", Trajectory(poses))
    seq = open_sequence(root, depth=depth_dir, depth_scale=100, gt=tmp_path / "gt.txt", layout="folder")
    assert seq.has_depth and np.all(seq[2].depth == 3.0)
    np.testing.assert_allclose(seq[3].pose_wc, poses[3], atol=1e-8)


def test_plain_folder_of_images(tmp_path):
    images = write_images(tmp_path / "shots", 3, 40, 30)
    (tmp_path / "shots" / "calib.txt").write_text("35 35 20 15\n")
    assert detect_layout(tmp_path / "shots") == "folder"
    seq = open_sequence(tmp_path / "shots")
    assert len(seq) == 3 and not seq.has_depth and not seq.has_gt and seq.gt_trajectory() is None
    np.testing.assert_array_equal(seq[2].rgb, images[2])


def test_every_image_suffix_the_depth_command_takes_is_a_sequence_frame(tmp_path):
    """One suffix list for single images and sequences: a folder of .bmp frames opens as a sequence."""
    folder = tmp_path / "bmps"
    folder.mkdir()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (30, 40, 3), dtype=np.uint8) for _ in range(2)]
    for i, rgb in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.bmp"), rgb[..., ::-1])
    (folder / "calib.txt").write_text("35 35 20 15\n")
    assert list_images(folder) == [folder / "000.bmp", folder / "001.bmp"]
    seq = open_sequence(folder)
    assert len(seq) == 2
    np.testing.assert_array_equal(seq[1].rgb, frames[1])
    (tmp_path / "empty").mkdir()
    assert list_images(tmp_path / "empty", required=False) == []
    with pytest.raises(InputError, match=r"no images \(.png, .jpg, .jpeg, .bmp"):
        list_images(tmp_path / "empty")


# ---------------------------------------------------------------- video


def write_video(path: Path, n: int, fps: float) -> list[np.ndarray]:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    frames = []
    for i in range(n):
        rgb = np.zeros((48, 64, 3), np.uint8)
        rgb[:, :, 0] = 10 * i  # frame number readable from the red channel despite compression
        rgb[10:30, 5 + 2 * i:25 + 2 * i, 1] = 200
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        frames.append(rgb)
    writer.release()
    return frames


def test_video_file(tmp_path):
    video = tmp_path / "walk.avi"
    frames = write_video(video, 20, fps=15.0)
    (tmp_path / "phone.txt").write_text("60 60 32 24\n")
    assert detect_layout(video) == "video"
    with pytest.raises(InputError, match="--calib FILE") as exc:
        open_sequence(video)
    assert_one_line(exc, str(video))
    seq = open_sequence(video, calib=tmp_path / "phone.txt")
    assert len(seq) == 20 and seq.name == "walk" and seq.intrinsics.fx == 60
    np.testing.assert_allclose(seq.timestamps, np.arange(20) / 15.0)
    decoded = [f.rgb for f in seq]
    for i, rgb in enumerate(decoded):
        assert abs(float(rgb[..., 0].mean()) - 10 * i) < 3  # the right frame, in order
        assert np.abs(rgb.astype(int) - frames[i]).mean() < 4
    # Random access (backwards, and a long jump forwards) returns the same decoded frames.
    for i in (17, 3, 3, 19, 0):
        np.testing.assert_array_equal(seq[i].rgb, decoded[i])
    # A pickled sequence (e.g. sent to a DataLoader worker) reopens the video on first use.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(seq))[6].rgb, decoded[6])
    sub = open_sequence(video, calib=tmp_path / "phone.txt", start=2, stride=5, resize=(32, 24))
    assert len(sub) == 4 and sub[1].rgb.shape == (24, 32, 3) and sub.intrinsics.fx == 30
    np.testing.assert_allclose(sub.timestamps, np.array([2, 7, 12, 17]) / 15.0)
    assert abs(float(sub[3].rgb[..., 0].mean()) - 170) < 3


# ---------------------------------------------------------------- errors


def test_missing_calibration(tmp_path):
    root = tmp_path / "clip"
    write_images(root / "images", 2, 16, 16)
    with pytest.raises(InputError, match="no calibration") as exc:
        open_sequence(root)
    assert_one_line(exc, str(root), "--calib FILE")


def test_empty_folder(tmp_path):
    (tmp_path / "clip" / "images").mkdir(parents=True)
    with pytest.raises(InputError, match="no images") as exc:
        open_sequence(tmp_path / "clip")
    assert_one_line(exc, "images")


def test_unreadable_image(tmp_path):
    root = make_folder(tmp_path, n=4)
    (root / "images" / "00002.png").write_bytes(b"not a png")
    seq = open_sequence(root)
    seq[1]
    with pytest.raises(InputError, match="cannot read image") as exc:
        seq[2]
    assert_one_line(exc, "00002.png")
    (root / "images" / "00000.png").write_bytes(b"")
    with pytest.raises(InputError, match="cannot read image"):
        open_sequence(root)


def test_mixed_image_sizes(tmp_path):
    root = make_folder(tmp_path, n=4)
    write_images(root / "images", 1, 50, 32, names=["00003"])
    seq = open_sequence(root)
    with pytest.raises(InputError, match="same size") as exc:
        seq[3]
    assert_one_line(exc, "00003.png", "00000.png", "50x32", "48x32")


def test_depth_folder_mismatch(tmp_path):
    root = make_folder(tmp_path, n=3)
    (root / "depth").mkdir()
    for name in ("00000", "00001", "00007"):
        cv2.imwrite(str(root / "depth" / f"{name}.png"), np.zeros((32, 48), np.uint16))
    with pytest.raises(InputError, match="00002") as exc:
        open_sequence(root)
    assert_one_line(exc, "depth", "1 of the 3 selected images")
    cv2.imwrite(str(root / "depth" / "00002.png"), np.zeros((32, 48), np.uint16))
    with pytest.raises(InputError, match="4 depth maps for 3 images"):
        open_sequence(root)
    (root / "depth" / "00007.png").unlink()
    cv2.imwrite(str(root / "depth" / "00002.png"), np.zeros((16, 48), np.uint16))
    seq = open_sequence(root)
    with pytest.raises(InputError, match="pixel-aligned") as exc:
        seq[2]
    assert_one_line(exc, "00002.png")


def test_ground_truth_row_count(tmp_path):
    root = make_folder(tmp_path, n=4)
    write_kitti(root / "poses.txt", Trajectory(tum_pose(np.arange(3) * 0.1)))
    with pytest.raises(InputError, match="3 poses for 4 images") as exc:
        open_sequence(root)
    assert_one_line(exc, "poses.txt")


def test_ground_truth_timestamps_must_overlap(tmp_path):
    root = make_folder(tmp_path, n=3)
    t = 1e6 + np.arange(3.0)
    write_tum(tmp_path / "gt.txt", Trajectory(tum_pose(t), t))
    with pytest.raises(InputError, match="same clock") as exc:
        open_sequence(root, gt=tmp_path / "gt.txt")
    assert_one_line(exc, "gt.txt")


def test_times_count_mismatch(tmp_path):
    root = make_folder(tmp_path, n=3)
    (root / "times.txt").write_text("0\n0.1\n")
    with pytest.raises(InputError, match="2 timestamps for 3 images") as exc:
        open_sequence(root)
    assert_one_line(exc, "times.txt")


def test_calibration_size_mismatch(tmp_path):
    root = make_folder(tmp_path, n=2)
    with pytest.raises(InputError, match="64x48") as exc:
        open_sequence(root, calib=Intrinsics(60, 60, 32, 24, 64, 48))
    assert_one_line(exc, str(root))


def test_layout_detection_errors(tmp_path):
    with pytest.raises(InputError, match="no such file") as exc:
        detect_layout(tmp_path / "missing")
    assert_one_line(exc, "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not a video"):
        open_sequence(tmp_path / "notes.txt")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="cannot tell the layout"):
        open_sequence(tmp_path / "stuff")
    with pytest.raises(InputError, match="unknown layout"):
        open_sequence(tmp_path / "stuff", layout="colmap")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="cannot open") as exc:
        open_sequence(broken)
    assert_one_line(exc, "broken.mp4")


def test_bad_options(tmp_path):
    root = make_folder(tmp_path, n=3)
    with pytest.raises(InputError, match="stride"):
        open_sequence(root, stride=0)
    with pytest.raises(InputError, match="select none"):
        open_sequence(root, start=5)
    with pytest.raises(InputError, match="resize"):
        open_sequence(root, resize=(0, 10))
    with pytest.raises(InputError, match="depth_scale"):
        open_sequence(root, depth_scale=0)
