"""Option handling shared by subcommands. The leading underscore keeps this module out of subcommand discovery."""
from __future__ import annotations

import argparse

from metricslam.errors import InputError
from metricslam.io.run_dir import RunDir


def positional_from_overrides(args: argparse.Namespace, dest: str, lists: tuple[str, ...], metavar: str) -> None:
    """Let KEY=VALUE lists (``--set a=b c=d``) come before a positional argument.

    argparse gives a list option every following word, so in ``run --set a=b SOURCE`` the list swallows SOURCE and
    the positional (declared ``nargs='?'``) stays empty. The one word without '=' is taken back as the positional.
    """
    stray = [(name, item) for name in lists for item in getattr(args, name) if "=" not in item]
    if getattr(args, dest) is None and len(stray) == 1:
        name, item = stray[0]
        getattr(args, name).remove(item)
        setattr(args, dest, item)
    elif stray:
        raise InputError(f"'{stray[0][1]}' is not KEY=VALUE; write overrides as KEY=VALUE (e.g. frontend.window=12)")
    if getattr(args, dest) is None:
        raise InputError(f"{metavar} is missing; pass it as the first argument")


def add_run_parser(subparsers: argparse._SubParsersAction, name: str, help: str,
                   description: str) -> argparse.ArgumentParser:
    """A subcommand parser whose first argument is RUN_DIR, the output folder of `metricslam run`."""
    p = subparsers.add_parser(name, help=help, description=description)
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="output folder of 'metricslam run'")
    return p


def run_dir_argument(args: argparse.Namespace) -> RunDir:
    """The run folder named by RUN_DIR (which may follow --set KEY=VALUE lists); InputError when it is not there."""
    positional_from_overrides(args, "run_dir", tuple(name for name in ("set",) if hasattr(args, name)), "RUN_DIR")
    return RunDir.existing(args.run_dir)
