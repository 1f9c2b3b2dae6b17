"""What differs between two nested dicts (a cache's key and the config's, a checkpoint's config and this one),
named leaf by leaf so that a refusal shows the key that changed and both of its values whole."""
from __future__ import annotations

from typing import Any

ABSENT: Any = object()
VALUE_CHARS = 300  # a value's repr is shown whole up to this many characters (then cut, with its length)


def flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [x, y]}}`` -> ``{"a.b.0": x, "a.b.1": y}``; empty dicts and lists stay leaves."""
    if isinstance(d, dict) and d:
        return {k: v for key, val in d.items() for k, v in flat(val, f"{prefix}{key}.").items()}
    if isinstance(d, list) and d:
        return {k: v for i, val in enumerate(d) for k, v in flat(val, f"{prefix}{i}.").items()}
    return {prefix[:-1]: d}


def shown(value: Any, limit: int = VALUE_CHARS) -> str:
    """``repr(value)``, whole up to ``limit`` characters; a longer one is cut and says how long it was."""
    if value is ABSENT:
        return "(not set)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def leaf_changes(before: Any, now: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, before value, now value)`` for each leaf that differs (``ABSENT`` where a side lacks it),
    sorted by key; ``prefix`` names the common root (``"transform"`` -> ``"transform.seed"``)."""
    a, b = flat(before, f"{prefix}." if prefix else ""), flat(now, f"{prefix}." if prefix else "")
    return [(k, a.get(k, ABSENT), b.get(k, ABSENT)) for k in sorted(set(a) | set(b))
            if a.get(k, ABSENT) != b.get(k, ABSENT)]
