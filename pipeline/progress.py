"""Progress of the long loops (an epoch, the cache, prediction), shown where the user looks.

``DISTIL_PROGRESS`` chooses (default ``auto``):

* ``bar``: a ``tqdm.auto`` bar: a widget in Jupyter (with ipywidgets; a text bar without), a bar in a terminal;
* ``lines``: a plain log line now and then (every ``DISTIL_PROGRESS_EVERY`` seconds, default 60), for log files;
* ``off``: nothing.

``auto`` is ``bar`` in a notebook (an IPython kernel) or when stderr is a terminal, ``off`` under CI (``CI`` set, as
GitHub Actions, GitLab and most runners set it), and ``lines`` otherwise (stderr to a file or a pipe). With several
processes (DDP) only rank 0 shows progress, whatever the mode.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

from tqdm.auto import tqdm

from .registry import Registry

T = TypeVar("T")
log = logging.getLogger(__name__)

MODES: Registry = Registry("progress mode")
_warned: set[str] = set()


def in_notebook() -> bool:
    """True inside a Jupyter/IPython kernel (Jupyter, Colab, Kaggle), whose stderr is not a terminal."""
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return bool(get and get() is not None and "ipykernel" in sys.modules)


def mode() -> str:
    """The mode the environment asks for: ``bar``, ``lines`` or ``off`` (see the module's docstring)."""
    want = os.environ.get("DISTIL_PROGRESS", "auto").strip().lower() or "auto"
    if want in MODES:
        return want
    if want != "auto" and want not in _warned:
        _warned.add(want)
        log.warning("DISTIL_PROGRESS=%r is not one of auto, %s: using auto", want, ", ".join(MODES.names()))
    if in_notebook() or sys.stderr.isatty():
        return "bar"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return "off"
    return "lines"


@MODES.register("bar")
def _bar(it: Iterable[T], desc: str, total: Optional[int], **kw: Any) -> Iterable[T]:
    return tqdm(it, desc=desc, total=total, leave=False, dynamic_ncols=True, **kw)


@MODES.register("off")
def _off(it: Iterable[T], desc: str, total: Optional[int], **kw: Any) -> Iterable[T]:
    return it


@MODES.register("lines")
def _lines(it: Iterable[T], desc: str, total: Optional[int], **kw: Any) -> Iterable[T]:
    every = float(os.environ.get("DISTIL_PROGRESS_EVERY", "60"))
    return _Lines(it, desc, total, every)


class _Lines:
    """Yields ``it``'s items; logs ``desc: n/total (p%), s elapsed, ~s left`` at most once every ``every`` s."""

    def __init__(self, it: Iterable[T], desc: str, total: Optional[int], every: float,
                 clock: Callable[[], float] = time.monotonic):
        self.it, self.desc, self.every, self.clock = it, desc, every, clock
        self.total = total if total is not None else (len(it) if hasattr(it, "__len__") else None)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return int(self.total or 0)

    def __iter__(self) -> Iterator[Any]:
        start = last = self.clock()
        n = 0
        for item in self.it:
            yield item
            n += 1
            now = self.clock()
            if now - last >= self.every:
                last = now
                log.info("%s", self.line(n, now - start))

    def line(self, n: int, elapsed: float) -> str:
        if not self.total:
            return f"{self.desc}: {n} done, {elapsed:.0f} s"
        left = elapsed / n * (self.total - n) if n else float("nan")
        return f"{self.desc}: {n}/{self.total} ({100 * n / self.total:.0f}%), {elapsed:.0f} s, ~{left:.0f} s left"


def progress(it: Iterable[T], desc: str, total: Optional[int] = None, **kw: Any) -> Iterable[T]:
    """``it`` with progress shown the way ``mode()`` says (on rank 0 only); the items are ``it``'s, unchanged."""
    from . import distributed

    return MODES.get(mode() if distributed.is_main() else "off")(it, desc, total, **kw)
