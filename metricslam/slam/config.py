"""The SLAM system's configuration, in one place: SlamConfig and every section it nests, one dataclass per
component (the components import their section from here).

configs/slam/*.yaml are these dataclasses written out; ``metricslam run --set section.key=value`` overrides.
Pixel thresholds are in grid pixels (1/stride of the processing resolution), as in DROID-SLAM, unless a section
says processing-resolution pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, get_args

import yaml

from metricslam.config import to_dict
from metricslam.depth.simulated import SimulatedPriorConfig
from metricslam.errors import MetricSlamError
from metricslam.geometry.projective import MIN_DEPTH

__all__ = [
    "BAOptions", "BAStage", "BackendConfig", "CorrespondenceName", "DisPreset", "FillerConfig", "FlowConfig", "FrontendConfig",
    "Kernel", "PRIOR_NAMES", "PatchRefineConfig", "PnpConfig", "PriorConfig", "PriorName", "RgbdMethod",
    "RgbdRefineConfig", "SimulatedPriorConfig", "SlamConfig", "SparseTracksConfig", "TrackingConfig", "default_config_yaml",
]

Kernel = Literal["none", "huber", "cauchy"]  # robust kernels of the BA (metricslam.slam.ba.robust_weight)
DisPreset = Literal["ultrafast", "fast", "medium"]  # OpenCV DIS optical flow presets
CorrespondenceName = Literal["classical", "droid"]  # metricslam.slam.correspondence.factory
PriorName = Literal["sensor", "folder", "simulated", "none", "metric3d"]  # metricslam.slam.prior_factory
PRIOR_NAMES: tuple[str, ...] = get_args(PriorName)
RgbdMethod = Literal["hybrid", "color"]  # Open3D RGB-D odometry terms (metricslam.slam.rgbd_refine)
BAStage = Literal["tracking", "window", "global"]  # SlamConfig.ba_options


# -- dense bundle adjustment (metricslam.slam.ba) ------------------------------------------------------------------
@dataclass
class BAOptions:
    """Dense BA settings. Depth quantities are in the normalised unit (mean inverse depth 1)."""

    # Prior weight (DROID RGB-D mode), times the per-pixel prior confidence. It suits sensor-grade priors; with
    # noisy network priors lower it (or their confidence): at 5 % per-pixel noise, 0.05 shrinks the trajectory
    # scale by about 4 % (errors in variables), 0.002 by about 0.1 %.
    alpha: float = 0.05
    min_depth: float = MIN_DEPTH  # drop terms whose X'2 (= depth_j / depth_i) is below this
    # LM damping of the reduced pose system: H + lm * diag(H) + ep * I. SlamConfig.ba's pair damps the
    # motion-only steps (frame tracking, the filler); the window and global BA have their own (frontend.lm/ep,
    # backend.lm/ep; SlamConfig.ba_options picks the pair of a stage).
    lm: float = 1e-4
    ep: float = 0.1
    weight_scale: float = 1e-3  # flow weight = weight_scale * given weight (DROID: 0.001 * confidence)
    eta: float = 1e-3  # depth damping where there is no prior and no eta is passed
    robust: Kernel = "none"  # kernel on the flow residual norm
    robust_px: float = 2.0  # its threshold in pixels
    prior_robust: Kernel = "none"  # kernel on the prior residual |d - d_prior|
    prior_robust_thresh: float = 0.1  # its threshold in normalised inverse depth
    # Weight of the scale anchor (0 = off): every pixel of a keyframe with a prior is pulled towards its current
    # inverse depth rescaled so that the trimmed mean over the problem's keyframes of their trimmed mean log
    # ratios to the prior is zero. It carries only the priors' scale averaged over the window (the map, in a
    # global BA), none of their correlated shape errors nor any one frame's scale error.
    scale_anchor: float = 0.0
    motion_only: bool = False  # poses only, depths held
    depth_only: bool = False  # depths only, poses held
    min_invdepth: float = 1e-3  # clamp after every step
    normalise: bool = True  # work in the normalised depth unit

    def __post_init__(self) -> None:
        if self.motion_only and self.depth_only:
            raise MetricSlamError("BAOptions: motion_only and depth_only are both true; set at most one of them")
        if not self.scale_anchor >= 0:
            raise MetricSlamError(f"BAOptions.scale_anchor={self.scale_anchor}: use a weight >= 0 (0 = off)")
        for name in ("robust", "prior_robust"):
            if getattr(self, name) not in get_args(Kernel):
                raise MetricSlamError(f"BAOptions.{name}={getattr(self, name)!r}: use none, huber or cauchy")


# -- classical correspondences (metricslam.slam.correspondence.classical, .refine) ---------------------------------
@dataclass
class PatchRefineConfig:
    """Per-cell patch alignment after dense flow (pixels are processing-resolution pixels)."""

    enabled: bool = False
    size: int = 13  # patch side (odd), centred on the grid cell's centre
    iters: int = 6  # inverse-compositional steps
    max_shift: float = 2.0  # a match moving farther than this from the dense target is rejected
    min_ncc: float = 0.8  # ... as is one whose normalised cross-correlation with the template ends below this
    reject_weight: float = 0.5  # weight factor of rejected cells (they keep the dense target)

    def __post_init__(self) -> None:
        if self.size < 3 or self.size % 2 == 0:
            raise MetricSlamError(f"flow.patch.size={self.size}: use an odd patch side of at least 3")
        if self.iters < 1 or not self.max_shift > 0 or not 0 <= self.reject_weight <= 1:
            raise MetricSlamError("flow.patch: iters >= 1, max_shift > 0 and reject_weight in [0, 1] are required")


@dataclass
class FlowConfig:
    """Options of the classical correspondence back-end (pixels are processing-resolution pixels)."""

    preset: DisPreset = "fast"  # DIS preset for graph edges
    filter_preset: DisPreset = "ultrafast"  # DIS preset for the per-frame motion filter
    fb_sigma: float = 1.0  # forward-backward error (px) at which confidence falls to exp(-1)
    photo_sigma: float = 12.0  # grey-level difference at which confidence halves
    border: float = 2.0  # targets closer than this to the image border (px) get no confidence
    refine: bool = False  # after the window BA, re-run the new keyframe's flows from its reprojection and BA again
    # Flow in flat regions (plain walls, dark doors) is interpolated, not measured, and still photometrically and
    # forward-backward consistent. Confidence is scaled by lmin / (lmin + texture^2), with lmin the smaller
    # eigenvalue of the source block's gradient structure tensor (grey levels per pixel); 0 disables.
    texture: float = 1.0
    # Flows of several new graph edges run concurrently (OpenCV releases the GIL, so the core that the
    # single-threaded BA leaves idle gets work): 1 computes them one after the other.
    workers: int = 2
    # A target far from its edge's predicted reprojection loses weight: w / (1 + miss^2 / s^2), s the larger of
    # `gate` (px) and `gate_spread` times the edge's median miss. A region where flow failed (periodic texture, a
    # wide baseline) stands out from the rest of its edge; a prediction that is off as a whole (a fast frame that
    # tracking placed short) is not held against the flow that corrects it.
    gate: float = 16.0
    gate_spread: float = 3.0
    # Graph-edge targets refined per grid cell by patch alignment (metricslam.slam.correspondence.refine), each
    # weighted by its patch Hessian instead of the block texture weight.
    patch: PatchRefineConfig = field(default_factory=PatchRefineConfig)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise MetricSlamError(f"flow.workers={self.workers}: use 1 (one flow at a time) or more")
        if not self.gate > 0 or self.gate_spread < 0:
            raise MetricSlamError(f"flow.gate={self.gate}, flow.gate_spread={self.gate_spread}: the gate must be "
                                  "positive and the spread 0 (a fixed gate) or more")


# -- depth prior (metricslam.slam.prior_factory, metricslam.slam.prior_schedule) -----------------------------------
@dataclass
class PriorConfig:
    """Which depth prior feeds the BA and its options."""

    # none: pure monocular, arbitrary scale. simulated is a stand-in for a network, made from the sequence's
    # ground-truth depth (tests, benchmarks, the demo), so it is never the default.
    kind: PriorName = "none"
    folder: str | None = None  # for kind=folder: depth maps named like the images (.png with scale, or .npy metres)
    depth_scale: float = 1000.0  # units per metre of PNG depth maps in the folder
    # for kind=simulated: the error model (metricslam.depth.simulated, where the simulator lives)
    simulated: SimulatedPriorConfig = field(default_factory=SimulatedPriorConfig)
    weights: str | None = None  # for kind=metric3d: checkpoint path or registry name
    variant: str | None = None  # for kind=metric3d: model variant (inferred from the weights name when possible)
    input_size: tuple[int, int] | None = None  # for kind=metric3d: network input (H, W); None = official size
    cache_dir: str | None = None  # for kind=metric3d: where predictions are cached for reruns
    device: str | None = None  # for kind=metric3d: None = CUDA if available else CPU
    # for kind=metric3d: the forward pass. auto = OpenVINO on a CPU when installed (vit_small in 0.3-0.5x of
    # torch's time there, same float32 outputs; metricslam.depth.openvino_backend), else torch. precision bf16:
    # faster on CPUs with bfloat16 units (OpenVINO vit_small 0.19x of torch fp32), depths differ from fp32.
    backend: Literal["auto", "torch", "openvino"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    # Per-pixel trust in the BA, as a factor on BAOptions.alpha (DROID's RGB-D weight). None = the prior's own:
    # 1 for sensor depth, 0.02 for network predictions (simulated, metric3d, folder), whose errors are spatially
    # correlated (smooth distortions, a per-frame scale): at full weight they shrank the synthetic room's
    # trajectory by ~20 %; at 0.02 the flow sets the shape and the priors only the scale (+0.3 %).
    weight: float | None = None
    # Which keyframes run the prior (metricslam.slam.prior_schedule): 'every' keyframe, or 'coverage': only where
    # no recent prior keyframe's prior, reprojected with the current poses, covers min_coverage of the view (and at
    # least every max_gap keyframes); the others receive that prior transferred by reprojection. 'auto' =
    # coverage for metric3d (a network forward costs seconds on a CPU), every for the others.
    schedule: Literal["auto", "every", "coverage"] = "auto"
    min_coverage: float = 0.7  # fraction of the new keyframe's BA grid a recent prior keyframe must cover
    max_gap: int = 8  # keyframes at most between two runs of the prior
    candidates: int = 4  # recent prior keyframes considered as transfer sources
    transfer: bool = True  # False: keyframes between prior keyframes get no prior at all
    transfer_weight: float = 0.5  # confidence factor of a transferred prior (it also carries the pose errors)
    # Keyframes after which a prior predicted by the background worker enters the BA (the tracker waits only if it
    # is not ready by then; a fixed point keeps runs deterministic). 0 = predict in line, no worker. None = auto:
    # 2 for metric3d on an accelerator (the forward overlaps tracking), else 0 (on a CPU the forward already uses
    # every core, and late priors cost accuracy: metricslam.slam.prior_schedule.resolve_schedule).
    lag: int | None = None


# -- tracking (metricslam.slam.system, metricslam.slam.pnp) --------------------------------------------------------
@dataclass
class PnpConfig:
    """Sparse pose initialiser used by tracking (pixels are processing-resolution pixels)."""

    enabled: bool = True
    # Tracking tries PnP when fewer grid pixels than this fraction are confident (1.0: on every frame), and keeps
    # the pose, from the flow started at the prediction or at PnP's pose, that more feature matches agree with. At
    # 0.6 the synthetic street (forward motion takes much of the view out of frame) ran PnP before nearly every
    # keyframe, for no gain.
    below: float = 0.3
    features: int = 1000  # ORB keypoints per image
    min_inliers: int = 40  # fewer RANSAC inliers than this: no pose
    min_inlier_ratio: float = 0.3  # of the matches that have a depth
    reproj_px: float = 2.5  # RANSAC inlier threshold
    relocalise: int = 4  # after a tracking failure, try this many of the newest keyframes
    # ... then this many more of the segment's older keyframes, those that look most like the frame: the camera
    # may come back to a place mapped long before.
    relocalise_similar: int = 4


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


# -- sparse keypoint tracks (metricslam.slam.keypoint_tracks, .sparse_factors) -------------------------------------
@dataclass
class SparseTracksConfig:
    """Sparse keypoint tracks as extra BA factors (pixels are processing-resolution pixels)."""

    enabled: bool = False
    detector: Literal["sift", "orb"] = "sift"
    features: int = 1000  # keypoints per keyframe
    match_window: int = 3  # previous keyframes of the segment each new keyframe is matched to
    ratio: float = 0.8  # Lowe's ratio test: best / second-best descriptor distance
    ransac_px: float = 1.0  # fundamental-matrix RANSAC inlier threshold
    # Weight of one track observation per coordinate, relative to a dense correspondence of confidence 1.
    # Rule: the ratio of the error variances of the two kinds, (dense median / sparse median)^2 against the
    # ground-truth motion (evaluation/sparse_tracks.py): 5.4 on the synthetic room (0.28 / 0.12 px), 2.0 on
    # hololens_000 (1.73 / 1.22 px, where the ground truth is itself about a pixel off); 4 lies between.
    weight: float = 4.0
    robust_px: float = 1.0  # Cauchy kernel threshold on an observation's residual
    max_residual_px: float = 3.0  # observations further than this from their reprojection after a BA are dropped

    def __post_init__(self) -> None:
        if self.features < 8 or self.match_window < 1:
            raise MetricSlamError(f"SparseTracksConfig: features={self.features}, match_window={self.match_window}: "
                                  "use at least 8 features and a match window of 1 or more")
        if not (0 < self.ratio <= 1 and self.weight >= 0 and self.ransac_px > 0 and self.robust_px > 0
                and self.max_residual_px > 0):
            raise MetricSlamError("SparseTracksConfig: ratio must lie in (0, 1], weight >= 0, and the pixel "
                                  "thresholds ransac_px, robust_px, max_residual_px > 0")


# -- front-end, back-end, filler (metricslam.slam.frontend, .backend, .filler) -------------------------------------
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
    lm: float = 1e-4  # LM damping of the window BA (BAOptions.lm, .ep)
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
    lm: float = 1e-5  # LM damping of the global BA (BAOptions.lm, .ep)
    ep: float = 1e-2


@dataclass
class FillerConfig:
    iters: int = 3  # motion-only GN steps per frame against its keyframe at the end
    chunk: int = 256  # frames solved together


# -- RGB-D refinement (metricslam.slam.rgbd_refine) ----------------------------------------------------------------
@dataclass
class RgbdRefineConfig:
    enabled: bool = True
    priors: tuple[str, ...] = ("sensor",)  # priors whose depth is measured: only their runs are refined
    gaps: tuple[int, ...] = (1, 2, 3, 4, 6, 8)  # odometry edges i -> i + g between keyframes, plus loop pairs
    image_area: int = 256 * 192  # odometry resolution in pixels (aspect kept; processing images are never enlarged)
    max_change: float = 0.05  # drop an edge that moves further than this x median depth from the BA's pose
    min_overlap: float = 0.05  # drop an edge with fewer depth correspondences than this fraction of the pixels
    method: RgbdMethod = "hybrid"

    def __post_init__(self) -> None:
        if self.method not in get_args(RgbdMethod):
            raise MetricSlamError(f"rgbd_refine.method={self.method!r}: use one of {', '.join(get_args(RgbdMethod))}")


# -- the whole system ----------------------------------------------------------------------------------------------
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
    # Sparse keypoint tracks (SIFT/ORB matched over keyframes) as extra reprojection factors in every BA.
    sparse: SparseTracksConfig = field(default_factory=SparseTracksConfig)
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
    # priors' scale, averaged over the BA's keyframes, the weight their per-pixel shape does not get. Simulated
    # prior, auto preset, ATE (street: KITTI t_err) at anchor weights 0 / 0.005 / 0.02 / 0.05: room 1.39 / 0.33 /
    # 0.54 / 3.07 cm; street 4.06 / 0.59 / 0.48 / 0.54 %; hololens_000 7.65 / 7.29 / 9.34 / 12.2 cm. Stronger, the
    # prior's slowly varying scale errors start to fight the flow.
    ba: BAOptions = field(default_factory=lambda: BAOptions(robust="cauchy", robust_px=0.5, scale_anchor=0.005))
    prior_grid_edge: float = 0.15  # relative inverse-depth spread inside a grid cell at which prior confidence halves

    def ba_options(self, stage: BAStage, prior_weight: float = 1.0) -> BAOptions:
        """The BA settings of one stage: ``ba`` with that stage's damping (tracking: frame tracking and the
        filler, ba.lm/ep; window: frontend.lm/ep; global: backend.lm/ep) and the prior weight alpha scaled by
        ``prior_weight`` (PriorConfig.weight or the prior's own)."""
        lm, ep = {"tracking": (self.ba.lm, self.ba.ep), "window": (self.frontend.lm, self.frontend.ep),
                  "global": (self.backend.lm, self.backend.ep)}[stage]
        return replace(self.ba, alpha=self.ba.alpha * prior_weight, lm=lm, ep=ep)

    def with_device(self, device: str) -> SlamConfig:
        """A copy that runs on ``device`` (auto, cpu, cuda, cuda:N): the SLAM and the depth network."""
        return replace(self, device=device, prior=replace(self.prior, device=device))


DEFAULT_CONFIG_HEADER = """\
# SlamConfig written out (metricslam/slam/config.py and the component configs hold the meaning of every key).
# Presets (metricslam/assets/presets) and --config files list only the keys they change; `metricslam run` merges
# them onto these defaults, and `--set key=value` overrides on top. Generated: after changing a default, run
#   metricslam config --write configs/slam/default.yaml
"""


def default_config_yaml() -> str:
    """The default SlamConfig as YAML (configs/slam/default.yaml), with a header on what it is."""
    return DEFAULT_CONFIG_HEADER + yaml.safe_dump(to_dict(SlamConfig()), sort_keys=False)
