"""Provenance: nothing is built from something stale or unfinished. The rule, in one place:

* **Record.** A finished stage's ``done.json`` carries a ``provenance`` section (``stamp``): its kind, the sha256
  of its deployable file (``ARTIFACTS``), the content keys of the inputs it read (``"train images"``, ...) and the
  identity (``identity``: the digest of that section) of every upstream stage folder it was built from.
* **Accept.** A reader (cache, student, submit, export) takes an upstream folder only when it is *finished*
  (``done.json`` is there), *not being written* (its ``.lock`` is free), *whole* (its deployable file is the one the
  record names) and *current* (the inputs it recorded equal today's, and its own upstreams are still the ones
  it recorded, checked from the first stage down). ``require`` raises ``ProvenanceError`` otherwise: one line
  naming the stage folder, what is wrong, and the one command that rebuilds from that stage down
  (``distil all --from <stage>``).

* **Switch.** A training stage writes its model to ``pending/`` and replaces the deployable file and its record
  together when it finishes (``RunDir.finish``, ``atomic.switch``): a retrain that fails leaves the old pair.

Records without a ``provenance`` section (written by an older version) are accepted when finished and unlocked.
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .atomic import sha256_file, sha256_json

RECORD = "done.json"
# the deployable file of each kind of stage: the record names its sha256
ARTIFACTS = {"teacher": "teacher.safetensors", "cache": "manifest.json", "student": "student.safetensors"}


# a training stage writes its best model to <stage folder>/pending/ (``pending``) while it trains; the deployable file
# and its record are replaced together when the stage finishes (``RunDir.finish``): a retrain that fails leaves the
# old pair whole and usable
PENDING = "pending"


def pending(folder: Path) -> Path:
    """Where the stage in ``folder`` writes the model it is training (``<stem>.safetensors`` + ``<stem>.json``)."""
    return Path(folder) / PENDING


class ProvenanceError(RuntimeError):
    """An upstream stage is unfinished, being written, torn or stale: rebuild it (the message says how)."""


def read_record(folder: Path) -> Optional[dict[str, Any]]:
    """``folder/done.json`` as a dict, or None when it is missing or unreadable."""
    try:
        rec = json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def identity(folder: Path) -> Optional[str]:
    """The identity of the finished stage in ``folder``: the digest of its record's provenance (None: no record)."""
    rec = read_record(folder)
    if rec is None:
        return None
    return sha256_json(rec.get("provenance", {k: v for k, v in rec.items() if k not in ("wall_s", "reused")}))


def artifact_sha256(folder: Path, kind: str) -> Optional[str]:
    """sha256 of the deployable file of the ``kind`` stage in ``folder`` (None: it has none)."""
    p = Path(folder) / ARTIFACTS.get(kind, "")
    try:
        return sha256_file(p) if kind in ARTIFACTS and p.is_file() else None
    except FileNotFoundError:  # moved away meanwhile (another rank's switch from pending/)
        return None


def stamp(runs: Path, folder: Path, kind: str, inputs: Mapping[str, Optional[str]],
          upstream: list[Path]) -> dict[str, Any]:
    """The ``provenance`` section of the record of ``folder`` (a ``kind`` stage, under the runs folder ``runs``):
    built from ``inputs`` (content keys) and the finished stage folders ``upstream``."""
    return {"stage": kind, "artifact_sha256": artifact_sha256(folder, kind),
            "inputs": {k: v for k, v in inputs.items() if v is not None},
            "upstream": {_key(runs, u): identity(u) for u in upstream}}


def _key(runs: Path, folder: Path) -> str:
    try:
        return str(Path(folder).resolve().relative_to(Path(runs).resolve()))
    except ValueError:
        return str(folder)


def being_written(folder: Path) -> bool:
    """Another process holds ``folder/.lock`` (a stage is writing it now). The probe takes a *shared* lock on the
    lock file opened read-only: it conflicts with a writer's exclusive lock, not with other readers (two DDP ranks
    probing at once), and needs no write access: in a folder this process cannot write, the probe still sees a
    writer (another user's) that holds the lock. No lock file: nobody has written the folder since it was made."""
    lock = Path(folder) / ".lock"
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the writer's own lock, tried and released
        return _being_written_portable(lock)
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:  # missing, or unreadable to us: no writer's lock we could see
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _being_written_portable(lock: Path) -> bool:
    from filelock import FileLock, Timeout

    if not lock.exists():
        return False
    fl = FileLock(str(lock))
    try:  # a writer holds it for a whole stage; another reader's probe (a DDP rank's) for microseconds
        fl.acquire(timeout=2.0, poll_interval=0.05)
    except Timeout:
        return True
    except OSError:  # a read-only runs folder: this probe cannot tell
        return False
    fl.release()
    return False


def check_torn(folder: Path, rec: dict[str, Any]) -> Optional[str]:
    """Why the deployable file of ``folder`` is not the one its record names (None: it is)."""
    prov = rec.get("provenance")
    if not isinstance(prov, dict) or prov.get("artifact_sha256") is None:
        return None
    kind = str(prov.get("stage"))
    have = artifact_sha256(folder, kind)
    if have != prov["artifact_sha256"]:
        what = ARTIFACTS.get(kind, "its file")
        return (f"its {what} is {'missing' if have is None else 'not the one its done.json records'} "
                "(a run was interrupted or failed after writing it)")
    return None


def require(runs: Path, folder: Path, today: Mapping[str, Optional[str]], command: Callable[[Path, str, bool], str],
            own: Optional[Path] = None, _seen: Optional[set[str]] = None, mine: frozenset[Path] = frozenset()) -> dict[str, Any]:
    """Accept the stage folder ``folder`` (and, first, everything it was built from) or raise ``ProvenanceError``.
    ``today``: the content keys of the inputs as they are now (compared with what each record names, for stage
    folders inside ``own``, this run's folder); ``command(folder, kind, False)``: the command that rebuilds from
    that stage down (``True``: the command that runs that stage alone); ``mine``: stage folders whose lock this
    process holds (``export`` holds the student's while it reads it): not probed. Returns the record."""
    folder = Path(folder)
    seen = _seen if _seen is not None else set()
    where = _key(runs, folder)
    kind = folder.name

    def refuse(why: str, k: str = "") -> ProvenanceError:
        return ProvenanceError(f"{where} {why}; rebuild from there down with: {command(folder, k or kind, False)}")

    if folder.resolve() not in mine and being_written(folder):
        from .locks import holder

        raise ProvenanceError(f"{where} is being written now by {holder(folder / '.lock')[:200]}: wait for it to "
                              f"finish, then run this again")
    rec = read_record(folder)
    if rec is None:
        raise refuse(f"is unfinished (no {RECORD}: the stage was stopped or failed before it finished)")
    prov = rec.get("provenance")
    if not isinstance(prov, dict):
        return rec
    kind = str(prov.get("stage", kind))
    for up in prov.get("upstream", {}):
        if up not in seen:
            seen.add(up)
            require(runs, Path(runs) / up, today, command, own, seen, mine)
    torn = check_torn(folder, rec)
    if torn:  # re-running the stage rewrites its model from last.pt, or refuses with its --force command
        raise ProvenanceError(f"{where} {torn}; run the {kind} stage: {command(folder, kind, True)}")
    if own is None or _inside(folder, own):
        recorded = prov.get("inputs", {})
        changed = sorted(k for k, v in today.items() if v is not None and k in recorded and recorded[k] != v)
        if changed:
            raise refuse(f"is stale: its {', '.join(changed)} changed since it was built (e.g. images added, "
                         "relabelled or edited)", kind)
    for up, ident in prov.get("upstream", {}).items():
        if identity(Path(runs) / up) != ident:
            raise refuse(f"is stale: it was built from a {up} that has been rebuilt or removed since", kind)
    return rec


def _inside(p: Path, root: Path) -> bool:
    try:
        Path(p).resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False
