"""Small helpers shared by the sub-commands: number formats, progress bars, and the loop that drives an engine
generator to its end."""

from __future__ import annotations

import sys
from typing import Any, Callable, Generator

from tqdm import tqdm


def fmt_pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def tqdm_bar(total: int, desc: str, unit: str = "batch") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=None)


class Bars:
    """At most one progress bar on stderr at a time; opening another (or :meth:`close`) closes the current."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.stage: str | None = None

    def open(self, total: int, stage: str, unit: str = "batch") -> tqdm:
        self.close()
        self.bar, self.stage = tqdm_bar(total, stage, unit), stage
        return self.bar

    def progress(self, stage: str, done: int, total: int, unit: str = "image") -> None:
        """Show ``done`` of ``total`` for ``stage`` (a new stage gets a new bar)."""
        if self.bar is None or stage != self.stage:
            self.open(total, stage, unit)
        assert self.bar is not None
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage = None, None


def show_progress_or_message(ev: Any, bars: Bars) -> None:
    """The CLI's view of a job's events: Progress as a bar, Message as a ``level: text`` line on stderr."""
    from engine.events import Message, Progress

    if isinstance(ev, Progress):
        bars.progress(ev.stage, ev.done, ev.total)
    elif isinstance(ev, Message):
        if bars.bar is not None:
            bars.bar.clear()
        print(f"{ev.level}: {ev.text}", file=sys.stderr)


def drive(gen: Generator[Any, None, Any], handle: Callable[[Any], None], bars: Bars | None = None) -> Any:
    """Pass every event of an engine generator to ``handle`` and return the generator's result; ``bars`` are
    closed however it ends (an error, Ctrl+C)."""
    try:
        while True:
            try:
                ev = next(gen)
            except StopIteration as end:
                return end.value
            handle(ev)
    finally:
        if bars is not None:
            bars.close()
