"""Small helpers shared by the sub-commands."""

from __future__ import annotations

import sys

from tqdm import tqdm


def fmt_pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def tqdm_bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="batch", file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=None)
