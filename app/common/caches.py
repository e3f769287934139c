"""Bounded caches: an ``OrderedDict`` kept oldest first, trimmed from the front (no Qt here)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable


def trim_oldest(cache: OrderedDict, keep: int, *, weight: Callable[[Any], int] | None = None,
                budget: int = 0) -> None:
    """Drop ``cache``'s oldest entries (the front: first inserted, or least recently moved to the end) until it
    holds at most ``keep`` (at least 1); with ``weight``, also until the values' total weight is at most
    ``budget``, except that the newest entry always stays."""
    while len(cache) > keep:
        cache.popitem(last=False)
    if weight is not None:
        while len(cache) > 1 and sum(weight(v) for v in cache.values()) > budget:
            cache.popitem(last=False)
