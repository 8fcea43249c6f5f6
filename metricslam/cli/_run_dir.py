"""What the subcommands working on a saved run folder (`mesh`, `plot`) share: the RUN_DIR argument and loading it.

The leading underscore keeps this module out of the subcommand discovery.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from metricslam.cli._options import positional_from_overrides
from metricslam.errors import InputError
from metricslam.slam.reconstruction import Reconstruction


def add_run_parser(subparsers: argparse._SubParsersAction, name: str, help: str,
                   description: str) -> argparse.ArgumentParser:
    """A subcommand parser whose first argument is RUN_DIR, the output folder of `metricslam run`."""
    p = subparsers.add_parser(name, help=help, description=description)
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="output folder of 'metricslam run'")
    return p


def load_run(args: argparse.Namespace) -> tuple[Path, Reconstruction]:
    """The run folder named by ``args.run_dir`` and its saved reconstruction; InputError when it is not there."""
    positional_from_overrides(args, "run_dir", tuple(name for name in ("set",) if hasattr(args, name)), "RUN_DIR")
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder; pass the --out folder of 'metricslam run'")
    return run_dir, Reconstruction.load(run_dir)
