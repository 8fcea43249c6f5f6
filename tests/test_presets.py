"""Presets: valid settings, the rule that picks one per source, and the command line's use of them."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import yaml

from metricslam.cli import main
from metricslam.config import to_dict
from metricslam.errors import InputError
from metricslam.io.synthetic import SyntheticSequence
from metricslam.slam.config import SlamConfig
from metricslam.slam.presets import (
    PRESETS,
    PresetChoice,
    choose_preset,
    frame_motion,
    keyframe_spacing_px,
    preset_config,
    preset_settings,
    resolve_preset,
)
from shared_paths import DATA

KITTI_06 = DATA / "kitti_odometry_06_first51"


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("prior", ["simulated", "none"])
def test_preset_sets_valid_keys_that_differ_from_the_defaults(name, prior):
    settings = _leaves(preset_settings(name, monocular=prior == "none"))
    assert settings
    configured = _leaves(to_dict(preset_config(name, [f"prior.kind={prior}"])))
    defaults = _leaves(to_dict(SlamConfig()))
    for key, value in settings.items():
        assert configured[key] == value
        assert defaults[key] != value, f"{name} sets {key} to its default"


def test_overrides_go_on_top_of_the_preset():
    cfg = preset_config("driving", ["prior.kind=none", "flow.preset=fast"])
    assert cfg.flow.preset == "fast" and cfg.tracking.triangulate is True


def test_monocular_section_only_without_a_prior():
    mono, metric = preset_config("driving", ["prior.kind=none"]), preset_config("driving", ["prior.kind=sensor"])
    assert mono.tracking.filter_thresh < metric.tracking.filter_thresh == SlamConfig().tracking.filter_thresh
    assert mono.tracking.triangulate and not metric.tracking.triangulate
    assert mono.frontend.fixed_poses == metric.frontend.fixed_poses == 3


def test_unknown_preset_is_a_user_error():
    with pytest.raises(InputError, match="unknown preset 'boat'"):
        preset_settings("boat")


@pytest.mark.parametrize(("layout", "expected"), [("kitti", "driving"), ("tum", "handheld"), ("euroc", "handheld")])
def test_layouts_that_say_what_the_camera_is(layout, expected):
    seq = SyntheticSequence("room", frames=2, width=64, height=48)  # never measured for these layouts
    choice = choose_preset(seq, layout)
    assert (choice.name, choice.auto) == (expected, True)
    assert choice.describe().startswith(f"preset: {expected} (auto: {layout} layout; --preset to choose)")


@pytest.mark.parametrize(("scene", "expected"), [("street", "driving"), ("room", "handheld")])
def test_measured_motion_picks_the_preset(scene, expected):
    seq = SyntheticSequence(scene, frames=14, width=256, height=192, seed=0)
    choice = choose_preset(seq, "folder")
    assert choice.name == expected, choice.reason


class _Still(SyntheticSequence):
    """A camera that never moves: every frame is the first one."""

    def __getitem__(self, i):
        return replace(super().__getitem__(0), index=i)


def test_still_camera_falls_back_to_handheld():
    choice = choose_preset(_Still("room", frames=14, width=128, height=96), "video")
    assert choice.name == "handheld" and "too little motion" in choice.reason


class _StartsLate(SyntheticSequence):
    """The street camera standing still for its first 1.2 s (12 frames at 10 Hz), then driving."""

    def __getitem__(self, i):
        return replace(super().__getitem__(max(0, i - 12)), index=i)


def test_car_standing_still_at_first_is_still_driving():
    choice = choose_preset(_StartsLate("street", frames=34, width=256, height=192, seed=0), "video")
    assert choice.name == "driving", choice.reason


class _Sliding(SyntheticSequence):
    """The first room frame sliding sideways by `step` pixels per frame."""

    step = 5

    def __getitem__(self, i):
        first = super().__getitem__(0)
        return replace(first, index=i, rgb=np.roll(first.rgb, self.step * i, axis=1))


def test_frame_motion_measures_how_far_frames_move():
    seq = _Sliding("room", frames=40, width=256, height=192, seed=0)
    assert frame_motion(seq) == pytest.approx(_Sliding.step, abs=0.5)
    # Measured at the processing size: half the width, half the motion.
    assert frame_motion(seq, image_area=128 * 96) == pytest.approx(_Sliding.step / 2, abs=0.5)
    assert frame_motion(_Still("room", frames=40, width=256, height=192)) < 0.5


@pytest.mark.parametrize("prior", ["simulated", "none"])
def test_slow_motion_settings_apply_below_one_keyframe_spacing(prior):
    spacing = keyframe_spacing_px(preset_settings("handheld", monocular=prior == "none"))
    overrides = [f"prior.kind={prior}"]
    slow = PresetChoice("handheld", "", False, frame_motion_px=0.5 * spacing)
    fast = PresetChoice("handheld", "", False, frame_motion_px=1.5 * spacing)
    assert (slow.config(overrides).flow.preset, slow.config(overrides).frontend.radius) == ("fast", 2)
    assert (fast.config(overrides).flow.preset, fast.config(overrides).frontend.radius) == ("medium", 4)
    assert "slow motion: frames move" in slow.describe() and "slow motion" not in fast.describe()
    # Frames that overshoot the spacing are checked by feature PnP on every frame; slow ones when the flow is unsure.
    assert (slow.config(overrides).tracking.pnp.below, fast.config(overrides).tracking.pnp.below) == (0.3, 1.0)
    assert slow.config(overrides).frontend.keyframe_thresh == fast.config(overrides).frontend.keyframe_thresh


def test_explicit_preset_is_not_measured():
    choice = resolve_preset("driving", _Still("room", frames=2, width=64, height=48))
    assert (choice.name, choice.auto, choice.frame_motion_px) == ("driving", False, None)  # no slow_motion section
    assert PresetChoice("driving", "", False, frame_motion_px=0.0).config().flow.preset == "medium"
    assert choice.describe() == "preset: driving (--preset)"


@pytest.mark.skipif(not KITTI_06.is_dir(), reason="needs ../shared/data/kitti_odometry_06_first51")
def test_kitti_dataset_folder_runs_with_the_driving_preset_and_config_on_top(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("flow:\n  texture: 2.0\n")
    out = tmp_path / "out"
    assert main(["run", str(KITTI_06), "--out", str(out), "--end", "8", "--no-mesh", "--quiet",
                 "--config", str(config)]) == 0
    assert "preset: driving (auto: kitti layout; --preset to choose)" in capsys.readouterr().err
    used = yaml.safe_load((out / "config.yaml").read_text())
    assert used["flow"]["texture"] == 2.0  # --config on top
    assert used["tracking"]["triangulate"] is True and used["frontend"]["keyframe_thresh"] == 2.0  # the preset
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_frames"] == 8 and np.isfinite(metrics["ate_sim3_rmse_m"])
