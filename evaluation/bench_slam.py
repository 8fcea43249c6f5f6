"""SLAM speed and memory at the 384x512 processing size, depth priors precomputed.

    python evaluation/bench_slam.py [--scenes room street] [--room-frames 300] [--street-frames 500]
                                    [--width 512 --height 384] [--threads N] [--set key=value ...] [--quick]
                                    [--preset none|auto|handheld|driving]

Frames are rendered, brought to the processing size (metricslam.slam.preprocess, as Slam does) and their simulated
metric priors computed before the clock starts; the timed part is ``Slam.track`` for every frame plus
``Slam.finish`` (final global BA and the all-frame filler). Reported per scene:

- fps: frames / (tracking + finish) seconds; fps per CPU s: frames / process CPU seconds of the same part (all
  threads), the throughput a core gives when no other job shares it (wall-clock fps falls with the machine's
  load); ms/frame for frames that did not become keyframes, ms/keyframe for those that did (tracking + window
  BA, and the periodic global BA when it falls on that frame); finish seconds
- memory: growth of the process's resident set during the timed part over its size at the start (sampled every
  10 ms), and the keyframe store's own bytes per keyframe (KeyframeStore.nbytes: grids, images, full priors)
- ATE SE3 and the KITTI t_err (street) as a sanity check that the timed work was real work
Timings are wall-clock on a shared machine: expect noise of 10-20 %.
"""
from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass

import numpy as np
import psutil
import torch

from metricslam.config import load_config
from metricslam.depth.priors import NETWORK_PRIOR_WEIGHT, SimulatedPrior
from metricslam.device import resolve_device
from metricslam.io.frame import Frame
from metricslam.io.synthetic import SyntheticSequence
from metricslam.metrics.trajectory import evaluate_trajectory
from metricslam.slam.config import SlamConfig
from metricslam.slam.preprocess import prepare_frame, processing_camera
from metricslam.slam.presets import PRESETS, resolve_preset
from metricslam.slam.system import Slam


class PrecomputedPrior:
    """Priors computed before the timed loop, looked up by frame index."""

    name, metric, ba_weight = "simulated", True, NETWORK_PRIOR_WEIGHT

    def __init__(self, priors: dict[int, tuple[np.ndarray, np.ndarray] | None]):
        self.priors = priors

    def __call__(self, frame: Frame) -> tuple[np.ndarray, np.ndarray] | None:
        return self.priors[frame.index]


class PeakRSS:
    """Largest resident set size seen while running, sampled by a background thread."""

    def __init__(self, interval: float = 0.01):
        self.process = psutil.Process()
        self.interval = interval
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


@dataclass
class Row:
    scene: str
    frames: int
    size: str
    keyframes: int
    fps: float
    cpu_fps: float
    ms_frame: float
    ms_keyframe: float
    finish_s: float
    rss_growth_mb: float
    store_mb_per_kf: float
    ate_se3_m: float | None
    kitti_t_err_pct: float | None


def prepare(scene: str, frames: int, width: int, height: int, cfg: SlamConfig) -> tuple[list[Frame], PrecomputedPrior, SyntheticSequence]:
    """Rendered frames at the processing size and their simulated priors (outside the timed part)."""
    seq = SyntheticSequence(scene, frames=frames, width=width, height=height, seed=0)
    size, camera = processing_camera(seq.intrinsics, cfg.image_area, cfg.stride, cfg.upscale)
    ready = [prepare_frame(f, size, camera) for f in seq]
    simulated = SimulatedPrior(cfg.prior.simulated)
    return ready, PrecomputedPrior({f.index: simulated(f) for f in ready}), seq


def measure(scene: str, frames: int, width: int, height: int, cfg: SlamConfig) -> Row:
    ready, prior, seq = prepare(scene, frames, width, height, cfg)
    slam = Slam(cfg, prior)
    frame_times, keyframe_times = [], []
    last_uid = -1
    cpu0 = time.process_time()
    with PeakRSS() as rss:
        for frame in ready:
            t0 = time.perf_counter()
            slam.track(frame)
            dt = time.perf_counter() - t0
            uid = int(slam.store.uid[-1])
            (keyframe_times if uid != last_uid else frame_times).append(dt)
            last_uid = uid
        t0 = time.perf_counter()
        rec = slam.finish()
        finish = time.perf_counter() - t0
        store_bytes = slam.store.nbytes()
    cpu = time.process_time() - cpu0
    total = sum(frame_times) + sum(keyframe_times) + finish
    metrics = evaluate_trajectory(seq.gt_trajectory(), rec.trajectory())
    cam = ready[0].intrinsics
    return Row(
        scene=scene, frames=len(ready), size=f"{cam.height}x{cam.width}", keyframes=rec.num_keyframes,
        fps=len(ready) / total, cpu_fps=len(ready) / cpu,
        ms_frame=1e3 * float(np.mean(frame_times)) if frame_times else float("nan"),
        ms_keyframe=1e3 * float(np.mean(keyframe_times)), finish_s=finish, rss_growth_mb=rss.growth_mb,
        store_mb_per_kf=store_bytes / 2**20 / max(len(slam.store), 1), ate_se3_m=metrics["ate_se3_rmse_m"],
        kitti_t_err_pct=metrics["kitti_t_err_pct"],
    )


def table(rows: list[Row]) -> str:
    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None or not np.isfinite(v) else format(v, fmt)

    head = ("| scene | frames | size (HxW) | keyframes | fps | fps per CPU s | ms/frame | ms/keyframe | finish s "
            "| RSS growth MB | store MB/keyframe | ATE SE3 m | KITTI t_err % |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r.scene} | {r.frames} | {r.size} | {r.keyframes} | {r.fps:.1f} | {r.cpu_fps:.1f} "
            f"| {num(r.ms_frame, '.1f')} "
            f"| {r.ms_keyframe:.1f} | {r.finish_s:.2f} | {r.rss_growth_mb:.0f} | {r.store_mb_per_kf:.2f} "
            f"| {num(r.ate_se3_m, '.4f')} | {num(r.kitti_t_err_pct, '.2f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", nargs="+", default=["room", "street"], choices=["room", "street"])
    parser.add_argument("--room-frames", type=int, default=300)
    parser.add_argument("--street-frames", type=int, default=500)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="SLAM config overrides")
    parser.add_argument("--preset", choices=("none", "auto", *PRESETS), default="none",
                        help="settings preset: none (SlamConfig's defaults, the budget setting), auto (each scene's "
                             "own choice, as `metricslam run` makes it: handheld room, driving street) or a name")
    parser.add_argument("--quick", action="store_true", help="60 room and 120 street frames")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = ["prior.kind=simulated", *args.set]
    lengths = {"room": 60 if args.quick else args.room_frames, "street": 120 if args.quick else args.street_frames}
    rows = []
    for scene in args.scenes:
        if args.preset == "none":
            cfg = load_config(SlamConfig, overrides=overrides)
        else:
            seq = SyntheticSequence(scene, frames=lengths[scene], width=args.width, height=args.height, seed=0)
            cfg = resolve_preset(args.preset, seq).config(overrides)
        print(f"{scene}: rendering {lengths[scene]} frames and precomputing priors ...", flush=True)
        rows.append(measure(scene, lengths[scene], args.width, args.height, cfg))
    print(f"\ntorch threads {torch.get_num_threads()}, device {resolve_device(cfg.device)}, preset {args.preset}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
