"""``metricslam run``: SLAM over a video or dataset folder, results into one output folder.

The depth prior is always chosen explicitly (``--prior``, or ``prior.kind`` in ``--config`` / ``--set``). Without
one the run is pure monocular (``none``) and a note says that the scale of the results is arbitrary.

``--depth DIR`` (one depth map per image, named like the image: .png scaled by ``--depth-scale`` units per metre,
or .npy in metres) means:
  --prior sensor     the sequence's depth images (replaces the folder the dataset layout brings, e.g. TUM depth/)
  --prior simulated  the same: the depth the simulated network error model corrupts
  --prior folder     the prior's precomputed depth maps (from any other network); required
  none / metric3d    not used: passing it is an error
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metricslam.cli._options import positional_from_overrides
from metricslam.cli._summary import format_summary
from metricslam.config import apply_overrides, load_config
from metricslam.device import resolve_device
from metricslam.errors import InputError
from metricslam.io.run_dir import RUN_OUTPUTS, RunDir
from metricslam.io.sequences import RecordedSequence, detect_layout, open_sequence
from metricslam.io.sequences.recorded import match_depth_folder
from metricslam.mapping.export import MappingConfig
from metricslam.pipeline import run_sequence
from metricslam.slam.config import PRIOR_NAMES, SlamConfig
from metricslam.slam.presets import PRESETS, PresetChoice, resolve_preset
from metricslam.slam.prior_factory import make_prior

NEEDS_SEQUENCE_DEPTH = ("sensor", "simulated")
NO_PRIOR_NOTE = ("note: no depth prior chosen, running pure monocular (--prior none): the scale of the trajectory "
                 "and map is arbitrary; pass --prior sensor|folder|simulated|metric3d for metric results")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="run SLAM on a video or dataset folder",
        description="Metric SLAM on a video file or a dataset folder (KITTI, TUM RGB-D, EuRoC or a generic folder, "
                    "detected automatically). Writes trajectory_tum.txt, trajectory_kitti.txt (every frame, T_wc), "
                    "keyframes.npz, config.yaml, trajectory.png, mesh.ply/cloud.ply, and with ground truth "
                    "metrics.json into --out.",
        epilog="--depth DIR: with --prior sensor or simulated it replaces the sequence's depth folder; with --prior "
               "folder it is the folder of precomputed depth maps. Depth maps are named like the images (.png "
               "divided by --depth-scale, .npy in metres). Without --prior the run is monocular with arbitrary scale.",
    )
    p.add_argument("source", metavar="SOURCE", nargs="?", help="video file or dataset folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out "
                   "(without it such a folder is refused; other files there are kept)")
    p.add_argument("--calib", metavar="FILE", help="calibration file (fx fy cx cy [dist], K.txt, sensor.yaml, ...); "
                   "without one and none in SOURCE: the EXIF focal length, else fx = 1.2 x the long image side (a "
                   "45 degree field of view), with a warning: the metric scale depends on it")
    p.add_argument("--depth", metavar="DIR", help="depth maps, one per image (meaning depends on --prior, see below)")
    p.add_argument("--depth-scale", type=float, metavar="S", help="PNG depth units per metre (default: the dataset's, "
                   "else 1000)")
    p.add_argument("--prior", choices=PRIOR_NAMES, help="depth prior (default: none, i.e. arbitrary scale)")
    p.add_argument("--weights", metavar="FILE|NAME", help="Metric3D checkpoint (official or from `metricslam train`) "
                   "or a name from `metricslam weights list` (--prior metric3d)")
    p.add_argument("--variant", metavar="NAME", help="Metric3D model variant (--prior metric3d; default from --weights)")
    p.add_argument("--gt", metavar="FILE", help="ground-truth T_wc trajectory (TUM, KITTI or 4x4 per line)")
    p.add_argument("--stride", type=int, default=1, metavar="N", help="use every N-th frame (default 1)")
    p.add_argument("--start", type=int, default=0, metavar="N", help="first frame (default 0)")
    p.add_argument("--end", type=int, metavar="N", help="stop before this frame (default: the last)")
    p.add_argument("--preset", choices=("auto", *PRESETS), default="auto",
                   help="settings for the kind of camera motion (default auto: chosen from the dataset layout or "
                        "the motion of the first seconds, and printed at start; within the preset, clips whose "
                        "frames move less than a keyframe spacing get its slow-motion settings)")
    p.add_argument("--config", metavar="YAML", help="SLAM config file merged on top of the preset (keys it lists)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. --set frontend.window=12 backend.enabled=false")
    p.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (default: the config's, auto)")
    p.add_argument("--viz", metavar="rerun|FILE.rrd", help="live view in Rerun: 'rerun' spawns the viewer, a path "
                   "ending in .rrd records to that file (needs the [viz] extra)")
    p.add_argument("--no-mesh", action="store_true", help="skip mapping (mesh.ply, mesh_points.ply, cloud.ply)")
    p.add_argument("--map-set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="mapping overrides, e.g. --map-set tsdf.voxel_size=0.05 consistent_cloud=false")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace, preset: PresetChoice | None = None, monocular: bool = False) -> SlamConfig:
    """Defaults, then the preset (its monocular part with ``monocular``), then --config, then --set, then the
    flags; the prior is 'none' unless chosen."""
    cfg = load_config(SlamConfig, args.config, args.set, base=preset.settings(monocular) if preset else None)
    if args.prior is not None:
        cfg.prior.kind = args.prior
    kind = cfg.prior.kind
    if args.depth is not None and kind not in (*NEEDS_SEQUENCE_DEPTH, "folder"):
        raise InputError(f"--depth {args.depth} is not used by --prior {kind}; drop it, or use --prior sensor, "
                         "simulated or folder")
    if (args.weights or args.variant) and kind != "metric3d":
        raise InputError(f"--weights/--variant are only used by --prior metric3d (the prior is '{kind}')")
    if kind == "folder":
        if args.depth is not None:
            cfg.prior.folder = args.depth
        if args.depth_scale is not None:
            cfg.prior.depth_scale = args.depth_scale
    if args.weights:
        cfg.prior.weights = args.weights
    if args.variant:
        cfg.prior.variant = args.variant
    if args.device:
        cfg = cfg.with_device(args.device)
    for device in (cfg.device, cfg.prior.device):  # --set or --config may name one too
        resolve_device(device)
    return cfg


def mapping_config(overrides: list[str], device: str | None = None) -> MappingConfig:
    """Mapping defaults (on ``device`` when --device names one), then ``--map-set`` overrides."""
    return apply_overrides(MappingConfig().with_device(device) if device else MappingConfig(), overrides)


def open_source(args: argparse.Namespace, cfg: SlamConfig) -> RecordedSequence:
    """The sequence SOURCE with the flags applied, checked against what the prior needs."""
    kind = cfg.prior.kind
    sequence_depth = kind in NEEDS_SEQUENCE_DEPTH
    seq = open_sequence(
        args.source, calib=args.calib, depth=args.depth if sequence_depth else None,
        depth_scale=args.depth_scale if sequence_depth else None, gt=args.gt,
        stride=args.stride, start=args.start, end=args.end, guess_camera=True,
    )
    if sequence_depth and not seq.has_depth:
        raise InputError(f"{args.source}: no depth images for --prior {kind}; pass --depth DIR with one depth map "
                         "per image, or use --prior none, folder or metric3d")
    if kind == "folder" and cfg.prior.folder:
        match_depth_folder(seq.data.source, Path(cfg.prior.folder), seq.source_indices)
    return seq


def run(args: argparse.Namespace) -> int:
    positional_from_overrides(args, "source", ("set", "map_set"), "SOURCE")
    out = RunDir(args.out, RUN_OUTPUTS, args.overwrite)
    out.check()
    cfg = build_config(args)
    mapping = None if args.no_mesh else mapping_config(args.map_set, args.device)
    seq = open_source(args, cfg)
    choice = resolve_preset(args.preset, seq, detect_layout(args.source), cfg.image_area)
    monocular = cfg.prior.kind == "none"
    cfg = build_config(args, choice, monocular)
    # Built before anything is printed, so that a prior that cannot be made (missing or corrupt weights, no depth
    # folder) ends the command with its one-line error alone.
    prior = make_prior(cfg.prior)
    print(choice.describe(monocular), file=sys.stderr)
    if cfg.prior.kind == "none":
        print(NO_PRIOR_NOTE, file=sys.stderr)
    result = run_sequence(seq, out, cfg, progress=not args.quiet, viz=args.viz, mapping=mapping, prior=prior)
    print(format_summary(result))
    return 0
