"""Atomic writes: every artifact goes to a temp file in the same folder, then ``os.replace``.

A crash mid-write leaves the previous file intact; readers never see half a file.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class DiskFullError(OSError):
    """Not enough free space for a write; the message names the folder and the space needed."""


class NotWritableError(OSError):
    """A folder this process must write (a stage folder, the pixel cache) is read-only to it; the message names the
    folder and the fix."""


# what a read-only mount (EROFS) or a folder without write permission (EACCES, EPERM) answers to a write
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def not_writable(folder: str | os.PathLike[str], exc: OSError, what: str = "") -> NotWritableError:
    """The one-line error for a write into ``folder`` refused with ``exc`` (an errno of ``NOT_WRITABLE``)."""
    return NotWritableError(exc.errno, f"{folder} is not writable ({exc.strerror or exc}){': ' + what if what else ''}; "
                            f"make it writable (chmod -R u+w {folder}) or set runs_dir to a writable folder")


def require_space(folder: str | os.PathLike[str], nbytes: int, what: str = "") -> None:
    """Raise ``DiskFullError`` unless ``folder`` has ``nbytes`` free (plus 1%% slack): checked before large
    writes such as memory-mapped arrays, which would otherwise die with a bus error half-way."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if nbytes * 1.01 > free:
        raise DiskFullError(errno.ENOSPC, f"no space left on {folder}: {what + ' ' if what else ''}needs "
                            f"~{nbytes / 2**20:,.0f} MB, {free / 2**20:,.0f} MB free. Free some space (e.g. old runs/) "
                            "or point runs_dir at a larger disk, then rerun the same command")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on error it is removed.
    A full disk (ENOSPC) becomes ``DiskFullError`` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in NOT_WRITABLE:
            raise not_writable(path.parent, exc, f"cannot write {path.name}") from None
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600: give the file the user's usual mode
        os.replace(tmp_path, path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC and not isinstance(exc, DiskFullError):
            raise DiskFullError(errno.ENOSPC, f"no space left on {path.parent} while writing {path.name}; free some "
                                "space, then rerun the same command (the previous file, if any, is intact)") from None
        raise
    except RuntimeError as exc:  # torch.save reports a full disk as a RuntimeError ('unexpected pos ...')
        if "unexpected pos" in str(exc) or "No space left" in str(exc):
            raise DiskFullError(errno.ENOSPC, f"no space left on {path.parent} while writing {path.name} ({exc}); "
                                "free some space, then rerun the same command") from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)


def switch(staged: str | os.PathLike[str], into: str | os.PathLike[str], record: str, data: bytes) -> None:
    """Replace the files of ``into`` by those finished in ``staged`` (a folder inside it) and ``into/record`` by
    ``data``, as one decision: ``data`` is first written and synced as ``staged/record``, the commit point (a failure
    up to then, such as a full disk, leaves every old file as it was); then ``finish_switch`` moves the staged files
    in, ``.safetensors`` first and the record last, and removes ``staged``. A kill between those moves leaves
    ``staged/record`` behind, and ``finish_switch`` called again (the owning stage's next run) completes them."""
    staged = Path(staged)

    def synced(tmp: Path) -> None:
        tmp.write_bytes(data)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())

    write_with(staged / record, synced)
    finish_switch(staged, into, record)


def finish_switch(staged: str | os.PathLike[str], into: str | os.PathLike[str], record: str) -> bool:
    """Complete a ``switch`` whose commit point was reached (``staged/record`` is there): move what is still staged
    into ``into``, the record last, and remove ``staged``. Returns False (and does nothing) when there is none."""
    staged, into = Path(staged), Path(into)
    if not (staged / record).is_file():
        return False
    for p in sorted(staged.iterdir(), key=lambda p: p.suffix != ".safetensors"):
        if p.is_file() and p.name != record and not p.name.endswith(".tmp"):
            _move(p, into / p.name)
    _move(staged / record, into / record)
    shutil.rmtree(staged, ignore_errors=True)
    return True


_move = os.replace  # (tests interrupt it between two moves)


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    import torch

    write_with(path, lambda tmp: torch.save(obj, tmp))


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    def _w(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    write_with(path, _w)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def remove_stale_temps(folder: str | os.PathLike[str]) -> int:
    """Delete temp files (``.<name>.*.tmp``) a killed writer left in ``folder``; returns how many."""
    n = 0
    for p in Path(folder).glob(".*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n
