"""An output folder that holds the results of exactly one run of a command, never a mix of two.

Every command that writes a folder of results (``run``, ``demo``, ``depth``, ``train``) goes through ``RunDir``:

    out = RunDir(path, RUN_OUTPUTS, overwrite=args.overwrite)
    out.check()      # first, before any slow work: refuses a folder that holds an earlier run
    ...              # validate inputs, load weights, compute
    out.prepare()    # only now: remove the earlier run's files (with overwrite), create the folder

A folder "holds an earlier run" when any file the command writes is there (an ``OutputLayout`` names them).
``overwrite`` removes exactly those files (and temporary files an interrupted write left); files the command never
writes are left alone, so pointing ``--out`` at a folder with other files is safe. Because the folder is only
created by ``prepare``, a failed validation leaves no empty folder behind.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from metricslam.errors import InputError
from metricslam.io.atomic import stale_temp_files


@dataclass(frozen=True)
class OutputLayout:
    """What one command writes into its output folder.

    files: names or glob patterns of the files it writes; folders: sub-folders it owns entirely;
    extra: a function listing further files of an earlier run that patterns cannot name (e.g. per-image outputs).
    """

    command: str
    files: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()
    extra: Callable[[Path], list[Path]] | None = field(default=None, compare=False)

    def earlier_outputs(self, folder: Path) -> list[Path]:
        """Files and sub-folders in ``folder`` that a run of the command wrote, sorted."""
        if not folder.is_dir():
            return []
        found = {p for pattern in self.files for p in folder.glob(pattern) if p.is_file()}
        found |= {folder / name for name in self.folders if (folder / name).is_dir()}
        if self.extra is not None:
            found |= {p for p in self.extra(folder) if p.exists()}
        return sorted(found)


class RunDir:
    """The output folder of one command run (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, layout: OutputLayout, overwrite: bool = False):
        self.path = Path(path)
        self.layout = layout
        self.overwrite = overwrite

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def check(self) -> None:
        """InputError unless the folder can take this run: absent, or without an earlier run's files, or
        ``overwrite``."""
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path}: is a file, not a folder; pass a folder to write the results into")
        if self.overwrite:
            return
        earlier = self.layout.earlier_outputs(self.path)
        if earlier:
            names = ", ".join(p.name for p in earlier[:3]) + (", ..." if len(earlier) > 3 else "")
            raise InputError(
                f"{self.path}: holds the results of an earlier 'metricslam {self.layout.command}' ({names}); pass "
                f"--overwrite to replace them, or choose another output folder"
            )

    def prepare(self) -> Path:
        """Check again, remove the earlier run's files (``overwrite``) and stale temporary files, create the
        folder; returns its path."""
        self.check()
        for p in self.layout.earlier_outputs(self.path) + stale_temp_files(self.path):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path
