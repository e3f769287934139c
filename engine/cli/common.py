"""Small helpers shared by the sub-commands: number formats and progress bars (the sub-commands run the engine's
generators with :func:`engine.events.drive`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm


def add_run_command(sub: argparse._SubParsersAction, name: str, help: str,
                    description: str | None = None) -> argparse.ArgumentParser:
    """The parser of a sub-command that works on a trained run: RUN first, and --device."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("run", help="run folder written by `fieldmark train`")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return p


def fmt_pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def tqdm_bar(total: int, desc: str, unit: str = "batch") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=None)


class Bars:
    """At most one progress bar on stderr at a time; opening another (or :meth:`close`) closes the current. As a
    context manager it closes the last one however the job ends (an error, Ctrl+C)."""

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

    def __enter__(self) -> "Bars":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def show_progress_or_message(ev: Any, bars: Bars) -> None:
    """The CLI's view of a job's events: Progress as a bar, Message as a ``level: text`` line on stderr."""
    from engine.events import Message, Progress

    if isinstance(ev, Progress):
        bars.progress(ev.stage, ev.done, ev.total)
    elif isinstance(ev, Message):
        if bars.bar is not None:
            bars.bar.clear()
        print(f"{ev.level}: {ev.text}", file=sys.stderr)
