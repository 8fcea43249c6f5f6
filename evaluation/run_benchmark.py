"""Accuracy benchmark: the whole system over a set of sequences with every applicable depth prior.

    python evaluation/run_benchmark.py [--out outputs/benchmark] [--results docs/results.md] [--quick]
        [--priors sensor simulated none] [--shared DIR] [--data PATH ...] [--preset auto|handheld|driving]
        [--weights W] [--max-frames N] [--mesh]

Sequences: synthetic room (300 frames, 512x384) and street (600 frames, about 600 m), every real clip found in
the shared data folder (default ../shared/data: HoloLens, TUM RGB-D, KITTI and EuRoC excerpts, whatever layout
each has) and any --data folders (a sequence folder or a folder of them). Each sequence runs with each requested
prior it supports (sensor and simulated need depth images; metric3d needs --weights) under the default settings
a user gets, the preset chosen automatically (``--preset`` forces one), through
``metricslam.pipeline.run_sequence``, so the fps are end to end (reading or rendering, priors, SLAM). Writes into
--out: results.md and results.csv (one row per run), results.png (ATE and fps per run) and
runs/<sequence>__<prior>/ (every run's own outputs and plots); with --results, the table also replaces the
benchmark section of that markdown file. The targets are checked where they are defined (full-length runs;
--quick runs are shorter and only indicative).
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from metricslam.errors import MetricSlamError
from metricslam.io.atomic import atomic_path, write_text_atomic
from metricslam.io.sequences import detect_layout, open_sequence
from metricslam.io.sequences.base import Sequence
from metricslam.io.synthetic import SyntheticSequence
from metricslam.mapping.export import MappingConfig
from metricslam.pipeline import run_sequence
from metricslam.slam.presets import PRESETS, resolve_preset

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
PRIORS = ("sensor", "simulated", "none", "metric3d")
# Targets under the default settings: (sequence, prior) -> [(metric, bound)]; abs_scale_error is |1 - Sim3 scale|.
TARGETS = {
    ("synthetic_room", "simulated"): [("ate_se3_rmse_m", 0.02), ("abs_scale_error", 0.01)],
    ("synthetic_street", "simulated"): [("kitti_t_err_pct", 1.5)],
    ("hololens_000", "sensor"): [("ate_se3_rmse_m", 0.03)],
    ("hololens_000", "simulated"): [("ate_se3_rmse_m", 0.05), ("abs_scale_error", 0.02)],
    ("hololens_000", "none"): [("ate_sim3_rmse_m", 0.08)],
    ("rgbd_dataset_freiburg1_rpy", "sensor"): [("ate_se3_rmse_m", 0.02)],
    ("rgbd_dataset_freiburg1_rpy", "simulated"): [("ate_se3_rmse_m", 0.025)],
    ("rgbd_dataset_freiburg1_rpy", "none"): [("ate_sim3_rmse_m", 0.025)],
    ("kitti_odometry_00_first91", "none"): [("ate_sim3_rmse_m", 0.2)],
    ("kitti_odometry_06_first51", "none"): [("ate_sim3_rmse_m", 0.1)],
}
COLUMNS = ("sequence", "prior", "preset", "frames", "keyframes", "fps", "ate_se3_rmse_m", "ate_sim3_rmse_m",
           "scale_error", "kitti_t_err_pct", "rpe_trans_rmse_m", "target", "status")
RESULTS_BEGIN = "<!-- run_benchmark: begin -->"
RESULTS_END = "<!-- run_benchmark: end -->"


@dataclass
class Entry:
    """One sequence to run: how to open it (lazily, once per prior) and which config file applies."""

    name: str
    layout: str | None  # detect_layout's answer for recorded clips (the preset rule reads it)
    make: Callable[[], Sequence]
    has_depth: bool


def _synthetic(scene: str, frames: int) -> Entry:
    return Entry(f"synthetic_{scene}", None,
                 lambda: SyntheticSequence(scene, frames=frames, width=512, height=384, seed=0), True)


def _recorded(path: Path, max_frames: int | None) -> Entry:
    def opener() -> Sequence:
        return open_sequence(path, end=max_frames)

    seq = opener()  # opened once here to fail early and learn whether it has depth
    return Entry(path.name, detect_layout(path), opener, seq.has_depth)


def _is_sequence(path: Path) -> bool:
    try:
        detect_layout(path)
    except MetricSlamError:
        return False
    return True


def _sequence_folders(root: Path, depth: int = 2) -> Iterator[Path]:
    """``root`` itself when it is a sequence, else the sequences among its sub-folders, ``depth`` levels down."""
    if _is_sequence(root):
        yield root
    elif depth > 0:
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            yield from _sequence_folders(sub, depth - 1)


def entries(args: argparse.Namespace) -> list[Entry]:
    synthetic = [_synthetic("room", 60 if args.quick else 300), _synthetic("street", 120 if args.quick else 600)]
    out: list[Entry] = []
    limit = args.max_frames or (40 if args.quick else None)
    roots = [Path(p) for p in args.data]
    if args.shared is not None and args.shared.is_dir():
        # Each real clip of the shared data folder (trajectory-only folders hold no sequence and are passed over).
        roots += sorted(p for p in args.shared.iterdir() if p.is_dir())
    for root in roots:
        if not root.is_dir():
            raise MetricSlamError(f"{root}: no such folder; pass a sequence folder or a folder of sequences")
        out += [_recorded(folder, limit) for folder in _sequence_folders(root)]
    return out + synthetic


def applicable(entry: Entry, prior: str, weights: str | None) -> str | None:
    """Why ``prior`` cannot run on ``entry`` (None when it can)."""
    if prior in ("sensor", "simulated") and not entry.has_depth:
        return "no depth images"
    if prior == "metric3d" and not weights:
        return "no --weights"
    return None


def check_targets(name: str, prior: str, metrics: dict) -> str:
    bounds = TARGETS.get((name, prior))
    if not bounds:
        return ""
    values = {**metrics, "abs_scale_error": None if metrics["scale_error"] is None else abs(metrics["scale_error"])}
    parts = []
    for key, bound in bounds:
        value = values.get(key)
        ok = value is not None and value <= bound
        parts.append(f"{key} <= {bound:g}: {'met' if ok else 'MISSED'}")
    return "; ".join(parts)


def run_one(entry: Entry, prior: str, args: argparse.Namespace) -> dict:
    overrides = [f"prior.kind={prior}", *args.set]
    if prior == "metric3d":
        overrides.append(f"prior.weights={args.weights}")
    out = args.out / "runs" / f"{entry.name}__{prior}"
    row = dict.fromkeys(COLUMNS, None) | {"sequence": entry.name, "prior": prior, "target": ""}
    start = time.perf_counter()
    try:
        seq = entry.make()
        choice = resolve_preset(args.preset, seq, entry.layout)
        row["preset"] = choice.name
        cfg = choice.config(overrides)
        result = run_sequence(seq, out, cfg, progress=not args.no_progress,
                              mapping=MappingConfig() if args.mesh else None, overwrite=True)
    except Exception as exc:  # a benchmark reports a failed run and goes on with the others
        row["status"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        print(f"{entry.name} / {prior}: {row['status']}", file=sys.stderr)
        return row
    m = result.metrics or {}
    row |= {k: m[k] for k in COLUMNS if k in m and k != "sequence"}
    row |= {"frames": result.reconstruction.num_frames, "keyframes": result.reconstruction.num_keyframes,
            "fps": result.fps, "status": "ok" if result.metrics else "ok (no ground truth)"}
    if result.metrics:
        row["target"] = check_targets(entry.name, prior, m)
    print(f"{entry.name} / {prior} ({row['preset']}): {row['frames']} frames, {row['keyframes']} keyframes, {row['fps']:.1f} fps, "
          f"ATE SE3 {_fmt(row['ate_se3_rmse_m'], '.4f')} m, Sim3 {_fmt(row['ate_sim3_rmse_m'], '.4f')} m "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    return row


def _fmt(value: float | None, fmt: str) -> str:
    """``fmt`` for ordinary values; diverged runs (huge or non-finite numbers) in short scientific notation."""
    if value is None:
        return "-"
    return format(value, fmt) if np.isfinite(value) and abs(value) < 1e6 else format(value, ".3g")


def markdown(rows: list[dict], quick: bool) -> str:
    head = ["sequence", "prior", "preset", "frames", "keyframes", "fps", "ATE SE3 (cm)", "ATE Sim3 (cm)", "scale error (%)",
            "KITTI t_err (%)", "RPE (cm/frame)", "target", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["sequence"], r["prior"], r["preset"] or "-", _fmt(r["frames"], "d"), _fmt(r["keyframes"], "d"), _fmt(r["fps"], ".1f"),
                 _fmt(None if r["ate_se3_rmse_m"] is None else 100 * r["ate_se3_rmse_m"], ".2f"),
                 _fmt(None if r["ate_sim3_rmse_m"] is None else 100 * r["ate_sim3_rmse_m"], ".2f"),
                 _fmt(None if r["scale_error"] is None else 100 * r["scale_error"], "+.2f"),
                 _fmt(r["kitti_t_err_pct"], ".2f"),
                 _fmt(None if r["rpe_trans_rmse_m"] is None else 100 * r["rpe_trans_rmse_m"], ".2f"),
                 r["target"] or "-", r["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("Quick run (shortened sequences): targets are defined for the full-length runs.\n\n" if quick else "")
    return (f"{note}Default settings (preset chosen automatically). Scale error = 1 - Sim3 scale (positive: estimate too large). "
            "fps end to end (reading/rendering, priors, SLAM, final BA). Prior 'none' has arbitrary scale: compare "
            "its ATE Sim3.\n\n" + "\n".join(lines) + "\n")


def _with_section(path: Path, table: str) -> str:
    """``path``'s text with the benchmark section replaced by ``table`` (appended when it has none)."""
    text = path.read_text() if path.is_file() else ""
    block = f"{RESULTS_BEGIN}\n{table}{RESULTS_END}\n"
    if RESULTS_BEGIN in text and RESULTS_END in text:
        head, rest = text.split(RESULTS_BEGIN, 1)
        return head + block + rest.split(RESULTS_END, 1)[1].lstrip("\n")
    return text + ("\n" if text and not text.endswith("\n") else "") + block


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def plot(path: Path, rows: list[dict]) -> None:
    """ATE per run (SE3 for metric priors, Sim3 for 'none') and fps per run."""
    done = [r for r in rows if r["fps"] is not None]
    labels = [f"{r['sequence']}\n{r['prior']}" for r in done]
    ate = [r["ate_sim3_rmse_m"] if r["prior"] == "none" else r["ate_se3_rmse_m"] for r in done]
    fig = Figure(figsize=(max(6.0, 0.9 * len(done) + 2), 7.5), dpi=100)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(done))
    ax1.bar(x, [100 * v if v is not None else np.nan for v in ate],
            color=["tab:gray" if r["prior"] == "none" else "tab:blue" for r in done])
    ax1.set_ylabel("ATE RMSE [cm]\n(blue SE3, grey Sim3)")
    ax1.set_yscale("log")
    ax1.grid(True, axis="y", alpha=0.3)
    ax2.bar(x, [r["fps"] for r in done], color="tab:green")
    ax2.axhline(20, color="k", ls="--", lw=1, label="20 fps target")
    ax2.set_ylabel("frames/s (end to end)")
    ax2.legend(fontsize=8)
    ax2.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def write_results(args: argparse.Namespace, rows: list[dict]) -> str:
    """results.md, results.csv and results.png in --out (and the --results section) for ``rows``; the table."""
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, args.quick)
    write_text_atomic(args.out / "results.md", "# metricslam SLAM benchmark\n\n" + table)
    if args.results is not None:
        write_text_atomic(args.results, _with_section(args.results, table))
    write_csv(args.out / "results.csv", rows)
    plot(args.out / "results.png", rows)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmark"))
    parser.add_argument("--priors", nargs="+", choices=PRIORS, default=["sensor", "simulated", "none", "metric3d"])
    parser.add_argument("--results", type=Path, metavar="FILE",
                        help="also put the table into this markdown file (e.g. docs/results.md), between "
                             f"'{RESULTS_BEGIN}' and '{RESULTS_END}' (appended when the markers are missing)")
    parser.add_argument("--shared", type=Path, default=SHARED_DATA, metavar="DIR",
                        help="folder of real clips, each run when it holds a sequence (default ../shared/data)")
    parser.add_argument("--data", nargs="+", default=[], metavar="PATH",
                        help="more sequence folders or folders of sequences (any layout)")
    parser.add_argument("--preset", choices=("auto", *PRESETS), default="auto",
                        help="settings preset for every run (default auto: each sequence's own choice)")
    parser.add_argument("--weights", help="Metric3D checkpoint for the metric3d prior")
    parser.add_argument("--max-frames", type=int, help="use at most this many frames of recorded sequences")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="SLAM config overrides for every run")
    parser.add_argument("--mesh", action="store_true", help="also fuse meshes (slower)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="short version: room 60, street 120, recorded sequences 40 frames")
    args = parser.parse_args()
    try:
        todo = entries(args)
    except MetricSlamError as exc:
        print(f"run_benchmark: error: {exc}", file=sys.stderr)
        return 2
    rows: list[dict] = []
    table = markdown(rows, args.quick)
    for entry in todo:
        for prior in args.priors:
            reason = applicable(entry, prior, args.weights)
            if reason is None:
                rows.append(run_one(entry, prior, args))
                table = write_results(args, rows)  # after every run: a long benchmark stopped early keeps its rows
    print("\n" + table)
    print(f"wrote {args.out / 'results.md'}, results.csv, results.png and runs/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
