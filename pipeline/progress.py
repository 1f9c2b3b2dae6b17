"""tqdm progress bars that stay quiet when stderr is not a terminal (CI, logs, pipes)."""
from __future__ import annotations

import sys
from typing import Any, Iterable, Optional, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(it: Iterable[T], desc: str, total: Optional[int] = None, **kw: Any) -> Iterable[T]:
    return tqdm(it, desc=desc, total=total, disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True, **kw)
