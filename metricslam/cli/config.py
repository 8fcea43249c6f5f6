"""`metricslam config`: the default SLAM configuration as YAML, printed or written to a file."""
from __future__ import annotations

import argparse

from metricslam.io.atomic import write_text_atomic
from metricslam.slam.config import default_config_yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "config",
        help="print the default SLAM configuration (YAML), or write it to a file",
        description="The defaults of every SLAM setting as YAML: a starting point for --config files. "
                    "configs/slam/default.yaml is this command's output.",
    )
    p.add_argument("--write", metavar="FILE", default=None, help="write the YAML to FILE instead of printing it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = default_config_yaml()
    if args.write is None:
        print(text, end="")
    else:
        write_text_atomic(args.write, text)
        print(f"wrote {args.write}")
    return 0
