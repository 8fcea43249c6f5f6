"""Intrinsics for a single image: calibration file, flags, EXIF, or a stated default guess.

Metric depth from Metric3D scales linearly with the focal length, so a wrong guess gives a wrong scale: the
default guess always comes with a warning saying how to pass the real value.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metricslam.errors import InputError
from metricslam.geometry.calibration import read_calibration
from metricslam.geometry.camera import Intrinsics

log = logging.getLogger("metricslam")

DEFAULT_FOCAL_FACTOR = 1.2  # f = 1.2 * max(W, H): a common field of view guess (about 45 degrees across)
FULL_FRAME_WIDTH_MM = 36.0

_EXIF_IFD = 0x8769
_FOCAL_LENGTH = 0x920A
_FOCAL_35MM = 0xA405
_FOCAL_PLANE_XRES = 0xA20E
_FOCAL_PLANE_UNIT = 0xA210
_PIXEL_X = 0xA002
_PIXEL_Y = 0xA003
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # EXIF FocalPlaneResolutionUnit: inch, cm, mm, micrometre


@dataclass(frozen=True)
class CameraGuess:
    """Intrinsics and where they came from: calibration, flags, exif-35mm, exif-focal-plane, exif-sensor, default."""

    intrinsics: Intrinsics
    source: str


def default_intrinsics(width: int, height: int) -> Intrinsics:
    """The stated guess: f = 1.2 * max(W, H), principal point at the image centre (W/2, H/2)."""
    f = DEFAULT_FOCAL_FACTOR * max(width, height)
    return Intrinsics(f, f, width / 2.0, height / 2.0, int(width), int(height))


def _rational(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return out if np.isfinite(out) and out > 0 else None


def intrinsics_from_exif(
    image_path: str | os.PathLike, width: int, height: int, sensor_width_mm: float | None = None
) -> CameraGuess | None:
    """Focal length from EXIF, in pixels of the ``width`` x ``height`` image; None when EXIF does not tell.

    Tried in order: FocalLengthIn35mmFilm (f_px = f35 / 36 * max(W, H)); FocalLength with
    FocalPlaneXResolution (pixels per unit on the sensor, rescaled when the image was resized); FocalLength
    with ``sensor_width_mm`` (the long side of the sensor).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_path) as img:
            exif = img.getexif().get_ifd(_EXIF_IFD)
    except (OSError, UnidentifiedImageError):
        return None
    long_side = max(width, height)
    cx, cy = width / 2.0, height / 2.0

    def make(f: float, source: str) -> CameraGuess:
        return CameraGuess(Intrinsics(f, f, cx, cy, int(width), int(height)), source)

    f35 = _rational(exif.get(_FOCAL_35MM))
    if f35 is not None:
        return make(f35 / FULL_FRAME_WIDTH_MM * long_side, "exif-35mm")
    f_mm = _rational(exif.get(_FOCAL_LENGTH))
    if f_mm is None:
        return None
    xres = _rational(exif.get(_FOCAL_PLANE_XRES))
    unit_mm = _UNIT_MM.get(int(exif.get(_FOCAL_PLANE_UNIT, 2)))
    if xres is not None and unit_mm is not None:
        f_px = f_mm * xres / unit_mm
        recorded = [r for r in (_rational(exif.get(t)) for t in (_PIXEL_X, _PIXEL_Y)) if r is not None]
        if len(recorded) == 2:
            f_px *= long_side / max(recorded)
        return make(f_px, "exif-focal-plane")
    if sensor_width_mm is not None and sensor_width_mm > 0:
        return make(f_mm / sensor_width_mm * long_side, "exif-sensor")
    return None


def intrinsics_for_image(
    image_path: str | os.PathLike | None,
    width: int,
    height: int,
    *,
    calib: str | os.PathLike | None = None,
    fx: float | None = None,
    fy: float | None = None,
    cx: float | None = None,
    cy: float | None = None,
    sensor_width_mm: float | None = None,
) -> CameraGuess:
    """Intrinsics of one image, first available of: calibration file (any format of
    metricslam.geometry.calibration), flags (--fx [--fy --cx --cy]), EXIF,
    the default guess (with a warning)."""
    if calib is not None:
        if fx is not None:
            raise InputError(f"{calib}: pass either --calib or --fx/--fy/--cx/--cy, not both")
        return CameraGuess(read_calibration(calib, width, height), "calibration")
    if fx is not None:
        if fx <= 0 or (fy is not None and fy <= 0):
            raise InputError(f"focal lengths must be positive (got fx={fx}, fy={fy}); pass them in pixels")
        K = Intrinsics(fx, fy if fy is not None else fx, width / 2.0 if cx is None else cx,
                       height / 2.0 if cy is None else cy, int(width), int(height))
        return CameraGuess(K, "flags")
    if fy is not None or cx is not None or cy is not None:
        raise InputError("--fy/--cx/--cy need --fx too; pass at least the focal length --fx in pixels")
    if image_path is not None:
        found = intrinsics_from_exif(image_path, width, height, sensor_width_mm)
        if found is not None:
            return found
    guess = default_intrinsics(width, height)
    log.warning(
        "%s: no calibration, flags or EXIF focal length; guessing fx = fy = %.1f px (1.2 x the long side), so the "
        "metric scale may be off. Pass the real value with --fx F [--fy --cx --cy] or --calib FILE",
        image_path if image_path is not None else "image", guess.fx,
    )
    return CameraGuess(guess, "default")


def guess_sequence_camera(where: str | os.PathLike, first_image: str | os.PathLike | None, width: int,
                          height: int) -> CameraGuess:
    """Intrinsics for a sequence without calibration: the first image's EXIF focal length, else the default guess.

    Either way a one-line warning says that the metric scale of the results depends on it and how to pass the
    real camera.
    """
    found = None if first_image is None else intrinsics_from_exif(first_image, width, height)
    if found is not None and first_image is not None:
        log.warning("warning: %s: no calibration; using the EXIF focal length of %s (fx = fy = %.1f px): the metric "
                    "scale of the results depends on it; pass --calib FILE for the real camera",
                    where, Path(first_image).name, found.intrinsics.fx)
        return found
    guess = default_intrinsics(width, height)
    hfov = 2.0 * np.degrees(np.arctan(width / (2.0 * guess.fx)))
    log.warning("warning: %s: no calibration and no EXIF focal length; GUESSING fx = fy = %.1f px (%.0f degree "
                "horizontal field of view): the metric scale of the results depends on this guess; pass --calib FILE "
                "('fx fy cx cy', K.txt, sensor.yaml)", where, guess.fx, hfov)
    return CameraGuess(guess, "default")
