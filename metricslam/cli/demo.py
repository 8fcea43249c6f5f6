"""``metricslam demo``: the interim demo -- render a short synthetic room sequence and show what was made."""
from __future__ import annotations

import argparse
from pathlib import Path

from metricslam.cli.synth import summary
from metricslam.io.synthetic import SyntheticSequence, write_sequence


def run(args: argparse.Namespace) -> int:
    seq = SyntheticSequence("room", frames=args.frames, width=320, height=240, seed=0)
    out = write_sequence(seq, Path(args.out) / "sequence")
    print(summary(seq, out))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="render a short synthetic room sequence (interim demo)",
                              description="Render a synthetic furnished room (320x240) with ground-truth depth "
                                          "and poses into OUT/sequence and print a summary.")
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--frames", type=int, default=60, help="number of frames (default 60)")
    p.set_defaults(func=run)
