"""The ``metricslam`` command. Each subcommand is a module in this package with ``register(subparsers)``.

A module registers its parser and sets ``func`` (taking the parsed args, returning an exit code) as default.
User errors (MetricSlamError) are printed on one line and exit with code 2; a ``--device`` torch cannot use is
such an error before any work starts. Ctrl-C and SIGTERM end the command with 'interrupted' (exit code 130).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from metricslam import __version__
from metricslam.device import resolve_device
from metricslam.errors import MetricSlamError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metricslam", description="Metric 3D reconstruction from one camera.")
    parser.add_argument("--version", action="version", version=f"metricslam {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    return parser


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (kill, a job scheduler's stop) like Ctrl-C, so that atomic writes remove their temporary
    files and the command ends with 'interrupted' instead of vanishing mid-write."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        if getattr(args, "device", None) is not None:
            resolve_device(args.device)
        with terminate_as_interrupt():
            return int(args.func(args) or 0)
    except MetricSlamError as exc:
        print(f"metricslam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"metricslam {args.command}: interrupted", file=sys.stderr)
        return 130
