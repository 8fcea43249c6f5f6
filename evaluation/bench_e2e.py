"""End-to-end speed of metric SLAM with the Metric3D network in the loop (``--prior metric3d``).

    python evaluation/bench_e2e.py [--variants vit_small convnext_tiny] [--scenes hololens room]
                                   [--max-frames N] [--threads N] [--set KEY=VALUE ...] [--no-reference]
                                   [--baseline] [--work DIR]

Scenes: shared/data/hololens_000 (200 real frames, the handheld preset) and a synthetic room of 300 frames
at 512x384 (SlamConfig's defaults, bench_slam's setting); ``--max-frames`` shortens both. Each run goes through the same code as
``metricslam run``: ``pipeline.track_sequence`` (reading overlapped with tracking) and ``Slam.finish``, with the
prior built from ``PriorConfig`` like the CLI does. Reported per run:

- fps: input frames / wall seconds of tracking + finish (reading, network, SLAM)
- calls: forward passes of the network; transfers: keyframes given a prior transferred from another keyframe
  (PriorConfig.schedule); ms/call: mean wall time of a forward; net share: network seconds / run seconds (with the
  background worker the network runs beside tracking, so this is the share of the run it was busy)
- peak MB: the largest resident set of the run's own process (each run has its own process)
- keyframes and ATE SE3 (meaningless with random weights, printed only to show the run did real work)

The checkpoints are random weights saved under the official file names in a temporary folder: the time of a
forward pass does not depend on the weights' values, so the speed is that of the released networks. The number of
keyframes can differ from a run with the real weights (the tracking sees other depths), and the accuracy columns
mean nothing here. Before the rows, each variant's prior is built and run once (for the OpenVINO backend this
converts the network and saves it, as a user's first run does; its time is printed, not counted). Reference row (room only, unless --no-reference): the same run with simulated priors computed
before the clock starts (evaluation/bench_slam.py's setting), the speed the network-in-the-loop run is held to.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOLOLENS = ROOT.parent / "shared" / "data" / "hololens_000"
# Scene -> (frames, settings preset; None = SlamConfig's defaults).
SCENES = {"hololens": (200, "handheld"), "room": (300, None)}
ROOM_SIZE = (512, 384)
# How the prior ran before PriorConfig's schedule, lag and backend: the network on every keyframe, torch float32.
BASELINE = ["prior.schedule=every", "prior.lag=0", "prior.backend=torch", "prior.precision=fp32"]


def random_checkpoint(variant: str, folder: Path) -> Path:
    """A seeded random-weight state dict of ``variant`` saved under its official file name in ``folder``."""
    import torch

    from metricslam.depth.models.metric3d import VARIANTS, build_metric3d

    file = folder / VARIANTS[variant].checkpoint
    if not file.is_file():
        torch.manual_seed(0)
        torch.save(build_metric3d(variant).state_dict(), file)
    return file


def open_scene(scene: str, frames: int):
    from metricslam.io.sequences import open_sequence
    from metricslam.io.synthetic import SyntheticSequence

    if scene == "hololens":
        return open_sequence(HOLOLENS, end=frames)
    return SyntheticSequence("room", frames=frames, width=ROOM_SIZE[0], height=ROOM_SIZE[1], seed=0)


class NetworkClock:
    """Counts and times every forward pass of a Metric3DPredictor (on whichever thread it runs)."""

    def __init__(self, predictor):
        self.calls = 0
        self.seconds = 0.0
        inner = predictor.predict

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = inner(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            self.calls += 1
            return out

        predictor.predict = timed


def scene_config(scene: str, overrides: list[str]):
    """The SLAM settings a scene runs with (its preset, or the defaults), then ``overrides``."""
    from metricslam.config import load_config
    from metricslam.slam.config import SlamConfig
    from metricslam.slam.presets import preset_config

    preset = SCENES[scene][1]
    return load_config(SlamConfig, None, overrides) if preset is None else preset_config(preset, overrides)


def run_single(scene: str, variant: str, frames: int, weights: str, overrides: list[str], threads: int | None) -> dict:
    """One end-to-end run in this process; returns its row."""
    import torch
    from bench_slam import PeakRSS

    from metricslam.metrics.trajectory import evaluate_trajectory
    from metricslam.pipeline import track_sequence
    from metricslam.slam.prior_factory import make_prior
    from metricslam.slam.system import Slam

    if threads:
        torch.set_num_threads(threads)
    cfg = scene_config(scene, ["prior.kind=metric3d", f"prior.weights={weights}", f"prior.variant={variant}",
                               *overrides])
    seq = open_scene(scene, frames)
    prior = make_prior(cfg.prior)
    clock = NetworkClock(prior.predictor)
    slam = Slam(cfg, prior)
    with PeakRSS() as rss:
        start = time.perf_counter()
        track_sequence(slam, seq, progress=False)
        rec = slam.finish()
        seconds = time.perf_counter() - start
    metrics = evaluate_trajectory(seq.gt_trajectory(), rec.trajectory())
    return {"scene": scene, "variant": variant, "frames": rec.num_frames, "keyframes": rec.num_keyframes,
            "seconds": seconds, "fps": rec.num_frames / seconds, "calls": clock.calls,
            "transfers": getattr(getattr(slam, "priors", None), "transfers", None),
            "ms_call": 1e3 * clock.seconds / max(clock.calls, 1), "net_share": clock.seconds / seconds,
            "peak_mb": rss.peak / 2**20, "ate_se3_m": metrics["ate_se3_rmse_m"], "threads": torch.get_num_threads()}


def run_reference(frames: int, overrides: list[str], threads: int | None) -> dict:
    """The room with simulated priors precomputed (bench_slam.measure): SLAM alone, no network."""
    import torch
    from bench_slam import measure

    if threads:
        torch.set_num_threads(threads)
    cfg = scene_config("room", ["prior.kind=simulated", *overrides])
    row = measure("room", frames, ROOM_SIZE[0], ROOM_SIZE[1], cfg)
    return {"scene": "room", "variant": "precomputed simulated", "frames": row.frames, "keyframes": row.keyframes,
            "seconds": row.frames / row.fps, "fps": row.fps, "calls": 0, "transfers": None, "ms_call": None, "net_share": 0.0,
            "peak_mb": None, "ate_se3_m": row.ate_se3_m, "threads": torch.get_num_threads()}


def warm_up(variant: str, weights: str, overrides: list[str]) -> dict:
    """Build the prior as the runs do and predict once: converts the network for the exported backend (saved
    under $METRICSLAM_CACHE, so the runs load it like a user's second run would)."""
    import numpy as np

    from metricslam.geometry.camera import Intrinsics
    from metricslam.io.frame import Frame
    from metricslam.slam.prior_factory import make_prior

    cfg = scene_config("room", ["prior.kind=metric3d", f"prior.weights={weights}", f"prior.variant={variant}",
                                *overrides])
    start = time.perf_counter()
    prior = make_prior(cfg.prior)
    w, h = ROOM_SIZE
    prior(Frame(0, 0.0, np.zeros((h, w, 3), np.uint8), Intrinsics(w, w, w / 2, h / 2, w, h)))
    p = prior.predictor
    return {"variant": variant, "backend": f"{p.backend}:{p.precision}", "seconds": time.perf_counter() - start}


def in_subprocess(args: list[str], cache: str) -> dict:
    env = {**os.environ, "METRICSLAM_CACHE": cache}  # exported networks of random weights stay in the temp folder
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["failed without a message"]
        return {"error": lines[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_row(row: dict) -> str:
    def num(key: str, fmt: str) -> str:
        v = row.get(key)
        return "-" if v is None else format(v, fmt)

    return (f"| {row['scene']} | {row['variant']} | {row['frames']} | {row['keyframes']} | {num('fps', '.2f')} "
            f"| {row['calls']} | {num('transfers', 'd')} | {num('ms_call', '.0f')} | {100 * row['net_share']:.0f} % | {num('peak_mb', '.0f')} "
            f"| {num('ate_se3_m', '.3f')} |")


HEADER = ("| scene | prior network | frames | keyframes | fps | calls | transfers | ms/call | net share | peak MB "
          "| ATE SE3 m |\n|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["vit_small", "convnext_tiny"])
    p.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames per scene")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="SLAM config overrides for every run, e.g. prior.input_size=[308,532]")
    p.add_argument("--no-reference", action="store_true", help="skip the precomputed-prior room row")
    p.add_argument("--baseline", action="store_true",
                   help="after each run, the same run as the code before the schedule and backends ran it (every "
                        "keyframe, torch float32, in line): before and after under the same machine load")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--work", default=None, metavar="DIR",
                   help="keep the random checkpoints and exported networks here for later runs (default: a "
                        "temporary folder)")
    p.add_argument("--single", nargs=4, metavar=("SCENE", "VARIANT", "FRAMES", "WEIGHTS"), help=argparse.SUPPRESS)
    p.add_argument("--reference", type=int, metavar="FRAMES", help=argparse.SUPPRESS)
    p.add_argument("--warm-up", nargs=2, metavar=("VARIANT", "WEIGHTS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.single:
        scene, variant, frames, weights = args.single
        print(json.dumps(run_single(scene, variant, int(frames), weights, args.set, args.threads)))
        return 0
    if args.reference:
        print(json.dumps(run_reference(args.reference, args.set, args.threads)))
        return 0
    if args.warm_up:
        print(json.dumps(warm_up(*args.warm_up, args.set)))
        return 0
    if "hololens" in args.scenes and not HOLOLENS.is_dir():
        print(f"{HOLOLENS} not found: hololens rows skipped", file=sys.stderr)
        args.scenes = [s for s in args.scenes if s != "hololens"]
    common = (["--threads", str(args.threads)] if args.threads else []) + (["--set", *args.set] if args.set else [])
    print("Checkpoints: random weights under the official file names (a forward pass takes as long whatever the "
          "weights' values; keyframe counts and ATE are not those of the real weights).\n", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.work or temporary
        Path(folder).mkdir(parents=True, exist_ok=True)
        for variant in args.variants:
            ready = in_subprocess(["--warm-up", variant, str(random_checkpoint(variant, Path(folder))), *common],
                                  folder)
            print(f"{variant}: {ready.get('backend', ready.get('error'))}, set-up before the first image "
                  f"(network export on a first run) {ready.get('seconds', float('nan')):.1f} s, not in the rows")
        print("\n" + HEADER, flush=True)
        for scene in args.scenes:
            frames = min(SCENES[scene][0], args.max_frames or SCENES[scene][0])
            for variant in args.variants:
                weights = random_checkpoint(variant, Path(folder))
                runs = [(variant, common)]
                if args.baseline:
                    runs.append((f"{variant} (baseline)", [*common, "--set", *BASELINE]))
                for label, options in runs:
                    row = in_subprocess(["--single", scene, variant, str(frames), str(weights), *options], folder)
                    row.setdefault("scene", scene)
                    row["variant"] = label
                    rows.append(row)
                    print(f"| {scene} | {label} | failed: {row['error']} |" if "error" in row else format_row(row),
                          flush=True)
            if scene == "room" and not args.no_reference:
                row = in_subprocess(["--reference", str(frames), *common], folder)
                rows.append(row)
                print(f"| room | reference | failed: {row['error']} |" if "error" in row else format_row(row),
                      flush=True)
    if args.out:
        from metricslam.io.atomic import write_text_atomic

        write_text_atomic(args.out, json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
