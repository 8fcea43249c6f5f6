"""The SLAM system's configuration: one dataclass per component, nested into SlamConfig.

configs/slam/*.yaml are these dataclasses written out; ``metricslam run --set section.key=value`` overrides.
Pixel thresholds are in grid pixels (1/stride of the processing resolution), as in DROID-SLAM.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from metricslam.config import to_dict
from metricslam.depth.priors import PriorConfig
from metricslam.slam.ba import BAOptions
from metricslam.slam.correspondence.classical import FlowConfig
from metricslam.slam.correspondence.factory import CorrespondenceName
from metricslam.slam.pnp import PnpConfig
from metricslam.slam.rgbd_refine import RgbdRefineConfig


@dataclass
class TrackingConfig:
    """Per-frame motion filter and tracking against the last keyframe."""

    # Keyframe spacing and iteration counts are set for speed at 384x512 (evaluation/bench_slam.py): filter and
    # keyframe thresholds 4.5 -> 6, tracking and window iters 3 -> 2, final global BA 6 -> 3 iters, PnP retry
    # below 60 -> 30 % confident: street 500 frames 8.6 -> 19+ frames/s, KITTI t_err 0.83 -> 0.79 %; room 300
    # frames 21 -> 35 frames/s, ATE 1.6 -> 1.1 cm. Fast hand-held motion needs the denser setting (the handheld preset).
    filter_thresh: float = 6.0  # mean flow (grid px) to the last keyframe that makes a new keyframe
    iters: int = 2  # motion-only GN steps per frame
    min_confident: float = 0.1  # fraction of confident grid pixels below which tracking has failed
    reinit_after: int = 3  # consecutive failures before re-initialising on a trackable frame
    # A monocular segment starts when two views see the scene under this median parallax (degrees); new
    # keyframes without a prior triangulate their depth where the rays meet at a quarter of it or more.
    bootstrap_parallax: float = 1.0
    # ... unless the flow grows to this multiple of filter_thresh first (mostly rotating camera): then it starts
    # from a constant depth.
    bootstrap_give_up: float = 3.0
    # New keyframes without a prior start from the depth triangulated against the previous keyframe (else from
    # the previous keyframe's median inverse depth).
    triangulate: bool = False
    # Sparse feature PnP against the keyframe's depth: a second start for the flow when the one from the
    # constant-velocity prediction leaves few confident pixels (pnp.below), and a pose when the flow fails.
    pnp: PnpConfig = field(default_factory=PnpConfig)


@dataclass
class FrontendConfig:
    window: int = 10  # keyframes optimised after each new keyframe
    radius: int = 2  # temporal edges to the previous `radius` keyframes (both directions)
    proximity_thresh: float = 12.0  # extra edges inside the window between keyframes closer than this (grid px)
    iters: int = 2  # GN steps per new keyframe (per update with updates > 1)
    updates: int = 1  # correspondence updates per new keyframe, each followed by `iters` GN steps (droid: 4 x 2)
    fixed_poses: int = 1  # oldest window poses held constant (see Frontend.fixed)
    warmup: int = 8  # the first `warmup` keyframes use `warmup_iters`
    warmup_iters: int = 8
    keyframe_thresh: float = 6.0  # a keyframe closer than this (grid px) to its predecessor is removed
    lm: float = 1e-4
    ep: float = 0.1


@dataclass
class BackendConfig:
    enabled: bool = True
    every: int = 40  # look for new loop edges after this many new keyframes: global BA if found, and at the end
    radius: int = 2
    # Loop/proximity edges between keyframes closer than this (grid px). 16 -> 32 px with up to 10 edges per
    # keyframe: hololens_000 ATE sensor 3.2 -> 2.9 cm, simulated 10.1 -> 9.1 cm, none (Sim3) 27.3 -> 26.0 cm;
    # room 1.66 -> 1.61 cm and street t_err 0.92 -> 0.91 %, at the same speed.
    proximity_thresh: float = 32.0
    nms: int = 2  # suppress proximity edges within this many keyframes of a chosen one
    max_edges_per_keyframe: int = 10
    iters: int = 6  # GN steps per periodic run
    final_iters: int = 3  # GN steps at the end
    lm: float = 1e-5
    ep: float = 1e-2


@dataclass
class FillerConfig:
    iters: int = 3  # motion-only GN steps per frame against its keyframe at the end
    chunk: int = 256  # frames solved together


@dataclass
class SlamConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # torch threads on CPU (0 = leave torch's setting). BA steps are many small tensor ops: one thread avoids
    # hand-off stalls that made 2 threads several times slower on a busy 2-core machine; OpenCV keeps its own.
    threads: int = 1
    image_area: int = 384 * 512  # processing resolution (pixels; aspect kept, cropped to a multiple of stride)
    upscale: bool = False  # allow processing above the input resolution
    stride: int = 8  # BA grid = processing resolution / stride
    correspondence: CorrespondenceName = "classical"  # classical (dense flow, CPU) | droid (learned, droid.pth)
    droid_weights: str | None = None  # droid.pth path or registry name for correspondence=droid
    flow: FlowConfig = field(default_factory=FlowConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    filler: FillerConfig = field(default_factory=FillerConfig)
    # With a depth sensor, direct RGB-D odometry places the non-keyframes and, with a pose graph, refines the BA's
    # keyframe poses before the filler (flow alone is about half a pixel off on real images).
    rgbd_refine: RgbdRefineConfig = field(default_factory=RgbdRefineConfig)
    # Flow that is wrong but forward-backward consistent (periodic texture, large motion) is common: a Cauchy
    # kernel on the residual keeps it from dragging the solution. The prior's weight alpha is scaled by
    # prior.weight (network priors are trusted far less per pixel than sensor depth). The scale anchor gives the
    # prior's per-keyframe scale the weight its per-pixel shape does not get. Synthetic street, 500 frames: KITTI
    # t_err 3.5 % without it, 0.84 % at 0.005, 0.86 % at 0.01. Room, 300 frames, ATE: seed 0 1.0 cm without,
    # 1.7 cm at 0.005, 8.2 cm at 0.01; seed 1 1.9 cm at 0.005, 4.8 cm at 0.01: stronger, the simulated prior's
    # per-frame scale noise (about 4 %) starts to fight the flow.
    ba: BAOptions = field(default_factory=lambda: BAOptions(robust="cauchy", robust_px=0.5, scale_anchor=0.005))
    prior_grid_edge: float = 0.15  # relative inverse-depth spread inside a grid cell at which prior confidence halves


DEFAULT_CONFIG_HEADER = """\
# SlamConfig written out (metricslam/slam/config.py and the component configs hold the meaning of every key).
# Presets (metricslam/assets/presets) and --config files list only the keys they change; `metricslam run` merges
# them onto these defaults, and `--set key=value` overrides on top. Generated: after changing a default, run
#   metricslam config --write configs/slam/default.yaml
"""


def default_config_yaml() -> str:
    """The default SlamConfig as YAML (configs/slam/default.yaml), with a header on what it is."""
    return DEFAULT_CONFIG_HEADER + yaml.safe_dump(to_dict(SlamConfig()), sort_keys=False)
