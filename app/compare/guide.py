"""Compare's "Save field guide…" control: :func:`engine.fieldmarks.write_guide` on a worker lane, with a progress
bar, Cancel, and an offer to open the guide's ``index.html`` in the browser when it is written.

The button's menu chooses the species: all of the run's, or the pair on screen. The engine writes one HTML page
per species plus an index (no Qt there); cancelling stops it between species.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

from PySide6.QtCore import QUrl, Signal, Slot
from PySide6.QtGui import QAction, QDesktopServices
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QMenu, QMessageBox, QProgressBar, QPushButton,
                               QWidget)

from engine.data import DataReport
from engine.events import Message, Progress
from engine.fieldmarks.guide import PLACES_STAGE

from ..common.lane import Lane
from ..common.text import error_text
from ..common.tokens import TokenLike, checked

log = logging.getLogger(__name__)

IDLE, RUNNING, CANCELLING, CANCELLED, FINISHED, FAILED = ("idle", "running", "cancelling", "cancelled", "finished",
                                                           "failed")
STAGES = {"part scores": "scoring the test photos", "predictions": "predicting the test photos",
          PLACES_STAGE: "finding the parts on the bird", "guide": "pages"}


@dataclass(frozen=True)
class GuideRequest:
    """One field guide: the run, its data (the scanned folder), the output folder and the species (None: all)."""

    run: str
    data: DataReport
    out: str
    species: tuple[str, ...] | None = None
    all_parts: bool = False  # rank all parts together (default: the parts on the bird, then the background ones)


@dataclass(frozen=True)
class GuideState:
    """The guide job: its status, its progress and, once written, the engine's GuideResult."""

    status: str
    done: int = 0
    total: int = 0
    result: Any = None
    error: str = ""
    stage: str = ""  # the engine's Progress stage: "part scores", then "guide" (one step per page)


def guide_job(request: GuideRequest, token: TokenLike) -> Generator[Progress | Message, None, Any]:
    """The worker's job: drive :func:`engine.fieldmarks.write_guide`, which stops between batches and pages once
    the token goes stale (its generator is closed then too)."""
    from engine.device import resolve_device
    from engine.fieldmarks import write_guide

    species = list(request.species) if request.species is not None else None
    job = write_guide(request.run, request.data, request.out, species=species, device=str(resolve_device("auto")),
                      should_stop=token.is_stale, all_parts=request.all_parts)
    return (yield from checked(job, token))


class GuideControl(QWidget):
    """The button with its species menu, then a progress bar, Cancel and a one-line status while it runs."""

    guide_changed = Signal(object)  # GuideState

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lane = Lane(self, "guide")
        self.run = ""
        self.data: DataReport | None = None
        self.classes: tuple[str, ...] = ()
        self.pair: tuple[int, int] = (-1, -1)
        self.all_parts = False  # as Compare's "Rank all parts together"
        self.why = "Open a run and its data."
        self.hint = "Write a printable HTML page per species, with the parts that separate it from its look-alikes"
        self.state = GuideState(IDLE)
        self._result: Any = None  # the finished job's GuideResult, until the lane reports it idle
        self.button = QPushButton("Save field guide…", self)
        self.button.setObjectName("guideButton")
        self.menu = QMenu(self.button)
        self.all_action = QAction("All species…", self)
        self.all_action.triggered.connect(self._on_all_action_triggered)
        self.pair_action = QAction("This pair only…", self)
        self.pair_action.triggered.connect(self._on_pair_action_triggered)
        self.menu.addAction(self.all_action)
        self.menu.addAction(self.pair_action)
        self.button.setMenu(self.menu)
        self.progress = QProgressBar(self)
        self.progress.setMaximumWidth(160)
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self._on_cancel_button_clicked)
        self.status = QLabel("", self)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.button)
        lay.addWidget(self.progress)
        lay.addWidget(self.cancel_button)
        lay.addWidget(self.status)
        self._update()

    # -- inputs ----------------------------------------------------------------------------------------------
    def set_context(self, run: str, data: DataReport | None, classes: tuple[str, ...], pair: tuple[int, int],
                    why: str) -> None:
        """What a guide would cover now: the run, its data, its classes, the pair on screen; ``why`` says why no
        guide can be written ("" when one can)."""
        self.run, self.data, self.classes, self.pair, self.why = run, data, tuple(classes), pair, why
        self._update()

    def pair_species(self) -> tuple[str, ...]:
        a, b = self.pair
        names = [self.classes[i] for i in dict.fromkeys((a, b)) if 0 <= i < len(self.classes)]
        return tuple(names)

    def start(self, out: str, species: tuple[str, ...] | None) -> None:
        """Write the guide for ``species`` (None: all) into ``out`` on the lane."""
        if self.why or self.is_running() or self.data is None:
            return
        request = GuideRequest(self.run, self.data, out, species, self.all_parts)
        self.lane.submit(guide_job, request, on_yielded=self._on_lane_yielded, on_returned=self._on_lane_returned,
                         on_errored=self._on_lane_errored, on_finished=self._on_lane_finished)
        self._set_state(GuideState(RUNNING))

    def cancel(self) -> None:
        if self.state.status == RUNNING:
            self.lane.cancel()
            self._set_state(GuideState(CANCELLING, self.state.done, self.state.total))

    def is_running(self) -> bool:
        return not self.lane.is_idle()

    def shutdown(self) -> None:
        self.lane.shutdown()

    def ask(self, species: tuple[str, ...] | None) -> None:
        """Ask for the output folder, then start."""
        start = str(Path(self.run).parent) if self.run else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Save the field guide in", start)
        if folder:
            self.start(folder, species)

    # -- state -----------------------------------------------------------------------------------------------
    def _set_state(self, state: GuideState) -> None:
        self.state = state
        self._update()
        self.guide_changed.emit(state)

    def _update(self) -> None:
        running = self.state.status in (RUNNING, CANCELLING) or not self.lane.is_idle()
        self.button.setEnabled(not running and not self.why)
        self.button.setToolTip(self.why or self.hint)
        pair = self.pair_species()
        self.all_action.setText(f"All {len(self.classes)} species…")
        self.pair_action.setText(f"Only {' and '.join(n.replace('_', ' ') for n in pair)}…" if pair
                                 else "This pair only…")
        self.pair_action.setEnabled(bool(pair))
        self.progress.setVisible(running)
        self.cancel_button.setVisible(running)
        self.cancel_button.setEnabled(self.state.status == RUNNING)
        s = self.state
        text = {RUNNING: f"Field guide: {STAGES.get(s.stage, s.stage)} {s.done}/{s.total}" if s.total
                else "Field guide: starting…",
                CANCELLING: "Cancelling…", CANCELLED: "Field guide cancelled.",
                FAILED: f"Field guide failed: {s.error}",
                FINISHED: (f"Field guide: {len(s.result.pages)} pages in {s.result.out}" if s.result else "")}
        self.status.setText(text.get(s.status, ""))
        self.status.setToolTip(self.status.text())

    # -- lane ------------------------------------------------------------------------------------------------
    def _on_lane_yielded(self, event: Progress | Message) -> None:
        if isinstance(event, Message):
            (log.warning if event.level == "warning" else log.info)("field guide: %s", event.text)
            return
        if isinstance(event, Progress) and event.total and self.state.status == RUNNING:
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)
            self._set_state(GuideState(RUNNING, event.done, event.total, stage=event.stage))

    def _on_lane_returned(self, result: Any) -> None:
        self._result = result  # shown once the lane is idle (_on_lane_finished), so the button is usable again

    def _on_lane_errored(self, exc: BaseException) -> None:
        text = error_text(exc)
        log.error("field guide: %s", text)
        self._set_state(GuideState(FAILED, self.state.done, self.state.total, error=text))

    def _on_lane_finished(self) -> None:
        result, self._result = self._result, None
        if result is not None:
            self._finished(result)
        elif self.state.status in (RUNNING, CANCELLING):  # ended without a result: it was cancelled
            self._set_state(GuideState(CANCELLED, self.state.done, self.state.total))
        else:
            self._update()

    def _finished(self, result: Any) -> None:
        """Say where the guide is and offer to open its index in the browser."""
        self._set_state(GuideState(FINISHED, self.state.total, self.state.total, result))
        log.info("field guide: %d pages in %s", len(result.pages), result.out)
        answer = QMessageBox.question(
            self, "Field guide saved",
            f"Wrote {len(result.pages)} species pages to {result.out}.\n\nOpen index.html in your browser?",
            QMessageBox.StandardButton.Open | QMessageBox.StandardButton.Close, QMessageBox.StandardButton.Open)
        if answer == QMessageBox.StandardButton.Open:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(result.index)))

    # -- slots -----------------------------------------------------------------------------------------------
    @Slot()
    def _on_all_action_triggered(self) -> None:
        self.ask(None)

    @Slot()
    def _on_pair_action_triggered(self) -> None:
        self.ask(self.pair_species())

    @Slot()
    def _on_cancel_button_clicked(self) -> None:
        self.cancel()
