"""Files the pipeline writes and reads back: atomic writes, hashes, safe loading, caches.

Every file goes through a temporary file beside it and `os.replace`, so a killed job or a
full disk leaves the old file or the new one, never part of one. Every torch file is
checked before it is trusted (torch.save writes a zip archive holding a CRC-32 of each
record) and read with torch's weights_only unpickler, which runs no code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mucs_pipeline import distributed as dist

log = logging.getLogger(__name__)


class ArtifactError(RuntimeError):
    """A file the pipeline cannot use; the message names it and says what to do."""


class UnsafeFileError(ArtifactError):
    """A file that is not plain tensors and containers: loading it could run code."""


class DamagedFileError(ArtifactError):
    """A file cut short or altered since it was written (a full disk, a copy cut short)."""

    def __init__(self, path: Path, why: str):
        self.path, self.why = path, why
        super().__init__(f"{path} is damaged ({why})")


class IntegrityError(ArtifactError):
    """strict=true: a damaged artifact stops the run instead of being recomputed."""


def config_hash(*parts: Any) -> str:
    """A short hash of config subtrees and upstream keys."""
    resolved = [
        OmegaConf.to_container(p, resolve=True) if isinstance(p, DictConfig) else p for p in parts
    ]
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[
        :12
    ]


def runs_relative(runs_dir: Path | str, path: Path) -> str:
    """`path` relative to the runs folder: what run.json and W&B record, so that the folder
    can move."""
    return Path(path).relative_to(Path(runs_dir)).as_posix()


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` to a temporary file beside `path`, then os.replace it onto `path`.

    A write that fails (a full disk) removes the temporary file and leaves `path` as it
    was. In a job of several processes only rank 0 writes (the ranks hold the same result).
    """
    if not dist.is_main():
        return
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file and os.replace."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


@contextmanager
def rewrite_folder(folder: Path, patterns: list[str]) -> Iterator[Path]:
    """Rewrite the files of `folder` that match `patterns`; once the block has finished,
    delete the matching files it did not rewrite (a report's figure of a row label that no
    longer exists). A block that fails deletes nothing. Every write here goes through
    `atomic_write`, so a file rewritten in the block has a new inode, and one left alone
    keeps its old one: that, not the clock (whose file stamps are coarse), tells them apart."""
    folder.mkdir(parents=True, exist_ok=True)
    before = {p: p.stat().st_ino for pattern in patterns for p in folder.glob(pattern)}
    yield folder
    for path, inode in before.items():
        if path.exists() and path.stat().st_ino == inode:
            log.info("removing %s: this report no longer writes it", path)
            path.unlink()


def damage(path: Path) -> str | None:
    """Why the torch file at `path` cannot be trusted, or None when every record of its
    archive matches its CRC-32 (a cut, overwritten or altered file does not)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        return "not a whole torch file: cut short or overwritten"
    return None if bad is None else f"its record {bad} fails its CRC-32 check: altered"


def load(path: Path, mmap: bool = False) -> Any:
    """Load an artifact written by this pipeline (tensors and plain containers only).

    A damaged file raises DamagedFileError. torch's weights_only unpickler refuses
    anything but tensors and containers, such as a pickle crafted to call a function on
    load; that is an UnsafeFileError naming the file. `mmap` maps the tensors' storage
    from the file instead of reading it into memory, so that indexing a large cached
    matrix reads only the rows it touches.
    """
    if (why := damage(path)) is not None:
        raise DamagedFileError(path, why)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = f"a reference to {found.group(1)}" if found else "objects"
        raise UnsafeFileError(
            f"{path} was refused as unsafe: it holds {what} besides tensors and plain "
            "containers, and loading it could run code; this pipeline never writes such a "
            "file: delete it"
        ) from None


def damaged(path: Path, why: str, strict: bool) -> None:
    """Report a damaged file whose work is done again (and the file overwritten): a
    warning naming it, or with strict=true an IntegrityError."""
    if strict:
        raise IntegrityError(
            f"{path} is damaged ({why}); strict=true stops here: delete it, or rerun without "
            "strict=true to recompute it"
        )
    log.warning("%s is damaged (%s): recomputing it", path, why)


def resumable(path: Path, strict: bool = False) -> bool:
    """Whether `path`, a file that a killed job left to resume from, is there and intact
    (a damaged one is reported, see `damaged`, and its work done again)."""
    if not path.exists():
        return False
    why = damage(path)
    if why is not None:
        damaged(path, why, strict)
    return why is None


def cached(path: Path, compute: Callable[[], Any], mmap: bool = False, strict: bool = False) -> Any:
    """`compute()` once: read from `path` when an intact file is there, else computed and
    written atomically. `mmap`: see `load`."""
    if path.exists():
        try:
            return load(path, mmap=mmap)
        except DamagedFileError as err:
            damaged(path, err.why, strict)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(value, path)
    return value


_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256, per process


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered while its size and modification time do not change."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]
