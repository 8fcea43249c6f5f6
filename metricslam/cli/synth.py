"""``metricslam synth``: render a synthetic world with ground truth into the generic folder layout."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from metricslam.io.images import read_depth
from metricslam.io.synthetic import WORLDS, SyntheticSequence, write_sequence


def summary(seq: SyntheticSequence, out: Path) -> str:
    """What was written: frames, camera, path length, depth range (read back from the files) and file list."""
    K = seq.intrinsics
    positions = seq.gt_trajectory().positions
    path = float(np.linalg.norm(np.diff(positions, axis=0), axis=1).sum())
    depth = np.concatenate([read_depth(p, seq.depth_scale).ravel() for p in sorted((out / "depth").glob("*.png"))])
    valid = depth[depth > 0]
    d_range = f"{valid.min():.2f} .. {valid.max():.2f} m ({100 * valid.size / depth.size:.0f}% valid)" if valid.size else "none"
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir() if not p.name.startswith("."))
    return "\n".join([
        f"wrote {seq.name} to {out}",
        f"  frames      {len(seq)} at {K.width}x{K.height}, {seq.timestamps[-1]:.2f} s",
        f"  intrinsics  fx {K.fx:.2f} fy {K.fy:.2f} cx {K.cx:.2f} cy {K.cy:.2f}",
        f"  path length {path:.2f} m",
        f"  depth       {d_range}",
        f"  files       {', '.join(files)}",
    ])


def run(args: argparse.Namespace) -> int:
    seq = SyntheticSequence(args.scene, frames=args.frames, width=args.width, height=args.height, fx=args.fx,
                            seed=args.seed, speed=args.speed)
    out = write_sequence(seq, args.out)
    print(summary(seq, out))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("synth", help="render a synthetic sequence with ground truth (room or street)",
                              description="Render a procedural world along a smooth trajectory and write RGB, "
                                          "depth, poses and intrinsics in the generic folder layout.")
    p.add_argument("--scene", choices=WORLDS, default="room", help="world to render (default room)")
    p.add_argument("--frames", type=int, default=100, metavar="N", help="number of frames (default 100)")
    p.add_argument("--width", type=int, default=640, metavar="PX", help="image width in pixels (default 640)")
    p.add_argument("--height", type=int, default=480, metavar="PX", help="image height in pixels (default 480)")
    p.add_argument("--fx", type=float, default=None, metavar="PX", help="focal length in pixels (default: 65 degree horizontal FOV)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="world and trajectory seed (default 0)")
    p.add_argument("--speed", type=float, default=1.0, metavar="X", help="motion per frame relative to the default (default 1)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)
