"""Network weights: the registry of official files, a download cache, and strict checkpoint loading.

The registry (metricslam/assets/weights.yaml) lists every external checkpoint metricslam can use. Files are
cached in $METRICSLAM_CACHE or ~/.cache/metricslam/weights. Every ``--weights`` flag goes through
``resolve_weights``: an existing path always works, a registry name means the cached download.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm import tqdm

from metricslam.errors import WeightsError

CACHE_ENV = "METRICSLAM_CACHE"
CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsEntry:
    """One downloadable checkpoint. ``size`` (bytes) and ``sha256`` are None when not known."""

    name: str
    file: str
    url: str
    licence: str
    source: str
    kind: str
    variant: str | None = None
    size: int | None = None
    sha256: str | None = None


def registry() -> dict[str, WeightsEntry]:
    """All registered checkpoints by name (the Metric3D variant names and 'droid')."""
    text = resources.files("metricslam").joinpath("assets/weights.yaml").read_text(encoding="utf-8")
    fields = set(WeightsEntry.__dataclass_fields__)
    return {
        name: WeightsEntry(name=name, **{k: v for k, v in item.items() if k in fields})
        for name, item in yaml.safe_load(text)["weights"].items()
    }


def entry(name: str | WeightsEntry) -> WeightsEntry:
    """The registry entry called ``name`` (its file name works too)."""
    if isinstance(name, WeightsEntry):
        return name
    entries = registry()
    if name in entries:
        return entries[name]
    for e in entries.values():
        if e.file == name:
            return e
    raise WeightsError(f"unknown weights '{name}'; choose one of {', '.join(entries)} or pass --weights PATH to a file")


def cache_dir() -> Path:
    """Where downloads go: $METRICSLAM_CACHE, else ~/.cache/metricslam/weights."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metricslam" / "weights"


def cached_path(name: str | WeightsEntry) -> Path:
    """Where ``name`` lives in the cache (whether or not it is there)."""
    return cache_dir() / entry(name).file


def path(name: str | WeightsEntry) -> Path:
    """The cached file of ``name``; WeightsError saying how to get it when it is not there."""
    e = entry(name)
    target = cached_path(e)
    if not target.is_file():
        raise WeightsError(
            f"weights '{e.name}' not found at {target}; run `metricslam weights download {e.name}`, "
            f"or download {e.url} to that path, or pass --weights PATH"
        )
    return target


def resolve_weights(name_or_path: str | os.PathLike) -> Path:
    """An existing file path as is; otherwise a registry name, resolved to its cached file."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    try:
        known = entry(str(name_or_path))
    except WeightsError:
        raise WeightsError(
            f"{candidate}: weights file not found; pass an existing checkpoint path or one of "
            f"{', '.join(registry())} (see `metricslam weights list`)"
        ) from None
    return path(known)


def variant_for_file(file: str | os.PathLike) -> str | None:
    """The Metric3D variant whose official file name matches ``file`` (None when it matches none)."""
    name = Path(file).name
    for e in registry().values():
        if e.file == name and e.variant is not None:
            return e.variant
    return None


def download(name: str | WeightsEntry, progress: bool = True, timeout: float = 30.0) -> Path:
    """Download ``name`` into the cache (resuming a partial '.part' file) and return the checked file.

    Integrity: the sha256 must match when the manifest has one (else the byte count must match the manifest's
    size), the transfer must deliver the server's length, and torch must read the file. Only then is it renamed
    into place.
    """
    e = entry(name)
    target = cached_path(e)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    _fetch(e, part, progress, timeout)
    _verify(e, part, target)
    os.replace(part, target)
    return target


def _offline_error(e: WeightsEntry, reason: str) -> WeightsError:
    return WeightsError(
        f"cannot download '{e.name}' from {e.url} ({reason}); download it by hand to {cached_path(e)} "
        f"or pass --weights PATH"
    )


def _checked_size(e: WeightsEntry) -> int | None:
    """The manifest size when it is the integrity check. With a digest the digest decides, so a wrong recorded
    size can never reject (or stop short of) a correct file; the size then only scales the progress bar."""
    return e.size if e.sha256 is None else None


def _fetch(e: WeightsEntry, part: Path, progress: bool, timeout: float) -> None:
    size = _checked_size(e)
    done = part.stat().st_size if part.is_file() else 0
    if size is not None and done > size:
        part.unlink()
        done = 0
    if size is not None and done == size:
        return
    request = urllib.request.Request(e.url, headers={"User-Agent": "metricslam"})
    if done:
        request.add_header("Range", f"bytes={done}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and done:  # nothing left to send: the partial file may already be whole
            return
        raise _offline_error(e, f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _offline_error(e, str(reason).splitlines()[0] if str(reason) else type(exc).__name__) from None
    with response:
        if done and response.status != 206:  # the server ignored the range: start over
            done = 0
        length = response.headers.get("Content-Length")
        expected = done + int(length) if length is not None else size
        mode = "ab" if done else "wb"
        bar = tqdm(total=expected or e.size, initial=done, unit="B", unit_scale=True, desc=e.file,
                   disable=not progress)
        try:
            with open(part, mode) as out:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
        except (TimeoutError, OSError) as exc:
            raise _offline_error(e, f"transfer interrupted: {exc}; run the command again to resume") from None
        finally:
            bar.close()
    got = part.stat().st_size
    if expected is not None and got < expected:
        raise _offline_error(e, f"transfer interrupted at {got} of {expected} bytes; run the command again to resume")


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(e: WeightsEntry, part: Path, target: Path) -> None:
    size, expected = part.stat().st_size, _checked_size(e)
    if expected is not None and size != expected:
        part.unlink()
        raise WeightsError(
            f"{target}: downloaded {size} bytes but '{e.name}' has {expected}; the partial file was deleted, "
            f"run `metricslam weights download {e.name}` again"
        )
    if e.sha256 is not None and _sha256(part) != e.sha256.lower():
        part.unlink()
        raise WeightsError(
            f"{target}: sha256 of the download does not match the manifest for '{e.name}' (corrupted transfer, "
            f"or the published file changed); the file was deleted: run `metricslam weights download {e.name}` "
            f"again, or download {e.url} yourself and pass --weights PATH"
        )
    try:
        _torch_load(part)
    except WeightsError:
        part.unlink()
        raise WeightsError(
            f"{target}: the downloaded file is not a readable checkpoint (an error page?); it was deleted, "
            f"download {e.url} by hand to {target} or pass --weights PATH"
        ) from None


def _torch_load(file: Path) -> Any:
    """torch.load on CPU with a one-line WeightsError for unreadable files."""
    mmap = zipfile.is_zipfile(file)  # memory-mapping needs the zip format; old pickled files load whole
    try:
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError:
            # Training checkpoints may pickle non-tensor state (optimiser, config objects) that the safe loader
            # refuses; the user chose this file explicitly.
            return torch.load(file, map_location="cpu", weights_only=False, mmap=mmap)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(
            f"{file}: cannot read checkpoint ({detail[:160]}); the file is corrupt or truncated, download it again"
        ) from None


def read_checkpoint(file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict stored in a checkpoint file (see ``unwrap_state_dict`` for the layouts accepted)."""
    file = Path(file)
    if not file.is_file():
        raise WeightsError(f"{file}: checkpoint not found; pass an existing file with --weights PATH")
    return unwrap_state_dict(_torch_load(file), str(file))


def recorded_model(file: str | os.PathLike) -> dict | None:
    """The network a checkpoint written by `metricslam train` records ({'variant', 'small'}: enough to rebuild it);
    None for files without one, such as the official releases."""
    obj = _torch_load(Path(file))
    description = obj.get("model") if isinstance(obj, Mapping) else None
    if isinstance(description, Mapping) and isinstance(description.get("variant"), str):
        return dict(description)
    return None


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Accept {'model_state_dict': sd}, {'state_dict': sd}, {'model': sd} or a bare sd; strip 'module.' prefixes."""
    if isinstance(obj, Mapping):
        for key in ("model_state_dict", "state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{source}: does not hold a model state dict; pass the official checkpoint file")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, expected: str) -> None:
    """Load ``state_dict`` into ``model`` with strict=True; a one-line WeightsError when it does not fit.

    ``expected`` names what the model is (e.g. "Metric3D vit_small, official file metric_depth_vit_small_800k.pth").
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise WeightsError(f"{source}: does not match {expected}: {', '.join(parts)}; pass the checkpoint of that "
                           f"model or choose the matching variant")
    model.load_state_dict(dict(state_dict), strict=True)
