"""Per-artifact locks (``filelock``): two runs that would write the same artifact (two ``cache`` stages of
one config, two teachers decoding the same pixel cache) take turns instead of breaking each other's
temp files. A run that has to wait says who holds the lock."""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from .atomic import NOT_WRITABLE, not_writable

log = logging.getLogger(__name__)


def _owner_file(lock: Path) -> Path:
    return lock.with_name(lock.name + ".owner")


def holder(lock: Path) -> str:
    """Who holds ``lock``, as its owner wrote it (pid, host, command, since when), or 'unknown'."""
    try:
        return _owner_file(lock).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def held(lock: Path, what: str) -> Iterator[None]:
    """Hold the file lock ``lock`` (created if needed) for the block; wait, with a message, while another
    process holds it. A folder this process cannot write is ``NotWritableError`` (one line: the folder, the fix)."""
    lock = Path(lock)
    fl = FileLock(str(lock))
    try:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fl.acquire(timeout=0)
        except Timeout:
            log.warning("%s is in use by %s: waiting for it to finish (Ctrl-C to stop waiting)", what, holder(lock))
            fl.acquire()
    except Timeout:
        raise
    except OSError as exc:  # a read-only runs folder: one line naming it, not the raw error on .lock
        if exc.errno in NOT_WRITABLE:
            raise not_writable(lock.parent, exc, f"{what} writes there") from None
        raise
    try:
        _owner_file(lock).write_text(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}: "
                                     f"{' '.join(sys.argv)[:300]}\n")
        yield
    finally:
        _owner_file(lock).unlink(missing_ok=True)
        fl.release()
