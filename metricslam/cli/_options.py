"""Option handling shared by subcommands. The leading underscore keeps this module out of subcommand discovery."""
from __future__ import annotations

import argparse

from metricslam.errors import InputError


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
