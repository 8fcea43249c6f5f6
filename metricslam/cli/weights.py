"""``metricslam weights list | download NAME | path NAME``: the official checkpoints and the local cache."""
from __future__ import annotations

import argparse

from metricslam import weights
from metricslam.errors import WeightsError


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        print(f"cache: {weights.cache_dir()}")
        print(f"{'NAME':15s} {'FILE':48s} {'SIZE':>14s}  {'LICENCE':13s} CACHED")
        for e in weights.registry().values():
            size = f"{e.size / 1e6:.1f} MB" if e.size else "size unknown"
            state = "yes" if weights.cached_path(e).is_file() else "no"
            print(f"{e.name:15s} {e.file:48s} {size:>14s}  {e.licence:13s} {state}")
        return 0
    if not args.name:
        raise WeightsError(f"`metricslam weights {args.action}` needs a NAME; see `metricslam weights list`")
    if args.action == "download":
        print(weights.download(args.name, progress=not args.quiet))
    else:
        print(weights.path(args.name))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("weights", help="list, download or locate the official network weights",
                              description="The official Metric3D and DROID-SLAM checkpoints and the local cache "
                                          "($METRICSLAM_CACHE or ~/.cache/metricslam/weights).")
    p.add_argument("action", choices=("list", "download", "path"))
    p.add_argument("name", nargs="?", metavar="NAME", help="a name from `metricslam weights list`")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
