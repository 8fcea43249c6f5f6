"""CPU time per image and peak memory of each Metric3D variant at the official and reduced input sizes, per
forward backend.

    python evaluation/bench_depth.py [--variants vit_small convnext_tiny] [--scales 1 0.5 0.25] [--repeats 3]
                                     [--backends torch:fp32 openvino:fp32 torch:bf16 openvino:bf16]

Random weights (the numbers do not depend on them). Each (variant, size) runs in its own process, its backends
taking turns within every repeat so that the machine's load changes hit them alike; peak MB is that process's
(all its backends loaded). Variants whose estimated footprint exceeds the available memory are skipped.
's/image' is the fastest of the repeats (the least disturbed by other jobs); 'x torch' is that time over the plain torch float32 forward of the same variant and size in the same run; 'max rel'
is the largest relative depth difference from that forward on the same seeded image and weights (bf16 differs by
design; fp32 backends only by the order of operations). 'setup s' is the one-off cost before the first image
(OpenVINO: converting the network, saved for later runs when the weights are a file).
Reduced sizes trade accuracy for speed: the network sees a quarter (0.5) or a sixteenth (0.25) of the pixels, and
the official sizes are what the published accuracy was measured at.
Reference (upstream implementation, random weights, 2 CPU cores): ViT-S 616x1064 about 12.9 s,
ConvNeXt-T 544x1216 about 3.8 s per image.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

UPSTREAM_SECONDS = {("vit_small", (616, 1064)): 12.9, ("convnext_tiny", (544, 1216)): 3.8}
# Resident memory per parameter byte while running (weights + activations at the official size), and a floor.
FOOTPRINT_FACTOR = 3.0
FOOTPRINT_BASE = 1.5e9


def available_memory() -> float:
    """MemAvailable in bytes (Linux), else infinity."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def parameter_bytes(variant: str) -> int:
    """float32 bytes of the variant's parameters, counted without allocating them (meta device)."""
    import torch

    from metricslam.depth.models.metric3d import build_metric3d

    with torch.device("meta"):
        model = build_metric3d(variant)
    return 4 * sum(p.numel() for p in model.parameters())


def run_single(variant: str, size: tuple[int, int], repeats: int, threads: int | None,
               backends: list[str]) -> list[dict]:
    """Time ``repeats`` predictions per backend (after one warm-up each) on an image of exactly the input size.

    The backends take turns within each repeat, so a change in the machine's load hits all of them alike; the
    torch float32 forward is the reference for the time ratio and the depth difference."""
    import numpy as np
    import torch

    from metricslam.depth.predictor import Metric3DPredictor
    from metricslam.geometry.camera import Intrinsics

    if threads:
        torch.set_num_threads(threads)
    specs = list(dict.fromkeys(["torch:fp32", *backends]))
    predictors, depths, setup = {}, {}, {}
    for spec in specs:
        backend, precision = spec.split(":")
        torch.manual_seed(0)  # the same random weights for every backend
        predictors[spec] = Metric3DPredictor(variant, None, device="cpu", input_size=size, allow_random=True,
                                             backend=backend, precision=precision)
    h, w = predictors["torch:fp32"].input_size
    rgb = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    K = Intrinsics(1.2 * w, 1.2 * w, w / 2, h / 2, w, h)
    for spec, predictor in predictors.items():
        start = time.perf_counter()
        depths[spec] = predictor.predict(rgb, K).depth
        setup[spec] = time.perf_counter() - start
    times: dict[str, list[float]] = {spec: [] for spec in specs}
    for _ in range(repeats):
        for spec, predictor in predictors.items():
            start = time.perf_counter()
            predictor.predict(rgb, K)
            times[spec].append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ref = depths["torch:fp32"]
    reference_seconds = min(times["torch:fp32"])
    rows = []
    for spec in specs:
        seconds = min(times[spec])  # the least disturbed repeat: on a shared machine the others add its load
        rows.append({"variant": variant, "input": [h, w], "backend": spec, "seconds": seconds,
                     "all_seconds": times[spec], "vs_torch": seconds / reference_seconds,
                     "max_rel": float(np.max(np.abs(depths[spec] - ref) / np.maximum(ref, 1e-6))),
                     "setup_seconds": max(setup[spec] - seconds, 0.0), "peak_mb": peak_mb,
                     "threads": torch.get_num_threads()})
    return rows


def benchmark(args: argparse.Namespace) -> list[dict]:
    from metricslam.depth.models.metric3d import VARIANTS
    from metricslam.depth.predictor import valid_input_size

    rows = []
    memory = available_memory()
    for variant in args.variants or list(VARIANTS):
        need = FOOTPRINT_FACTOR * parameter_bytes(variant) + FOOTPRINT_BASE
        if need > memory:
            rows.append({"variant": variant, "skipped": f"needs about {need / 1e9:.1f} GB, {memory / 1e9:.1f} GB free"})
            continue
        official = VARIANTS[variant].input_size
        sizes = dict.fromkeys(valid_input_size(variant, (official[0] * s, official[1] * s)) for s in args.scales)
        for size in sizes:
            cmd = [sys.executable, __file__, "--single", variant, str(size[0]), str(size[1]),
                   "--repeats", str(args.repeats), "--backends", *args.backends]
            done = subprocess.run(cmd + (["--threads", str(args.threads)] if args.threads else []),
                                  capture_output=True, text=True)
            if done.returncode != 0:
                lines = done.stderr.strip().splitlines() or ["failed without a message"]
                rows.append({"variant": variant, "input": list(size), "skipped": lines[-1]})
                continue
            for row in json.loads(done.stdout.strip().splitlines()[-1]):
                row["upstream_seconds"] = UPSTREAM_SECONDS.get((variant, tuple(row["input"])))
                rows.append(row)
                print(format_row(row), flush=True)
    return rows


def format_row(row: dict) -> str:
    if "skipped" in row:
        return f"{row['variant']:15s} {'x'.join(map(str, row.get('input', []))) or '-':>10s}  skipped: {row['skipped']}"
    ref = f"{row['upstream_seconds']:.1f}" if row.get("upstream_seconds") else "-"
    ratio = f"{row['vs_torch']:.2f}" if row.get("vs_torch") is not None else "-"
    rel = f"{row['max_rel']:.1e}" if row.get("max_rel") is not None else "-"
    return (f"{row['variant']:15s} {row['input'][0]:>4d}x{row['input'][1]:<5d} {row['backend']:14s} "
            f"{row['seconds']:9.3f} {ratio:>8s} {rel:>8s} {row['setup_seconds']:8.1f} {row['peak_mb']:9.0f} {ref:>9s}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=None, help="default: every variant that fits in memory")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 0.25],
                   help="input sizes as fractions of the official one (rounded to valid multiples)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--backends", nargs="+", default=["torch:fp32", "openvino:fp32"], metavar="BACKEND:PRECISION",
                   help="forward backends to time (torch or openvino, fp32 or bf16); torch:fp32 always runs")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--single", nargs=3, metavar=("VARIANT", "H", "W"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.single:
        variant, h, w = args.single
        print(json.dumps(run_single(variant, (int(h), int(w)), args.repeats, args.threads, args.backends)))
        return 0
    print(f"{'variant':15s} {'input':>10s} {'backend':14s} {'s/image':>9s} {'x torch':>8s} {'max rel':>8s} "
          f"{'setup s':>8s} {'peak MB':>9s} {'upstream':>9s}")
    rows = benchmark(args)
    for row in rows:
        if "skipped" in row:
            print(format_row(row))
    if args.out:
        from metricslam.io.atomic import write_text_atomic

        write_text_atomic(args.out, json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
