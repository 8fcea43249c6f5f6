from dataclasses import dataclass, field

import pytest

from metricslam.config import ConfigError, apply_overrides, load_config, save_config, to_dict


@dataclass
class Inner:
    window: int = 25
    thresh: float = 2.4
    mode: str = "classical"


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    enabled: bool = True
    sizes: tuple[int, int] = (384, 512)
    name: str | None = None


def test_overrides_are_typed():
    cfg = apply_overrides(Outer(), ["inner.window=10", "enabled=false", "sizes=[240, 320]", "name=room"])
    assert cfg.inner.window == 10 and isinstance(cfg.inner.window, int)
    assert cfg.enabled is False
    assert cfg.sizes == (240, 320)
    assert cfg.name == "room"


def test_unknown_key_names_valid_keys():
    with pytest.raises(ConfigError, match="valid keys"):
        apply_overrides(Outer(), ["inner.windw=3"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(Outer(), ["inner.window"])
    with pytest.raises(ConfigError, match="whole number"):
        apply_overrides(Outer(), ["inner.window=2.5"])


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(Outer(), ["inner.thresh=3.5"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(Outer, tmp_path / "c.yaml", ["inner.mode=droid"])
    assert again.inner.thresh == 3.5 and again.inner.mode == "droid"
    assert to_dict(again)["sizes"] == [384, 512]


def test_partial_yaml_keeps_defaults(tmp_path):
    (tmp_path / "p.yaml").write_text("inner:\n  window: 7\n")
    cfg = load_config(Outer, tmp_path / "p.yaml")
    assert cfg.inner.window == 7 and cfg.inner.thresh == 2.4


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(Outer, tmp_path / "nope.yaml")
    assert "\n" not in str(err.value) and "nope.yaml" in str(err.value)
