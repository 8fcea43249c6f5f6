"""Cost of the learned (DROID) correspondences on this machine: time per edge update, per keyframe, and memory.

    python evaluation/bench_droid.py [--size 384 512] [--edges 24] [--threads 2] [--weights droid.pth] [--json F]

Random weights by default (the cost does not depend on them). Each correlation implementation runs in its own
process so that its peak memory is measured alone (peak RSS above the RSS before the correlation is built).
A front-end keyframe is modelled as upstream DROID-SLAM's: extract features of the new frame, build correlation
for the new edges (--new-edges), then --iters update steps (upstream: 4 + 2) over all --edges active edges, each
step a correlation lookup plus one update operator call. BA time is not included.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from metricslam.io.atomic import write_text_atomic
from metricslam.slam.correspondence.droid import DroidNet, build_corr, load_droid_weights, motion_features, pixel_grid

# (correlation implementation, target motion): the volume lookup cost does not depend on the motion; the local one
# is fastest for smooth motion (windows of nearby pixels overlap) and slowest for unrelated random targets.
CASES = (("volume", "smooth"), ("local", "smooth"), ("local", "random"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, nargs=2, default=(384, 512), metavar=("H", "W"), help="image size (/8 grid)")
    p.add_argument("--edges", type=int, default=24, help="active edges per update step")
    p.add_argument("--new-edges", type=int, default=8, help="edges added per keyframe (correlation built)")
    p.add_argument("--iters", type=int, default=6, help="update steps per keyframe")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", default=None, help="droid.pth (default: random weights)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--child", nargs=2, metavar=("IMPL", "MOTION"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls after one warm-up call, and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        out = None  # free the previous result first so that it does not count twice in the peak memory
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def edge_list(frames: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` edges between nearby frames (both directions, nearest first), like a front-end window."""
    pairs = sorted(((i, j) for i in range(frames) for j in range(frames) if i != j), key=lambda p: (abs(p[0] - p[1]), p))
    ii, jj = zip(*pairs[:count])
    return torch.tensor(ii), torch.tensor(jj)


def targets(grid: torch.Tensor, edges: int, motion: str, g: torch.Generator) -> torch.Tensor:
    """Target coordinates (E, h, w, 2): 'smooth' = per-edge similarity motion (shift up to 8 grid px, 5 % zoom,
    3 degrees) plus a +-1 px parallax-like wave; 'random' = uniform over the image, unrelated between pixels."""
    h, w = grid.shape[:2]
    if motion == "random":
        return torch.rand((edges, h, w, 2), generator=g) * torch.tensor([w - 1.0, h - 1.0])
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2])
    angle = torch.deg2rad(3 * (2 * torch.rand(edges, generator=g) - 1))
    zoom = 1 + 0.05 * (2 * torch.rand(edges, generator=g) - 1)
    rot = torch.stack([torch.cos(angle), -torch.sin(angle), torch.sin(angle), torch.cos(angle)], -1).view(-1, 2, 2)
    shift = 8 * (2 * torch.rand(edges, 2, generator=g) - 1)
    moved = torch.einsum("eij,hwj->ehwi", zoom[:, None, None] * rot, grid - centre) + centre + shift[:, None, None]
    return moved + torch.sin(grid.flip(-1) / 4)


def run_child(args: argparse.Namespace) -> dict:
    impl = args.child[0]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = load_droid_weights(args.weights, device) if args.weights else DroidNet().to(device).eval()
    h, w = args.size
    frames = 2
    while frames * (frames - 1) < args.edges:
        frames += 1
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (frames, 3, h, w), dtype=torch.uint8, generator=g).to(device)
    ii, jj = edge_list(frames, args.edges)
    with torch.inference_mode():
        t_extract, _ = timed(lambda: model.extract(images[:1]), args.repeats, sync)
        fmap, net, inp = zip(*(model.extract(images[k:k + 1]) for k in range(frames)))
        fmap, net, inp = torch.cat(fmap), torch.cat(net)[ii.to(device)], torch.cat(inp)[ii.to(device)]
        grid = pixel_grid(h // 8, w // 8, device)
        coords1 = targets(grid, len(ii), args.child[1], g).to(device)
        motion = motion_features(coords1, coords1 + torch.randn(coords1.shape, generator=g).to(device))

        rss_before = _status_mb("VmRSS") or peak_rss_mb()
        exact_peak = reset_peak_rss()
        t_build, corr = timed(lambda: build_corr(impl, fmap, ii, jj), args.repeats, sync)
        t_lookup, feats = timed(lambda: corr(coords1), args.repeats, sync)
        t_update, _ = timed(lambda: model.update(net, inp, feats, motion, ii), args.repeats, sync)
        peak = peak_rss_mb() - rss_before
    e = len(ii)
    step = t_lookup + t_update
    build_per_edge = t_build / e if impl == "volume" else 0.0  # local: pyramids once per frame, negligible
    return {
        "impl": impl, "motion": args.child[1], "edges": e, "grid": [h // 8, w // 8], "threads": torch.get_num_threads(),
        "extract_ms_per_frame": 1e3 * t_extract, "build_ms": 1e3 * t_build, "lookup_ms": 1e3 * t_lookup,
        "update_ms": 1e3 * t_update, "ms_per_edge_update": 1e3 * step / e,
        "s_per_keyframe": t_extract + args.new_edges * build_per_edge + args.iters * step,
        "stored_mb": corr.nbytes() / 2**20, "stored_mb_per_edge": corr.nbytes() / 2**20 / e,
        "peak_mb": peak, "peak_exact": exact_peak,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)))
        return
    forwarded = list(argv if argv is not None else sys.argv[1:])
    rows = []
    for impl, motion in CASES:
        out = subprocess.run([sys.executable, __file__, *forwarded, "--child", impl, motion], check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    first = rows[0]
    print(f"DROID network on {args.device}, {first['threads']} threads, images {args.size[0]}x{args.size[1]} "
          f"(grid {first['grid'][0]}x{first['grid'][1]}), {first['edges']} edges per step, {args.iters} steps and "
          f"{args.new_edges} new edges per keyframe; feature extraction {first['extract_ms_per_frame']:.0f} ms/frame")
    header = (f"{'corr':<7}{'motion':<8}{'build ms':>10}{'lookup ms':>11}{'update ms':>11}{'ms/edge':>9}{'s/keyframe':>12}"
              f"{'stored MB':>11}{'MB/edge':>9}{'peak +MB':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        peak = f"{r['peak_mb']:.0f}" + ("" if r["peak_exact"] else "*")
        print(f"{r['impl']:<7}{r['motion']:<8}{r['build_ms']:>10.0f}{r['lookup_ms']:>11.0f}{r['update_ms']:>11.0f}"
              f"{r['ms_per_edge_update']:>9.1f}{r['s_per_keyframe']:>12.2f}{r['stored_mb']:>11.0f}"
              f"{r['stored_mb_per_edge']:>9.1f}{peak:>10}")
    if not all(r["peak_exact"] for r in rows):
        print("* peak RSS of the whole process (the kernel's peak counter could not be reset)")
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
