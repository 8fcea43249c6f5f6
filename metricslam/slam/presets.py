"""Presets: SlamConfig settings for a kind of camera motion, chosen from the source when the user names none.

A preset is a YAML file in metricslam/assets/presets listing only the keys it changes from SlamConfig's
defaults; its optional ``monocular`` section applies on top when there is no depth prior (prior 'none'), where
the keyframe spacing must give triangulation its parallax. ``choose_preset`` picks one by a rule: the dataset
layout when it says what the camera is (KITTI is a car; TUM RGB-D and EuRoC are hand-held or flying cameras),
otherwise the motion measured over the first seconds: a camera translating along its optical axis with little
rotation is driving, anything else hand-held.

A preset's optional ``slow_motion`` section applies when the clip's frames move less than one keyframe spacing:
``frame_motion`` measures how far the fast-moving part of a frame (the 90th percentile of its flow) travels from one
frame to the next, at the processing size, and the keyframe spacing is ``frontend.keyframe_thresh`` grid pixels.
Below it, keyframes sit one spacing apart and the graph's edges stay short; above it, every frame overshoots the
spacing and the edges span more than the preset's ``slow_motion`` settings are made for.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
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
_MOTION_SECONDS = 10.0  # frame_motion reads consecutive pairs spread over this first stretch of the clip
_MOTION_PAIRS = 12


@dataclass(frozen=True)
class PresetChoice:
    name: str
    reason: str  # why this preset, for the start-up line
    auto: bool  # chosen by the rule (not by the user)
    frame_motion_px: float | None = None  # frame_motion of the source (None: not measured)

    def slow_motion(self, monocular: bool = False) -> bool:
        """Whether the preset's slow_motion section applies: the frames move less than one keyframe spacing."""
        if self.frame_motion_px is None or not _read_preset(self.name).get("slow_motion"):
            return False
        return self.frame_motion_px < keyframe_spacing_px(preset_settings(self.name, monocular))

    def settings(self, monocular: bool = False) -> dict:
        """The keys this choice sets: the preset's, its monocular section with ``monocular``, then its slow_motion
        section where it applies."""
        return preset_settings(self.name, monocular, self.slow_motion(monocular))

    def config(self, overrides: list[str] | None = None) -> SlamConfig:
        """SlamConfig with this choice applied, then ``key=value`` overrides (monocular: the result has no prior)."""
        return preset_config(self.name, overrides, self.frame_motion_px)

    def describe(self, monocular: bool = False) -> str:
        how = f"auto: {self.reason}; --preset to choose" if self.auto else "--preset"
        line = f"preset: {self.name} ({how})"
        if self.slow_motion(monocular):
            spacing = keyframe_spacing_px(preset_settings(self.name, monocular))
            line += f"; slow motion: frames move {self.frame_motion_px:.0f} px < keyframe spacing {spacing:.0f} px"
        return line


def _read_preset(name: str) -> dict:
    if name not in PRESETS:
        raise InputError(f"unknown preset '{name}'; use one of {', '.join(PRESETS)} (or auto)")
    text = (resources.files("metricslam.assets") / "presets" / f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def preset_settings(name: str, monocular: bool = False, slow_motion: bool = False) -> dict:
    """The keys preset ``name`` sets, as a nested dict (config overrides); with ``monocular``, its monocular
    section merged on top, then with ``slow_motion`` its slow_motion section."""
    settings = _read_preset(name)
    mono = settings.pop("monocular", None) or {}
    slow = settings.pop("slow_motion", None) or {}
    if monocular:
        settings = deep_merge(settings, mono)
    return deep_merge(settings, slow) if slow_motion else settings


def keyframe_spacing_px(settings: dict) -> float:
    """The keyframe spacing of SlamConfig with ``settings`` applied, in processing-resolution pixels."""
    cfg = load_config(SlamConfig, None, None, base=settings)
    return cfg.frontend.keyframe_thresh * cfg.stride


def _grey_frames(sequence: Sequence, area: int) -> tuple[Callable[[int], np.ndarray], float]:
    """A reader of frame i as a grey image of about ``area`` pixels (never enlarged), and its scale factor."""
    cam = sequence.intrinsics
    s = min(1.0, float(np.sqrt(area / (cam.width * cam.height))))
    w, h = max(16, round(cam.width * s)), max(16, round(cam.height * s))

    def grey(i: int) -> np.ndarray:
        rgb = sequence[i].rgb
        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
        return cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)

    return grey, s


def frame_motion(sequence: Sequence, image_area: int = SlamConfig.image_area) -> float | None:
    """How far the fast-moving part of a frame travels to the next one: the median over consecutive frame pairs
    spread over the clip's first seconds of the 90th percentile of the pairs' dense flow, in pixels at the
    processing size ``image_area``; None for a single frame."""
    if len(sequence) < 2:
        return None
    grey, _ = _grey_frames(sequence, image_area)
    times = np.asarray(sequence.timestamps)
    last = max(1, min(len(sequence) - 1, int(np.searchsorted(times, times[0] + _MOTION_SECONDS))))
    firsts = np.unique(np.linspace(0, last - 1, _MOTION_PAIRS).round().astype(int))
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    fast_part = [np.percentile(np.linalg.norm(flow.calc(grey(i), grey(i + 1), None), axis=2), 90) for i in firsts]
    return float(np.median(fast_part))


def forward_motion(sequence: Sequence, max_seconds: float = 1.0) -> float | None:
    """Median |t_z| of the camera's direction of travel between start frames in the first seconds and frames up
    to ``max_seconds`` after each (essential matrix of dense flow), or None when the camera does not move enough
    to tell."""
    cam = sequence.intrinsics
    grey, s = _grey_frames(sequence, _MEASURE_AREA)
    h, w = grey(0).shape
    K = torch.tensor([cam.fx * s, cam.fy * s, (cam.cx + 0.5) * s - 0.5, (cam.cy + 0.5) * s - 0.5], dtype=torch.float64)
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


def resolve_preset(requested: str, sequence: Sequence, layout: str | None = None,
                   image_area: int = SlamConfig.image_area) -> PresetChoice:
    """``requested`` ('auto' or a preset name) as a choice; 'auto' applies ``choose_preset``. Either way the frames'
    motion is measured (at the processing size ``image_area``) when the preset has a slow_motion section."""
    if requested == "auto":
        return choose_preset(sequence, layout, image_area)
    return _with_motion(PresetChoice(requested, "", auto=False), sequence, image_area)


def preset_config(name: str, overrides: list[str] | None = None,
                  frame_motion_px: float | None = None) -> SlamConfig:
    """SlamConfig with preset ``name`` applied, then ``key=value`` overrides (the Python API's way to a preset);
    the preset's monocular section applies when the result has no depth prior, its slow_motion section when
    ``frame_motion_px`` (``frame_motion`` of the source) is below the keyframe spacing."""
    monocular = load_config(SlamConfig, None, overrides).prior.kind == "none"
    choice = PresetChoice(name, "", auto=False, frame_motion_px=frame_motion_px)
    return load_config(SlamConfig, None, overrides, base=choice.settings(monocular))


def _with_motion(choice: PresetChoice, sequence: Sequence, image_area: int) -> PresetChoice:
    if not _read_preset(choice.name).get("slow_motion"):
        return choice
    return replace(choice, frame_motion_px=frame_motion(sequence, image_area))


def choose_preset(sequence: Sequence, layout: str | None = None,
                  image_area: int = SlamConfig.image_area) -> PresetChoice:
    """The preset for ``sequence`` by the rule of this module's docstring (``layout``: detect_layout's answer;
    ``image_area``: the processing size the frames' motion is measured at)."""
    if layout in LAYOUT_PRESETS:
        choice = PresetChoice(LAYOUT_PRESETS[layout], f"{layout} layout", True)
    elif (forward := forward_motion(sequence)) is None:
        choice = PresetChoice("handheld", "too little motion in the first seconds to measure", True)
    elif forward >= DRIVING_MIN_FORWARD:
        choice = PresetChoice("driving", f"forward motion along the optical axis ({forward:.2f})", True)
    else:
        choice = PresetChoice("handheld", f"free camera motion (forward share {forward:.2f})", True)
    return _with_motion(choice, sequence, image_area)
