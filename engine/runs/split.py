"""A run's saved split laid over a fresh scan of its data folder (resume, evaluate, Compare and export)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

from engine.data.records import DataReport
from engine.data.split import SplitCheck, apply_saved_split, redraw
from engine.events import Message
from engine.runs.files import is_run, read_meta, read_split, run_dir_of


@dataclass
class RunData:
    """A data folder as a run sees it: ``report`` holds the run's photos in the run's split; ``check`` compares the
    folder with the saved split (None: the run has none); ``messages`` are (level, text) lines for the user."""

    report: DataReport
    check: SplitCheck | None
    messages: list[tuple[str, str]]


def run_split(run: str | Path, report: DataReport, config: dict[str, Any] | None = None) -> RunData:
    """Lay the run's saved split over ``report`` (a fresh scan of its data folder): see
    :func:`engine.data.split.apply_saved_split`. Data that holds none of the run's photos keeps its own split.
    A run saved before splits were kept gets its split drawn again as it was drawn then (its ``config``: seed and
    test fraction, read from ``model.json`` when not given), with a note."""
    run = run_dir_of(run)
    doc = read_split(run)
    if doc is not None:
        applied, check = apply_saved_split(report, doc, str(run))
        return RunData(report if check.foreign else applied, check, check.messages())
    if config is None:
        if not is_run(run):  # a model held in memory, never saved as a run: nothing to remember
            return RunData(report, None, [])
        config = read_meta(run).get("config") or {}
    if report.layout == "class-folders" and report.split_source.startswith("seeded"):
        seed = int(config.get("seed", 0))
        fraction = float(config.get("test_fraction", config.get("val_fraction", 0.2)))
        report = redraw(report, fraction, seed, legacy=True)
        note = (f"the run {run} has no saved split (it was trained before Fieldmark kept one): its split is drawn "
                f"again from the folder the way it was drawn then (seed {seed}), which matches the training split "
                "only if no photo was added or removed since")
    else:
        note = (f"the run {run} has no saved split (it was trained before Fieldmark kept one): the folder's own "
                f"split is used ({report.split_source})")
    return RunData(report, None, [("info", note)])


def use_run_split(run: str | Path, report: DataReport,
                  config: dict[str, Any] | None = None) -> Generator[Message, None, DataReport]:
    """:func:`run_split` for a job: yields its lines as :class:`~engine.events.Message` events, returns the
    report in the run's split."""
    data = run_split(run, report, config)
    for level, text in data.messages:
        yield Message(level, text)
    return data.report
