"""The SLAM config tree: each stage's BA damping from its own section, the device set in one call."""
from dataclasses import fields

from metricslam.cli import build_parser
from metricslam.cli.run import build_config, mapping_config
from metricslam.config import apply_overrides
from metricslam.io.synthetic import SyntheticSequence
from metricslam.mapping.export import MappingConfig
from metricslam.slam.config import BAOptions, SlamConfig
from metricslam.slam.system import Slam


def test_each_stage_takes_the_damping_of_its_own_section():
    cfg = apply_overrides(SlamConfig(), ["ba.lm=1", "ba.ep=2", "frontend.lm=3", "frontend.ep=4", "backend.lm=5",
                                         "backend.ep=6"])
    assert (cfg.ba_options("tracking").lm, cfg.ba_options("tracking").ep) == (1, 2)
    assert (cfg.ba_options("window").lm, cfg.ba_options("window").ep) == (3, 4)
    assert (cfg.ba_options("global").lm, cfg.ba_options("global").ep) == (5, 6)
    # Everything else is the ba section's, with alpha scaled by the prior's weight.
    window = cfg.ba_options("window", prior_weight=0.02)
    assert window.alpha == cfg.ba.alpha * 0.02 and cfg.ba_options("tracking").alpha == cfg.ba.alpha
    same = [f.name for f in fields(BAOptions) if f.name not in ("lm", "ep", "alpha")]
    assert all(getattr(window, name) == getattr(cfg.ba, name) for name in same)


def test_default_damping_per_stage():
    cfg = SlamConfig()
    assert (cfg.ba_options("tracking").lm, cfg.ba_options("tracking").ep) == (1e-4, 0.1)
    assert (cfg.ba_options("window").lm, cfg.ba_options("window").ep) == (1e-4, 0.1)
    assert (cfg.ba_options("global").lm, cfg.ba_options("global").ep) == (1e-5, 1e-2)


def test_slam_hands_each_stage_its_options():
    cfg = apply_overrides(SlamConfig(), ["frontend.lm=0.003", "backend.ep=0.07", "ba.lm=0.002"])
    slam = Slam(cfg)
    slam.track(SyntheticSequence("room", frames=1, width=128, height=96, seed=0)[0])
    assert slam.frontend.ba.lm == 0.003 and slam.backend.ba.ep == 0.07 and slam._track_opts.lm == 0.002
    assert slam.backend.ba.lm == cfg.backend.lm and slam.frontend.ba.ep == cfg.frontend.ep


def test_with_device_sets_every_device_field():
    cfg = SlamConfig().with_device("cpu")
    assert cfg.device == "cpu" and cfg.prior.device == "cpu"
    assert SlamConfig().device == "auto" and SlamConfig().prior.device is None  # the original is not changed
    mapping = MappingConfig().with_device("cpu")
    assert mapping.tsdf.device == "cpu" and mapping.cloud.device == "cpu"


def test_run_device_flag_reaches_slam_prior_and_mapping():
    args = build_parser().parse_args(["run", "video.mp4", "--out", "out", "--device", "cpu", "--prior", "none"])
    cfg = build_config(args)
    assert cfg.device == "cpu" and cfg.prior.device == "cpu"
    mapping = mapping_config(["tsdf.voxel_size=0.05"], args.device)
    assert (mapping.tsdf.device, mapping.cloud.device, mapping.tsdf.voxel_size) == ("cpu", "cpu", 0.05)
    # A --map-set naming a device wins over --device, as any later override does.
    assert mapping_config(["cloud.device=auto"], "cpu").cloud.device == "auto"
    assert mapping_config([], None).tsdf.device == "auto"
