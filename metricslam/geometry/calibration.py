"""Camera calibration files -> Intrinsics.

Recognised formats (detected from the content):
- DROID/DPVO text: one line ``fx fy cx cy [k1 k2 p1 p2 [k3]]`` (OpenCV radial-tangential coefficients);
- a 3x3 K matrix written as 3 lines of 3 numbers;
- EuRoC / Kalibr ``sensor.yaml`` (``intrinsics``, ``distortion_model``, ``distortion_coefficients``, ``resolution``);
- KITTI ``calib.txt`` (odometry ``P0:`` .. ``P3:`` or raw ``P_rect_00:`` .. lines, 3x4 projection matrices).
Only the YAML file stores the image size; for the others pass ``width`` and ``height``.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import yaml

from metricslam.errors import InputError
from metricslam.geometry.camera import Intrinsics

log = logging.getLogger(__name__)

FORMATS_HELP = (
    "expected one line 'fx fy cx cy [k1 k2 p1 p2 [k3]]', a 3x3 K matrix on 3 lines, "
    "an EuRoC sensor.yaml or a KITTI calib.txt with P0..P3 lines"
)
_DISTORTION_NAMES = {
    "radial-tangential": "radtan", "radtan": "radtan", "plumb_bob": "radtan",
    "equidistant": "equidistant", "equi": "equidistant", "fisheye": "equidistant",
    "none": "none",
}
_KITTI_LINE = re.compile(r"^\s*P(?:_rect_0)?(\d)\s*:(.*)$", re.MULTILINE)


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads OpenCV FileStorage matrices (``!!opencv-matrix``) as plain mappings."""


_YamlLoader.add_constructor(
    "tag:yaml.org,2002:opencv-matrix", lambda loader, node: loader.construct_mapping(node, deep=True)
)


def read_calibration(
    path: str | os.PathLike,
    width: int | None = None,
    height: int | None = None,
    camera: int = 2,
) -> Intrinsics:
    """Intrinsics from a calibration file of any recognised format (see the module docstring).

    ``width``/``height`` give the image size for formats that do not store it; when the file stores a size that
    differs from them, InputError is raised. ``camera`` selects the projection matrix of a KITTI file (P2 default).
    """
    path = Path(path)
    text = _read_text(path)
    if path.suffix.lower() in (".yaml", ".yml") or text.lstrip().startswith("%YAML"):
        cam, _ = _parse_sensor_yaml(path, text)
    elif _KITTI_LINE.search(text):
        cam = _kitti_intrinsics(path, text, camera, width, height)
    else:
        cam = _parse_numeric(path, text, width, height)
    if width is not None and height is not None and (cam.width, cam.height) != (int(width), int(height)):
        raise InputError(
            f"{path}: calibration is for {cam.width}x{cam.height} images but the images are {width}x{height}; "
            "use the calibration of this camera at this resolution"
        )
    if cam.width > 0 and cam.height > 0 and not (0 <= cam.cx <= cam.width and 0 <= cam.cy <= cam.height):
        log.warning("warning: %s: the principal point (cx %g, cy %g) lies outside the %dx%d image; check the order "
                    "of the values (fx fy cx cy) and that the calibration is for this resolution",
                    path, cam.cx, cam.cy, cam.width, cam.height)
    return cam


def read_sensor_yaml(path: str | os.PathLike) -> tuple[Intrinsics, np.ndarray | None]:
    """EuRoC ``sensor.yaml``: the camera's intrinsics and T_BS (4x4 sensor-to-body) if the file has one."""
    path = Path(path)
    return _parse_sensor_yaml(path, _read_text(path))


def read_kitti_projections(path: str | os.PathLike) -> dict[int, np.ndarray]:
    """KITTI calibration: camera index -> 3x4 rectified projection matrix P (from P0..P3 or P_rect_0X lines)."""
    path = Path(path)
    return _kitti_projections(path, _read_text(path))


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError(f"{path}: calibration file not found; check the path ({FORMATS_HELP})")
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read calibration as text ({type(exc).__name__}); {FORMATS_HELP}") from None


def _checked(path: Path, cam_args: dict) -> Intrinsics:
    """Build Intrinsics, turning impossible values into an InputError that names the file."""
    if not (cam_args["fx"] > 0 and cam_args["fy"] > 0):
        raise InputError(
            f"{path}: focal lengths must be positive, got fx={cam_args['fx']} fy={cam_args['fy']}; fix the file"
        )
    coeffs = tuple(cam_args.get("dist_coeffs", ()))
    if not any(coeffs):
        cam_args = {**cam_args, "distortion": "none", "dist_coeffs": ()}
    try:
        return Intrinsics(**cam_args)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None


def _require_size(path: Path, width: int | None, height: int | None) -> tuple[int, int]:
    if width is None or height is None:
        raise InputError(f"{path}: this calibration format stores no image size; pass width and height")
    return int(width), int(height)


def _parse_numeric(path: Path, text: str, width: int | None, height: int | None) -> Intrinsics:
    rows = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            rows.append([float(v) for v in line.replace(",", " ").split()])
        except ValueError:
            raise InputError(f"{path}: not a number in '{line[:60]}'; {FORMATS_HELP}") from None
    if len(rows) == 1 and len(rows[0]) in (4, 8, 9):
        w, h = _require_size(path, width, height)
        v = rows[0]
        return _checked(path, dict(fx=v[0], fy=v[1], cx=v[2], cy=v[3], width=w, height=h,
                                   distortion="radtan", dist_coeffs=tuple(v[4:])))
    if len(rows) == 3 and all(len(r) == 3 for r in rows):
        K = np.asarray(rows)
        if not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0 or K[0, 1] != 0:
            raise InputError(f"{path}: K must have the form [[fx 0 cx] [0 fy cy] [0 0 1]] (no skew); fix the file")
        w, h = _require_size(path, width, height)
        return _checked(path, dict(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2], width=w, height=h))
    shape = "x".join(str(len(r)) for r in rows) if rows else "nothing"
    raise InputError(f"{path}: found {len(rows)} line(s) of numbers ({shape}); {FORMATS_HELP}")


def _parse_sensor_yaml(path: Path, text: str) -> tuple[Intrinsics, np.ndarray | None]:
    # PyYAML rejects OpenCV's '%YAML:1.0' directive, which it does not need anyway.
    body = "\n".join(line for line in text.splitlines() if not line.startswith("%"))
    try:
        data = yaml.load(body, Loader=_YamlLoader)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: invalid YAML ({str(exc).splitlines()[0]}); expected an EuRoC sensor.yaml") from None
    if isinstance(data, dict) and "intrinsics" not in data and isinstance(data.get("cam0"), dict):
        data = data["cam0"]  # Kalibr camchain: the first camera
    if not isinstance(data, dict) or "intrinsics" not in data:
        raise InputError(f"{path}: no 'intrinsics' entry; expected an EuRoC sensor.yaml with intrinsics [fu, fv, cu, cv]")
    model = str(data.get("camera_model", "pinhole")).lower()
    if model != "pinhole":
        raise InputError(f"{path}: camera_model '{model}' is not supported; calibrate the camera with the pinhole model")
    try:
        fx, fy, cx, cy = (float(v) for v in data["intrinsics"])
        width, height = (int(v) for v in data["resolution"])
        coeffs = tuple(float(v) for v in data.get("distortion_coefficients") or ())
    except (KeyError, TypeError, ValueError):
        raise InputError(
            f"{path}: needs 'intrinsics: [fu, fv, cu, cv]', 'resolution: [width, height]' and numeric "
            "'distortion_coefficients'; fix the file"
        ) from None
    name = str(data.get("distortion_model", "radial-tangential" if coeffs else "none")).lower()
    if name not in _DISTORTION_NAMES:
        raise InputError(f"{path}: distortion_model '{name}' is not supported; use radial-tangential or equidistant")
    cam = _checked(path, dict(fx=fx, fy=fy, cx=cx, cy=cy, width=width, height=height,
                              distortion=_DISTORTION_NAMES[name], dist_coeffs=coeffs))
    return cam, _matrix4(path, data.get("T_BS"))


def _matrix4(path: Path, entry: object) -> np.ndarray | None:
    if entry is None:
        return None
    values = entry.get("data") if isinstance(entry, dict) else entry
    try:
        T = np.asarray(values, dtype=np.float64).reshape(4, 4)
    except (TypeError, ValueError):
        raise InputError(f"{path}: T_BS must hold 16 numbers (a 4x4 matrix); fix the file") from None
    return T


def _kitti_projections(path: Path, text: str) -> dict[int, np.ndarray]:
    out = {}
    for match in _KITTI_LINE.finditer(text):
        try:
            values = [float(v) for v in match.group(2).split()]
        except ValueError:
            values = []
        if len(values) != 12:
            raise InputError(f"{path}: line 'P{match.group(1)}:' must hold 12 numbers (a 3x4 matrix); fix the file")
        out[int(match.group(1))] = np.asarray(values).reshape(3, 4)
    if not out:
        raise InputError(f"{path}: no P0..P3 lines; expected a KITTI calib.txt")
    return out


def _kitti_intrinsics(path: Path, text: str, camera: int, width: int | None, height: int | None) -> Intrinsics:
    projections = _kitti_projections(path, text)
    if camera not in projections:
        raise InputError(f"{path}: no P{camera} line (has {sorted(projections)}); choose another camera")
    size = re.search(rf"^\s*S_rect_0{camera}\s*:(.*)$", text, re.MULTILINE)
    if size is not None:
        width, height = (int(round(float(v))) for v in size.group(1).split()[:2])
    w, h = _require_size(path, width, height)
    P = projections[camera]
    return _checked(path, dict(fx=P[0, 0], fy=P[1, 1], cx=P[0, 2], cy=P[1, 2], width=w, height=h))
