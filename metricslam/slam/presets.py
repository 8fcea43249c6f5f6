"""Presets: SlamConfig settings for a kind of camera motion, chosen from the source when the user names none.

A preset is a YAML file in metricslam/assets/presets listing only the keys it changes from SlamConfig's
defaults; its optional ``monocular`` section applies on top when there is no depth prior (prior 'none'), where
the keyframe spacing must give triangulation its parallax. ``choose_preset`` picks one by a rule: the dataset layout when it says what the camera is (KITTI is a
car; TUM RGB-D and EuRoC are hand-held or flying cameras), otherwise the motion measured over the first seconds:
a camera translating along its optical axis with little rotation is driving, anything else hand-held.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import cv2
import numpy as np
import torch
import yaml

from metricslam.config import deep_merge, load_config
from metricslam.errors import InputError
from metricslam.io.sequences.base import Sequence
from metricslam.slam.config import SlamConfig
from metricslam.slam.two_view import essential_pose

PRESETS = ("handheld", "driving")
LAYOUT_PRESETS = {"kitti": "driving", "tum": "handheld", "euroc": "handheld"}
# Forward motion: the median |t_z| of the unit translation between the first frame and frames up to ~1 s later.
# Cars sit at 0.99+; a walking head or hand-held camera at 0.8-0.95 (it sways and turns).
DRIVING_MIN_FORWARD = 0.98
_MEASURE_AREA = 320 * 240  # frames are measured at about this size: enough for the direction of motion
_MEASURE_GAPS = (1, 2, 3, 5, 8, 12)  # frame gaps from each start frame, kept within a second of it
_MEASURE_STARTS_S = (0.0, 1.0, 2.0)  # start frames at these times: a car may stand still for the first second


@dataclass(frozen=True)
class PresetChoice:
    name: str
    reason: str  # why this preset, for the start-up line
    auto: bool  # chosen by the rule (not by the user)

    def describe(self) -> str:
        how = f"auto: {self.reason}; --preset to choose" if self.auto else "--preset"
        return f"preset: {self.name} ({how})"


def preset_settings(name: str, monocular: bool = False) -> dict:
    """The keys preset ``name`` sets, as a nested dict (config overrides); with ``monocular``, its monocular
    section merged on top."""
    if name not in PRESETS:
        raise InputError(f"unknown preset '{name}'; use one of {', '.join(PRESETS)} (or auto)")
    text = (resources.files("metricslam.assets") / "presets" / f"{name}.yaml").read_text()
    settings = yaml.safe_load(text) or {}
    mono = settings.pop("monocular", None) or {}
    return deep_merge(settings, mono) if monocular else settings


def forward_motion(sequence: Sequence, max_seconds: float = 1.0) -> float | None:
    """Median |t_z| of the camera's direction of travel between start frames in the first seconds and frames up
    to ``max_seconds`` after each (essential matrix of dense flow), or None when the camera does not move enough
    to tell."""
    cam = sequence.intrinsics
    s = min(1.0, float(np.sqrt(_MEASURE_AREA / (cam.width * cam.height))))
    w, h = max(16, round(cam.width * s)), max(16, round(cam.height * s))
    K = torch.tensor([cam.fx * s, cam.fy * s, (cam.cx + 0.5) * s - 0.5, (cam.cy + 0.5) * s - 0.5], dtype=torch.float64)

    def grey(i: int) -> np.ndarray:
        rgb = sequence[i].rgb
        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
        return cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)

    times = np.asarray(sequence.timestamps)
    starts = sorted({int(np.searchsorted(times, times[0] + t)) for t in _MEASURE_STARTS_S} - {len(sequence)})
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    ys, xs = np.mgrid[4:h:8, 4:w:8]
    src = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    forward = []
    for a in starts:
        first = grey(a)
        for k in (a + g for g in _MEASURE_GAPS if a + g < len(sequence) and times[a + g] - times[a] <= max_seconds):
            d = flow.calc(first, grey(k), None)[ys.ravel(), xs.ravel()]
            found = essential_pose(src, src + d, K, threshold_px=1.0)
            # Sub-pixel motion or pure rotation: no direction of travel to read.
            if found is not None and found.parallax_deg > 0.2:
                forward.append(abs(float(found.T_ji[2, 3])))
    return float(np.median(forward)) if forward else None


def resolve_preset(requested: str, sequence: Sequence, layout: str | None = None) -> PresetChoice:
    """``requested`` ('auto' or a preset name) as a choice; 'auto' applies ``choose_preset``."""
    if requested == "auto":
        return choose_preset(sequence, layout)
    preset_settings(requested)  # fails early on an unknown name
    return PresetChoice(requested, "", auto=False)


def preset_config(name: str, overrides: list[str] | None = None) -> SlamConfig:
    """SlamConfig with preset ``name`` applied, then ``key=value`` overrides (the Python API's way to a preset);
    the preset's monocular section applies when the result has no depth prior."""
    monocular = load_config(SlamConfig, None, overrides).prior.kind == "none"
    return load_config(SlamConfig, None, overrides, base=preset_settings(name, monocular))


def choose_preset(sequence: Sequence, layout: str | None = None) -> PresetChoice:
    """The preset for ``sequence`` by the rule of this module's docstring (``layout``: detect_layout's answer)."""
    if layout in LAYOUT_PRESETS:
        return PresetChoice(LAYOUT_PRESETS[layout], f"{layout} layout", True)
    forward = forward_motion(sequence)
    if forward is None:
        return PresetChoice("handheld", "too little motion in the first seconds to measure", True)
    if forward >= DRIVING_MIN_FORWARD:
        return PresetChoice("driving", f"forward motion along the optical axis ({forward:.2f})", True)
    return PresetChoice("handheld", f"free camera motion (forward share {forward:.2f})", True)
