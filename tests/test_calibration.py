"""read_calibration on every real calibration file we have, on KITTI files built here, and on bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metricslam.errors import InputError
from metricslam.geometry.calibration import read_calibration, read_kitti_projections, read_sensor_yaml
from shared_paths import DATA

CALIB_FILES = sorted(p for p in (DATA / "calib").glob("*.txt") if p.name != "SOURCE_COMMIT.txt")
EUROC_YAML = DATA / "euroc_v1_01_micro" / "mav0" / "cam0" / "sensor.yaml"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared data folder not present")

# KITTI odometry sequence 00 rectified projections (public calibration).
KITTI_00 = """P0: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 0.000000000000e+00 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P1: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 -3.861448000000e+02 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P2: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 4.538225000000e+01 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 -1.130887000000e-01 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 3.779761000000e-03
P3: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 -3.372877000000e+02 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 2.369057000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 4.915215000000e-03
Tr: 4.276802385584e-04 -9.999672484946e-01 -8.084491683471e-03 -1.198459927713e-02 -7.210626507497e-03 8.081198471645e-03 -9.999413164504e-01 -5.403984729748e-02 9.999738645903e-01 4.859485810390e-04 -7.206933692422e-03 -2.921968648686e-01
"""


def assert_one_line(exc: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(exc.value)
    assert str(path) in msg and "\n" not in msg


@needs_data
@pytest.mark.parametrize("path", CALIB_FILES, ids=[p.stem for p in CALIB_FILES])
def test_every_droid_text_file(path):
    values = np.loadtxt(path, ndmin=1)
    cam = read_calibration(path, width=640, height=480)
    np.testing.assert_allclose(cam.params, values[:4])
    assert (cam.width, cam.height) == (640, 480)
    coeffs = values[4:]
    if np.any(coeffs):
        assert cam.distortion == "radtan" and cam.is_distorted
        np.testing.assert_allclose(cam.dist_coeffs, coeffs)
    else:
        assert cam.distortion == "none" and cam.dist_coeffs == ()


@needs_data
def test_known_values():
    euroc = read_calibration(DATA / "calib" / "euroc.txt", 752, 480)
    assert euroc.dist_coeffs == (-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05)
    assert read_calibration(DATA / "calib" / "tum3.txt", 640, 480).params.tolist() == [535.4, 539.2, 320.1, 247.6]


@needs_data
def test_euroc_sensor_yaml():
    cam = read_calibration(EUROC_YAML)
    assert (cam.width, cam.height) == (752, 480)
    assert cam.params.tolist() == [458.654, 457.296, 367.215, 248.375]
    assert cam.distortion == "radtan" and cam.dist_coeffs == (-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05)
    cam2, T_BS = read_sensor_yaml(EUROC_YAML)
    assert cam2 == cam
    np.testing.assert_allclose(T_BS[0], [0.0148655429818, -0.999880929698, 0.00414029679422, -0.0216401454975])
    np.testing.assert_allclose(T_BS[:3, :3] @ T_BS[:3, :3].T, np.eye(3), atol=1e-6)
    assert read_calibration(EUROC_YAML, 752, 480) == cam
    with pytest.raises(InputError, match="752x480") as exc:
        read_calibration(EUROC_YAML, 640, 480)
    assert_one_line(exc, EUROC_YAML)


@needs_data
def test_hololens_K():
    path = DATA / "hololens_000" / "K.txt"
    cam = read_calibration(path, 540, 360)
    np.testing.assert_allclose(cam.K, np.loadtxt(path))
    assert round(cam.fx, 2) == 495.57 and cam.distortion == "none"


def test_kitti_calib_picks_P2_by_default(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text(KITTI_00)
    cam = read_calibration(path, 1241, 376)
    np.testing.assert_allclose(cam.params, [718.856, 718.856, 607.1928, 185.2157])
    assert (cam.width, cam.height) == (1241, 376) and cam.distortion == "none"
    P = read_kitti_projections(path)
    assert sorted(P) == [0, 1, 2, 3]
    np.testing.assert_allclose(P[2][:, 3], [45.38225, -0.1130887, 0.003779761])
    assert read_calibration(path, 1241, 376, camera=0).params.tolist() == P[0][[0, 1, 0, 1], [0, 1, 2, 2]].tolist()


def test_kitti_raw_calib_with_size(tmp_path):
    path = tmp_path / "calib_cam_to_cam.txt"
    path.write_text(
        "calib_time: 09-Jan-2012 13:57:47\n"
        "S_rect_02: 1.242000e+03 3.750000e+02\n"
        "P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 "
        "1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03\n"
    )
    cam = read_calibration(path)
    assert (cam.width, cam.height) == (1242, 375)
    np.testing.assert_allclose(cam.params, [721.5377, 721.5377, 609.5593, 172.854])


def test_droid_line_with_k3_and_K_matrix(tmp_path):
    line = tmp_path / "cam.txt"
    line.write_text("500 501 320 240 0.1 -0.05 0.001 0.002 0.01\n")
    cam = read_calibration(line, 640, 480)
    assert cam.distortion == "radtan" and cam.dist_coeffs == (0.1, -0.05, 0.001, 0.002, 0.01)
    K = tmp_path / "K.txt"
    K.write_text("# intrinsics\n500 0 320\n0 501 240\n0 0 1\n")
    assert read_calibration(K, 640, 480).params.tolist() == [500, 501, 320, 240]


def test_equidistant_yaml(tmp_path):
    path = tmp_path / "sensor.yaml"
    path.write_text(
        "%YAML:1.0\ncamera_model: pinhole\nintrinsics: [190.97, 190.97, 254.93, 256.89]\n"
        "distortion_model: equidistant\ndistortion_coefficients: [0.0034, 0.0007, -0.0020, 0.0002]\n"
        "resolution: [512, 512]\n"
    )
    cam, T_BS = read_sensor_yaml(path)
    assert cam.distortion == "equidistant" and cam.dist_coeffs == (0.0034, 0.0007, -0.0020, 0.0002)
    assert T_BS is None


BAD_FILES = {
    "empty.txt": ("", "found 0 line"),
    "words.txt": ("focal length 500\n", "not a number"),
    "two_lines.txt": ("500 500 320 240\n0.1 0.2 0 0\n", "found 2 line"),
    "five.txt": ("500 500 320 240 0.1\n", "found 1 line"),
    "skew.txt": ("500 3 320\n0 500 240\n0 0 1\n", "no skew"),
    "negative.txt": ("-500 500 320 240\n", "positive"),
    "kitti_short.txt": ("P2: 1 2 3\n", "12 numbers"),
    "kitti_no_p2.txt": ("P0: " + " ".join(["1"] * 12) + "\n", "no P2 line"),
    "no_intrinsics.yaml": ("camera_model: pinhole\nresolution: [10, 10]\n", "no 'intrinsics'"),
    "omni.yaml": ("camera_model: omni\nintrinsics: [1, 1, 1, 1]\nresolution: [10, 10]\n", "not supported"),
    "bad_dist.yaml": ("intrinsics: [1, 1, 1, 1]\nresolution: [10, 10]\ndistortion_model: fov\n"
                      "distortion_coefficients: [0.1]\n", "not supported"),
    "broken.yaml": ("intrinsics: [1, 1\n", "invalid YAML"),
    "binary.txt": (b"\xff\xfe\x00\x81", "cannot read"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_input_error_naming_the_file(tmp_path, name):
    content, message = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError, match=message) as exc:
        read_calibration(path, 640, 480)
    assert_one_line(exc, path)


def test_missing_file_and_missing_size(tmp_path):
    with pytest.raises(InputError, match="not found") as exc:
        read_calibration(tmp_path / "nope.txt", 640, 480)
    assert_one_line(exc, tmp_path / "nope.txt")
    path = tmp_path / "cam.txt"
    path.write_text("500 500 320 240\n")
    with pytest.raises(InputError, match="pass width and height") as exc:
        read_calibration(path)
    assert_one_line(exc, path)
