"""Intrinsics: resize / crop / pad keep projections consistent with the image operation; undistortion models."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from metricslam.geometry.camera import Intrinsics

CAM = Intrinsics(fx=180.0, fy=175.0, cx=101.3, cy=77.8, width=200, height=160)
POINTS = np.array([[0.05, -0.02, 1.0], [-0.4, 0.3, 2.0], [0.6, 0.35, 1.5], [-0.2, -0.25, 0.9]])
EUROC = Intrinsics(458.654, 457.296, 367.215, 248.375, 752, 480, "radtan",
                   (-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05))
# TUM-VI cam0 (Kannala-Brandt / equidistant), a strong fisheye.
TUMVI = Intrinsics(190.97847715128717, 190.9733070521226, 254.93170605935475, 256.8974428996504, 512, 512,
                   "equidistant", (0.0034823894022493434, 0.0007150348452162257, -0.0020532361418706202, 0.00020293673591811182))


def project(cam: Intrinsics, X: np.ndarray) -> np.ndarray:
    return np.stack([cam.fx * X[:, 0] / X[:, 2] + cam.cx, cam.fy * X[:, 1] / X[:, 2] + cam.cy], -1)


def blob_image(cam: Intrinsics, uv: np.ndarray, sigma: float = 2.5) -> np.ndarray:
    v, u = np.mgrid[0:cam.height, 0:cam.width].astype(np.float64)
    return np.exp(-((u - uv[0]) ** 2 + (v - uv[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def centroid(img: np.ndarray) -> np.ndarray:
    v, u = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    w = img.astype(np.float64)
    return np.array([(w * u).sum() / w.sum(), (w * v).sum() / w.sum()])


def distort_radtan(cam: Intrinsics, uv: np.ndarray) -> np.ndarray:
    """The radial-tangential model written out (OpenCV / EuRoC convention)."""
    k1, k2, p1, p2, *rest = cam.dist_coeffs
    k3 = rest[0] if rest else 0.0
    x, y = (uv[:, 0] - cam.cx) / cam.fx, (uv[:, 1] - cam.cy) / cam.fy
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([cam.fx * xd + cam.cx, cam.fy * yd + cam.cy], -1)


def distort_equidistant(cam: Intrinsics, uv: np.ndarray) -> np.ndarray:
    """The equidistant (Kannala-Brandt) model written out."""
    k1, k2, k3, k4 = cam.dist_coeffs
    x, y = (uv[:, 0] - cam.cx) / cam.fx, (uv[:, 1] - cam.cy) / cam.fy
    r = np.hypot(x, y)
    theta = np.arctan(r)
    theta_d = theta * (1 + k1 * theta**2 + k2 * theta**4 + k3 * theta**6 + k4 * theta**8)
    s = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
    return np.stack([cam.fx * x * s + cam.cx, cam.fy * y * s + cam.cy], -1)


DISTORT = {"radtan": distort_radtan, "equidistant": distort_equidistant}


def test_K_round_trip():
    K = CAM.K
    assert K.shape == (3, 3) and K[0, 0] == CAM.fx and K[1, 2] == CAM.cy and K[2, 2] == 1
    assert Intrinsics.from_K(K, CAM.width, CAM.height) == CAM
    cam = Intrinsics.from_K(EUROC.K, 752, 480, "radtan", list(EUROC.dist_coeffs))
    assert cam == EUROC and hash(cam) == hash(EUROC)


def test_invalid_models_are_rejected():
    with pytest.raises(ValueError, match="unknown distortion"):
        Intrinsics(1, 1, 0, 0, 10, 10, "fov", (0.1,))
    with pytest.raises(ValueError, match="coefficients"):
        Intrinsics(1, 1, 0, 0, 10, 10, "equidistant", (0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="non-zero"):
        Intrinsics(1, 1, 0, 0, 10, 10, "none", (0.1, 0, 0, 0))


@pytest.mark.parametrize("size,interp", [((100, 80), cv2.INTER_AREA), ((137, 91), cv2.INTER_AREA),
                                         ((340, 272), cv2.INTER_LINEAR), ((311, 190), cv2.INTER_LINEAR)])
def test_resized_intrinsics_follow_cv2_resize(size, interp):
    new = CAM.resized(*size)
    assert (new.width, new.height) == size
    for X in POINTS:
        img = cv2.resize(blob_image(CAM, project(CAM, X[None])[0]), size, interpolation=interp)
        np.testing.assert_allclose(centroid(img), project(new, X[None])[0], atol=0.03)


def test_scaled_matches_resized():
    assert CAM.scaled(0.5) == CAM.resized(100, 80)


def test_cropped_and_padded_intrinsics_follow_the_image():
    cropped = CAM.cropped(left=30, top=20, width=140, height=110)
    padded = CAM.padded(left=7, top=11, right=5, bottom=3)
    assert (padded.width, padded.height) == (212, 174)
    for X in POINTS[:2]:
        img = blob_image(CAM, project(CAM, X[None])[0])
        np.testing.assert_allclose(centroid(img[20:130, 30:170]), project(cropped, X[None])[0], atol=0.01)
        img_p = cv2.copyMakeBorder(img, 11, 3, 7, 5, cv2.BORDER_CONSTANT, value=0)
        np.testing.assert_allclose(centroid(img_p), project(padded, X[None])[0], atol=0.01)


@pytest.mark.parametrize("cam", [EUROC, EUROC.scaled(0.5), TUMVI], ids=["radtan", "radtan_half", "equidistant"])
def test_undistortion_maps_sample_the_distorted_image_where_the_model_says(cam):
    map_x, map_y, new = cam.undistortion_maps()
    assert new.distortion == "none" and np.allclose(new.K, cam.K) and (new.width, new.height) == (cam.width, cam.height)
    assert map_x.shape == (cam.height, cam.width)
    rng = np.random.default_rng(0)
    uv = np.stack([rng.integers(0, cam.width, 500), rng.integers(0, cam.height, 500)], -1)
    expected = DISTORT[cam.distortion](cam, uv.astype(np.float64))
    got = np.stack([map_x[uv[:, 1], uv[:, 0]], map_y[uv[:, 1], uv[:, 0]]], -1)
    np.testing.assert_allclose(got, expected, atol=2e-3)


@pytest.mark.parametrize("cam", [EUROC, TUMVI], ids=["radtan", "equidistant"])
def test_undistort_points_inverts_the_model(cam):
    rng = np.random.default_rng(1)
    margin = 0.1
    uv = np.stack([rng.uniform(margin * cam.width, (1 - margin) * cam.width, 300),
                   rng.uniform(margin * cam.height, (1 - margin) * cam.height, 300)], -1)
    distorted = DISTORT[cam.distortion](cam, uv)
    assert np.abs(distorted - uv).max() > 5  # the model does move these points
    np.testing.assert_allclose(cam.undistort_points(distorted), uv, atol=1e-6)


def test_undistort_points_into_a_new_camera():
    new = EUROC.undistorted().resized(376, 240)
    uv = np.array([[100.0, 100.0], [600.0, 400.0]])
    np.testing.assert_allclose(EUROC.undistort_points(DISTORT["radtan"](EUROC, uv), new=new),
                               (uv + 0.5) * 0.5 - 0.5, atol=1e-6)


@pytest.mark.parametrize("cam", [EUROC.scaled(0.5), TUMVI.scaled(0.5)], ids=["radtan", "equidistant"])
def test_undistort_image_recovers_a_pattern(cam):
    def pattern(uv: np.ndarray) -> np.ndarray:  # smooth function of undistorted pixel coordinates
        return 0.5 + 0.4 * np.sin(uv[..., 0] / 6.0) * np.cos(uv[..., 1] / 7.0)

    v, u = np.mgrid[0:cam.height, 0:cam.width].astype(np.float64)
    pixels = np.stack([u, v], -1).reshape(-1, 2)
    # Distorted image: each distorted pixel shows the pattern at its undistorted position.
    distorted = pattern(cam.undistort_points(pixels)).reshape(cam.height, cam.width).astype(np.float32)
    out = cam.undistort_image(distorted)
    truth = pattern(np.stack([u, v], -1))
    inner = (slice(cam.height // 5, -cam.height // 5), slice(cam.width // 5, -cam.width // 5))
    err = np.abs(out - truth)[inner]
    assert err.max() < 0.02
    assert np.abs(distorted - truth)[inner].mean() > 10 * err.mean()  # undistortion did real work


def test_undistort_image_depth_nearest_and_identity():
    depth = np.random.default_rng(2).uniform(0.5, 5, (EUROC.height, EUROC.width)).astype(np.float32)
    out = EUROC.undistort_image(depth, interpolation=cv2.INTER_NEAREST)
    inside = out > 0
    assert inside.mean() > 0.9
    assert np.isin(out[inside], depth).all()  # nearest: no invented values
    pinhole = EUROC.undistorted()
    np.testing.assert_array_equal(pinhole.undistort_image(depth), depth)
    with pytest.raises(ValueError, match="752x480"):
        EUROC.undistort_image(depth[:100])


def test_maps_are_cached_and_read_only():
    a = EUROC.undistortion_maps()
    b = EUROC.undistortion_maps()
    assert a[0] is b[0]
    with pytest.raises(ValueError):
        a[0][0, 0] = 1.0
