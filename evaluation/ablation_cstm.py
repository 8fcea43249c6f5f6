"""CSTM ablation: does training in the canonical camera space make a small network metric on unseen cameras?

    python evaluation/ablation_cstm.py --out outputs/ablation_cstm --seeds 0 1

Renders the synthetic multi-camera set (train: 10 focal lengths 300..1500 px, held out: 5 other focal lengths and
other world instances; indoor + outdoor; each world photographed by 5 of its split's focal lengths on one random
sensor, each camera from its own pose at a domain-typical height and near level, so the same worlds are seen by
every camera; textures of standard physical sizes, so that appearance tells metres per pixel and only the camera
tells metres), trains the small ConvNeXt-Hourglass three times per seed with the same budget and losses --
CSTM_label, CSTM_image, no CSTM -- and evaluates metric depth (no scale alignment) on the held-out cameras:
per-image AbsRel and d1, averaged over images, and, per scene type, the median predicted / true depth per held-out
focal length (1 = metric; a trend with the focal length means the network does not know the camera), and the same
on every third training image (does the network fit its own cameras?). Prints the tables and writes results.json
and table.md.
A run whose folder already holds a finished training with the same settings is evaluated again, not retrained,
so an interrupted ablation continues where it stopped.
"""
from __future__ import annotations

import os

# Idle OpenMP threads must not spin: on a shared CPU they would steal the cores the work needs. Read by the
# OpenMP runtime when torch loads, so it is set before the imports below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from metricslam.config import to_dict  # noqa: E402
from metricslam.depth.cstm import CANONICAL_FOCAL, MAX_DEPTH  # noqa: E402
from metricslam.errors import MetricSlamError  # noqa: E402
from metricslam.io.atomic import write_text_atomic  # noqa: E402
from metricslam.training.checkpoint import load_checkpoint  # noqa: E402
from metricslam.training.config import DataConfig, DatasetConfig, TrainConfig  # noqa: E402
from metricslam.training.data import AnnotationDataset  # noqa: E402
from metricslam.training.evaluate import predict_metric_depth  # noqa: E402
from metricslam.training.small_model import build_model  # noqa: E402
from metricslam.training.synthetic_set import (  # noqa: E402
    CAMERA_PLACEMENT,
    HELD_OUT_FOCALS,
    NOISE_GRAIN,
    NOISE_TEXEL,
    PATTERN_PERIODS,
    TRAIN_FOCALS,
    SyntheticSetConfig,
    split_focals,
    write_synthetic_set,
)
from metricslam.training.trainer import train  # noqa: E402

MODES = {"label": "CSTM_label", "image": "CSTM_image", "none": "no CSTM"}
SCENES = ("room", "street")
SCENE_NAMES = {"room": "indoor", "street": "outdoor"}
METRIC_COLUMNS = ("indoor", "outdoor", "all")


def scaled_focals(split: str, focal_scale: float) -> tuple[float, ...] | None:
    """The split's focal lengths times ``focal_scale`` (None: the default list unchanged)."""
    if focal_scale == 1.0:
        return None
    return tuple(f * focal_scale for f in split_focals(SyntheticSetConfig(split=split)))


def render_data(root: Path, frames: int, held_out_frames: int, seed: int, cameras_per_view: int,
                focal_scale: float = 1.0, max_depth: float = 80.0) -> dict[str, list[Path]]:
    """Train and held-out annotation files, rendered unless a folder rendered with the same settings exists."""
    out = {}
    for split, n in (("train", frames), ("held_out", held_out_frames)):
        cfg = SyntheticSetConfig(split=split, scenes=SCENES, frames_per_camera=n, seed=seed,
                                 cameras_per_view=cameras_per_view, focals=scaled_focals(split, focal_scale),
                                 max_depth=max_depth)
        stamp = root / split / "settings.json"
        settings = json.dumps({**asdict(cfg), "noise_grain": NOISE_GRAIN, "noise_texel": NOISE_TEXEL,
                               "pattern_periods": PATTERN_PERIODS, "camera_placement": CAMERA_PLACEMENT})
        paths = [root / split / scene / "annotation.json" for scene in SCENES]
        if not (all(p.is_file() for p in paths) and stamp.is_file() and stamp.read_text() == settings):
            write_synthetic_set(root / split, cfg)
            write_text_atomic(stamp, settings)
        out[split] = paths
    return out


def focal_scale_bias(checkpoint: Path, annotations: list[Path], cstm: str, stride: int = 1
                     ) -> dict[str, dict[str, float]]:
    """{scene name: {focal length: median over its images of the per-image median predicted / true depth}}, over
    every ``stride``-th image."""
    state = load_checkpoint(checkpoint)
    model = build_model(state["model"]["variant"], state["model"]["small"])
    model.load_state_dict(state["model_state_dict"])
    model.eval()
    out = {}
    for path, scene in zip(annotations, SCENES):
        ds = AnnotationDataset(path)
        ratios: dict[float, list[float]] = {}
        for i in range(0, len(ds), stride):
            s = ds.load(i)
            pred = predict_metric_depth(model, s.rgb, s.intrinsics, cstm, torch.device("cpu"))
            ok = s.valid & (pred > 0)
            ratios.setdefault(s.intrinsics.fx, []).append(float(np.median(pred[ok] / s.depth[ok])))
        out[SCENE_NAMES[scene]] = {f"{f:g}": float(np.median(r)) for f, r in sorted(ratios.items())}
    return out


def finished_run(cfg: TrainConfig) -> tuple[Path, dict] | None:
    """(final checkpoint, held-out metrics) of an earlier run of exactly ``cfg`` in its folder, if it finished."""
    out = Path(cfg.out_dir)
    checkpoint = out / "checkpoints" / f"step_{cfg.steps:07d}.pth"
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text())
        val = json.loads((out / "val.json").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    same = {k: v for k, v in saved.items() if k != "progress"} == {
        k: v for k, v in yaml.safe_load(yaml.safe_dump(to_dict(cfg))).items() if k != "progress"}
    if not (same and checkpoint.is_file() and val.pop("step", None) == cfg.steps):
        return None
    return checkpoint, val


def training_seconds(out_dir: Path, batch_size: int) -> float:
    """Time spent in training steps, from the run's log (so a reused run still reports it)."""
    lines = (out_dir / "log.jsonl").read_text().splitlines()
    return float(sum(batch_size / json.loads(line)["images_per_s"] for line in lines))


def run_mode(mode: str, seed: int, data: dict[str, list[Path]], args: argparse.Namespace) -> dict:
    cfg = TrainConfig(
        out_dir=str(args.out / f"train_{mode}_seed{seed}"), steps=args.steps, batch_size=args.batch, seed=seed,
        threads=args.threads, save_every=args.steps, tensorboard=False, progress=not args.quiet,
        data=DataConfig(
            datasets=[DatasetConfig(str(p), name=SCENE_NAMES[s]) for p, s in zip(data["train"], SCENES)],
            val=[DatasetConfig(str(p), name=SCENE_NAMES[s]) for p, s in zip(data["held_out"], SCENES)],
            cstm=mode, crop_size=(args.crop[0], args.crop[1]), num_workers=args.workers,
        ),
    )
    cfg.optim.encoder_lr = cfg.optim.decoder_lr = args.lr
    cfg.loss.silog_variance_focus = args.silog_focus
    earlier = finished_run(cfg)
    if earlier is None:
        result = train(cfg)
        earlier = result.checkpoint, result.val
    checkpoint, held_out = earlier
    return {"mode": mode, "seed": seed, "seconds": training_seconds(Path(cfg.out_dir), cfg.batch_size),
            "checkpoint": str(checkpoint), "held_out": held_out,
            "scale_by_focal": focal_scale_bias(checkpoint, data["held_out"], mode),
            # Does the network fit its own cameras? If not, the images do not carry the cue at this budget.
            "scale_by_train_focal": focal_scale_bias(checkpoint, data["train"], mode, stride=3)}


def _mean_rows(rows: list[dict]) -> list[dict]:
    """One row per mode averaging its seeds' metrics."""
    out = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        held = {k: {m: float(np.mean([r["held_out"][k][m] for r in mine])) for m in ("abs_rel", "d1")}
                for k in METRIC_COLUMNS}
        out.append({"mode": mode, "seed": "mean", "held_out": held})
    return out


def format_tables(rows: list[dict]) -> str:
    head = "| training | seed | indoor AbsRel | indoor d1 | outdoor AbsRel | outdoor d1 | all AbsRel | all d1 |"
    lines = [head, "|" + "---|" * 8]
    for r in rows + (_mean_rows(rows) if len({r["seed"] for r in rows}) > 1 else []):
        cells = [f"{r['held_out'][k]['abs_rel']:.3f} | {r['held_out'][k]['d1']:.3f}" for k in METRIC_COLUMNS]
        lines.append(f"| {MODES[r['mode']]} | {r['seed']} | " + " | ".join(cells) + " |")
    for key, which in (("scale_by_focal", "held-out"), ("scale_by_train_focal", "training")):
        for scene in SCENE_NAMES.values():
            lines += _ratio_table(rows, key, which, scene)
    return "\n".join(lines)


def _ratio_table(rows: list[dict], key: str, which: str, scene: str) -> list[str]:
    focals = list(rows[0][key][scene])
    lines = ["", f"{scene.capitalize()}: median predicted / true depth per {which} focal length (1 = metric):", "",
             "| training | seed | " + " | ".join(f"f = {f}" for f in focals) + " |", "|" + "---|" * (2 + len(focals))]
    for r in rows:
        ratios = r[key][scene]
        lines.append(f"| {MODES[r['mode']]} | {r['seed']} | " + " | ".join(f"{ratios[f]:.2f}" for f in focals) + " |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Each training of the default budget takes about 5 minutes on an idle CPU "
                                       "thread (20-25 on a loaded 2-core machine); timings vary with the load.")
    p.add_argument("--out", type=Path, default=Path("outputs/ablation_cstm"), help="output folder")
    p.add_argument("--modes", nargs="+", choices=tuple(MODES), default=list(MODES), help="CSTM modes to train")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds; every mode runs each")
    p.add_argument("--steps", type=int, default=1200, help="training steps per run (default 1200)")
    p.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--crop", type=int, nargs=2, default=(96, 128), metavar=("H", "W"),
                   help="training crop, multiples of 32 (default 96 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="encoder and decoder learning rate (default 1e-3)")
    p.add_argument("--silog-focus", type=float, default=0.15,
                   help="SILog variance focus (default 0.15: a stronger scale term than upstream's 0.5, which "
                        "needs far longer training to pin the scale down)")
    p.add_argument("--frames", type=int, default=24, help="training images per focal length and scene (default 24)")
    p.add_argument("--held-out-frames", type=int, default=8,
                   help="held-out images per focal length and scene (default 8)")
    p.add_argument("--cameras-per-view", type=int, default=5,
                   help="focal lengths that photograph each world, each from its own pose (default 5)")
    p.add_argument("--focal-scale", type=float, default=1.0,
                   help="multiply every focal length by this (default 1: 300..1500 px). 0.25 gives the small images "
                        "fields of view like ordinary cameras' (22-112 degrees wide instead of 5-41)")
    p.add_argument("--max-depth", type=float, default=80.0,
                   help="farthest labelled depth in metres (default 80; lower it with --focal-scale so canonical "
                        "labels, depth x 1000 / f, stay inside the network's 300 m bins)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the rendered data (the same for every run)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--workers", type=int, default=0, help="data-loader worker processes (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        shortest = min(TRAIN_FOCALS + HELD_OUT_FOCALS) * args.focal_scale
        if args.focal_scale <= 0 or args.max_depth * CANONICAL_FOCAL / shortest > MAX_DEPTH:
            raise MetricSlamError(f"--max-depth {args.max_depth:g} with --focal-scale {args.focal_scale:g} gives "
                                  f"canonical labels beyond {MAX_DEPTH:g} m; lower --max-depth")
        data = render_data(args.out / "data", args.frames, args.held_out_frames, args.data_seed, args.cameras_per_view,
                           args.focal_scale, args.max_depth)
        rows = [run_mode(mode, seed, data, args) for seed in args.seeds for mode in args.modes]
    except MetricSlamError as exc:
        print(f"ablation_cstm: error: {exc}", file=sys.stderr)
        return 2
    train_focals = sorted(f * args.focal_scale for f in TRAIN_FOCALS)
    held_focals = sorted(f * args.focal_scale for f in HELD_OUT_FOCALS)
    minutes = ", ".join(f"{MODES[r['mode']]} seed {r['seed']} {r['seconds'] / 60:.1f}" for r in rows)
    summary = (f"held-out cameras: focal {', '.join(f'{f:g}' for f in held_focals)} px (training: "
               f"{', '.join(f'{f:g}' for f in train_focals)} px); {args.frames} training and {args.held_out_frames} "
               f"held-out images per focal length and scene, {args.cameras_per_view} focal lengths per view; "
               f"max depth {args.max_depth:g} m; {args.steps} steps x batch {args.batch}, crop "
               f"{args.crop[0]}x{args.crop[1]}, SILog focus {args.silog_focus:g}, {args.threads} thread(s); metric "
               f"depth, no alignment; per-image mean. Training minutes per run: {minutes}")
    table = format_tables(rows)
    print(summary)
    print(table)
    write_text_atomic(args.out / "results.json", json.dumps({"summary": summary, "runs": rows}, indent=2))
    write_text_atomic(args.out / "table.md", summary + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
