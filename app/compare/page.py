"""The Compare workspace: two species side by side, and the parts that tell them apart.

The run's confusion over the test split (computed off the GUI thread when the page is first shown) suggests the
most confusable pairs; clicking one (or Left / Right) picks it, the class boxes pick any other.

- A ``parts`` run (shared parts: every part means the same body region on every bird and scores every class)
  ranks its parts for the pair by how far their class scores separate the two species' test images
  (:mod:`.separation`, :func:`engine.fieldmarks.rank_parts`), one row per part with its strongest crops of each
  species (:mod:`.rows`); the keys 1-9 select a row and show its crops larger. The parts on the bird are ranked
  first and the background / habitat parts listed below them (the run's on-bird shares,
  :mod:`engine.fieldmarks.onbird`: read from the run folder, else computed once on the confusion lane after the
  scores, with progress in the status line); "Rank all parts together" shows one ranking.
- MC-Loss, TASN and CE runs keep the per-class view (:mod:`.columns`): their maps belong to one class each, so
  there is nothing to rank across a pair, and a short label says so.

"Save field guide…" (:mod:`.guide`) writes the printable per-species pages of :func:`engine.fieldmarks.write_guide`.

What the page shows is its :class:`~app.compare.state.CompareModel` (no Qt), which the tests drive without a widget.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import QApplication, QLabel, QListWidgetItem, QWidget

from engine.data import DataReport
from engine.errors import EngineError
from engine.events import Message, Progress
from engine.runs import RunInfo

from ..common.lane import Lane
from ..common.model_cache import ModelCache
from ..common.text import error_text
from ..common.widgets import state_property
from . import ui
from .compute import ClassParts, Confusion, Pair, class_parts_job, confusion_job
from .rows import RowSelection
from .separation import PairSeparation, places_job, scores_job, separation_job
from .state import FINDING_PLACES, TOGETHER, CompareModel, CompareState, PairState

log = logging.getLogger(__name__)


class ComparePage(QWidget):
    """Pick two classes (or a suggested pair) and compare their parts: the widgets over a :class:`CompareModel`."""

    pair_changed = Signal(object)  # PairState
    compare_changed = Signal(object)  # CompareState
    row_selected = Signal(object)  # RowSelection (a parts run's separating-part row)

    run = state_property("run")
    report = state_property("report")
    confusion = state_property("confusion")
    scores = state_property("scores")
    places = state_property("places")
    view = state_property("view")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.confusion_lane = Lane(self, "confusion")
        self.parts_lane = Lane(self, "parts")
        self.confusion_models = ModelCache(keep=1)  # one cache per lane thread
        self.parts_models = ModelCache(keep=1)
        self.state = CompareModel()
        ui.build(self)
        for box in (self.a_box, self.b_box):
            box.activated.connect(self._on_class_box_activated)
        self.top_n.valueChanged.connect(self._on_top_n_value_changed)
        self.together_box.toggled.connect(self._on_together_box_toggled)
        self.pairs.itemClicked.connect(self._on_pairs_item_clicked)
        self.separation_view.row_selected.connect(self.row_selected)
        keys = [(Qt.Key.Key_Left, lambda: self.step_pair(-1)), (Qt.Key.Key_Right, lambda: self.step_pair(1))]
        keys += [(getattr(Qt.Key, f"Key_{n}"), lambda n=n: self.select_row(n - 1)) for n in range(1, 10)]
        for key, slot in keys:
            sc = QShortcut(QKeySequence(key), self, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.activated.connect(slot)
        self._update_status()
        self._update_mode()

    # -- inputs ----------------------------------------------------------------------------------------------
    def set_run(self, ref: RunInfo | None) -> None:
        self.state.set_run(ref)
        self.pairs.clear()
        for box in (self.a_box, self.b_box):
            box.clear()
            box.addItems(list(ref.classes) if ref else [])
        if ref and len(ref.classes) > 1:
            self.b_box.setCurrentIndex(1)
        self._update_mode()
        self._start_confusion()
        self.request()

    def set_data(self, report: DataReport | None) -> None:
        self.state.set_data(report)
        self._start_confusion()
        self.request()

    def set_pair(self, a: int, b: int) -> None:
        """Compare classes ``a`` and ``b`` (as the combo boxes or a suggested pair would)."""
        self.state.picked = True
        self.a_box.setCurrentIndex(a)
        self.b_box.setCurrentIndex(b)
        self.pairs.follow(a, b)
        self.pair_changed.emit(PairState(a, b))
        self.request()

    def step_pair(self, delta: int) -> None:
        """Compare the previous (``delta`` −1) or next (+1) pair of the list (the Left / Right keys)."""
        pair = self.pairs.step(delta, self.pair.a, self.pair.b)
        if pair is not None:
            self.set_pair(pair.a, pair.b)

    def select_row(self, index: int) -> None:
        """Select separating-part row ``index`` (0-based; the keys 1-9) of a ``parts`` run."""
        if self.view == "parts":
            self.separation_view.select(index)

    @property
    def pair(self) -> PairState:
        return PairState(self.a_box.currentIndex(), self.b_box.currentIndex())

    def usable(self) -> str:
        """Why the page cannot compare now ("" when it can)."""
        return self.state.usable()

    def places_note(self) -> str:
        """What the rows say while the parts are not grouped by place ("" once they can be)."""
        return self.state.places_note(self.together_box.isChecked())

    # -- jobs ------------------------------------------------------------------------------------------------
    def _start_confusion(self) -> None:
        if not self.isVisible() or not self.state.confusion_to_compute():
            return
        run = self.run.path
        progress = lambda ev: self._show_progress(ev, self.confusion_status)  # noqa: E731
        if self.view == "parts":
            self.confusion_status.setText("Scoring the parts of the test images…")
            self.confusion_lane.submit(scores_job, run, self.report, on_yielded=progress,
                                       on_returned=lambda scores: self._on_scores_returned(run, scores),
                                       on_errored=self._on_lane_errored)
            self._start_places()
            return
        self.confusion_status.setText("Predicting the test images…")
        self.confusion_lane.submit(confusion_job, run, self.report, self.confusion_models,
                                   on_returned=self._on_confusion_lane_returned, on_yielded=progress,
                                   on_errored=self._on_lane_errored)

    def _start_places(self) -> None:
        """Compute the on-bird shares after the scores, on the same lane (queued, not superseding them)."""
        run = self.state.places_to_compute()
        if run:
            self.confusion_lane.submit(places_job, run, self.report, supersede=False,
                                       on_returned=lambda places: self._on_places_returned(run, places),
                                       on_yielded=self._show_places_progress,
                                       on_errored=lambda exc: self._on_places_errored(run, exc))

    def request(self) -> None:
        """Show the current pair: from the caches at once, else computed on the parts lane."""
        why = self.usable()
        self._update_status(why)
        self._update_guide()
        p = self.pair
        if not self.isVisible():  # nothing is computed for a hidden page; showing it asks again
            return
        if why or p.a < 0 or p.b < 0 or self.run is None or self.report is None:
            return
        if self.view == "parts":
            self._request_separation()
            return
        run, n = self.run.path, self.top_n.value()
        missing = self.state.missing_classes(p.a, p.b, n)
        self._show_columns()
        if not missing:
            self.parts_lane.cancel()
            self.progress.setVisible(False)
            return
        self._busy()
        self.parts_lane.submit(class_parts_job, run, self.report, missing, n, self.parts_models,
                               on_returned=lambda res: self._on_parts_lane_returned(run, n, res),
                               on_yielded=lambda ev: self._show_progress(ev, self.status),
                               on_errored=self._on_lane_errored)

    def _request_separation(self) -> None:
        assert self.run is not None
        p, run, n = self.pair, self.run.path, self.top_n.value()
        names = (self.run.classes[p.a], self.run.classes[p.b])
        if p.a == p.b:
            self.parts_lane.cancel()
            self.separation_view.show_pair(None, names, "Pick two different species to rank the parts that "
                                                        "tell them apart.")
            return
        if self.scores is None:
            self.separation_view.show_pair(None, names, "Scoring the parts of the test images…")
            return
        cached = self.state.separation(p.a, p.b, n)
        if cached is not None:
            self.parts_lane.cancel()
            self.progress.setVisible(False)
            self._show_separation(cached)
            return
        self.separation_view.show_pair(None, names, "Ranking the parts…")
        self.compare_changed.emit(CompareState(run, p.a, p.b, False, "parts"))
        self._busy()
        self.parts_lane.submit(separation_job, run, self.scores, p.a, p.b, n,
                               on_returned=self._on_separation_returned,
                               on_yielded=lambda ev: self._show_progress(ev, self.status),
                               on_errored=self._on_lane_errored)

    def _busy(self) -> None:
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)

    # -- showing ---------------------------------------------------------------------------------------------
    def _show_separation(self, sep: PairSeparation) -> None:
        assert self.run is not None
        self.separation_view.show_pair(sep, (self.run.classes[sep.a], self.run.classes[sep.b]), places=self.places,
                                       together=self.together_box.isChecked(), note=self.places_note())
        self.status.setText("")
        self.compare_changed.emit(CompareState(sep.run, sep.a, sep.b, True, "parts"))

    def _show_columns(self) -> None:
        if self.run is None:
            return
        p, n = self.pair, self.top_n.value()
        ready = True
        for col, c in zip(self.columns, (p.a, p.b)):
            parts = self.state.class_parts(c, n)
            ready = ready and parts is not None
            col.show_parts(self.state.class_name(c), parts, n)
        if ready:
            self.status.setText("")
        self.compare_changed.emit(CompareState(self.run.path, p.a, p.b, ready))

    def _show_progress(self, event: Progress | Message, label: QLabel) -> None:
        if isinstance(event, Message) and label is self.confusion_status:  # the parts jobs repeat the same lines
            (log.warning if event.level == "warning" else log.info)("compare: %s", event.text)
            self.state.score_notes.append(event.text)
        if isinstance(event, Progress) and event.total:
            self._set_progress(event)
            label.setText(self.state.progress_text(event))

    def _set_progress(self, event: Progress) -> None:
        self.progress.setVisible(True)
        self.progress.setRange(0, event.total)
        self.progress.setValue(event.done)

    def _show_places_progress(self, event: Progress | Message) -> None:
        if isinstance(event, Message):
            (log.warning if event.level == "warning" else log.info)("compare (on-bird shares): %s", event.text)
        elif event.total:
            self._set_progress(event)
            self.status.setText(f"On-bird shares (training photos): {event.done}/{event.total}")

    def _on_places_returned(self, run: str, places: list[Any]) -> None:
        text = self.state.places_found(run, places)
        if text is None:
            return
        if self.parts_lane.is_idle():
            self.progress.setVisible(False)
        log.info("compare: %d of %d parts of %s lie on the bird", sum(p.on_bird for p in places), len(places), run)
        self.status.setText(text)
        self._refresh_rows()

    def _on_places_errored(self, run: str, exc: BaseException) -> None:
        text = self.state.places_failed(run, exc)
        if text is None:
            return
        log.error("compare: on-bird shares: %s", self.state.places_error)
        if self.parts_lane.is_idle():
            self.progress.setVisible(False)
        self.status.setText(text)
        self._refresh_rows()

    def _refresh_rows(self) -> None:
        """Lay the shown pair's rows out again (the shares arrived, the toggle changed): nothing is recomputed."""
        sep = self.separation_view.separation
        if self.view != "parts" or self.run is None or sep is None or sep.run != self.run.path:
            return
        if (self.pair.a, self.pair.b) == (sep.a, sep.b):
            self.separation_view.arrange(self.places, self.together_box.isChecked(), self.places_note())

    def _on_parts_lane_returned(self, run: str, n: int, results: list[ClassParts]) -> None:
        shown = self.state.store_parts(run, n, results)
        self.progress.setVisible(False)
        if shown:
            self._show_columns()

    def _on_separation_returned(self, sep: PairSeparation) -> None:
        shown = self.state.store_separation(sep, self.pair.a, self.pair.b)
        self.progress.setVisible(False)
        if shown:
            self._show_separation(sep)

    def _on_scores_returned(self, run: str, scores: Any) -> None:
        confusion = self.state.scores_found(run, scores)
        if confusion is None:
            return
        picked = self.state.picked
        self._on_confusion_lane_returned(confusion)
        if picked or not confusion.pairs:
            self.request()

    def _on_confusion_lane_returned(self, confusion: Confusion) -> None:
        self.state.confusion = confusion
        if self.parts_lane.is_idle():
            self.progress.setVisible(False)
        self.pairs.show_pairs(confusion.pairs, self.run.classes if self.run else ())
        self.confusion_status.setText(self.state.confusion_text(confusion))
        if confusion.pairs and not self.state.picked:
            self.pairs.setCurrentRow(0)
            top = confusion.pairs[0]
            self.set_pair(top.a, top.b)
            self.state.picked = False

    def _on_lane_errored(self, exc: BaseException) -> None:
        self.progress.setVisible(False)
        text = error_text(exc)
        log.error("compare: %s", text)
        self.status.setText(text)
        if self.view == "parts" and not self.separation_view.rows:
            self.separation_view.title.setText(text)

    def _update_status(self, why: str = "") -> None:
        self.status.setText(why)
        for w in (self.a_box, self.b_box, self.top_n, self.together_box):
            w.setEnabled(not why)

    def _update_mode(self) -> None:
        """The view for the run's method, its crop count, and the label that says what the view shows."""
        view = self.view
        self.views.setCurrentWidget(self.separation_view if view == "parts" else self.scroll)
        self.together_box.setVisible(view == "parts")
        self.top_n.blockSignals(True)
        self.top_n.setValue(self.state.crops[view])
        self.top_n.blockSignals(False)
        label, tip = self.state.crops_texts()
        self.top_n_label.setText(label)
        self.top_n.setToolTip(tip)
        self.mode_label.setText(self.state.mode_text())
        self._update_guide()

    def _update_guide(self) -> None:
        run = self.run
        self.guide.hint = self.state.guide_hint()
        self.guide.all_parts = self.together_box.isChecked()
        self.guide.set_context(run.path if run else "", self.report, tuple(run.classes) if run else (),
                               (self.pair.a, self.pair.b), self.usable())

    def shutdown(self) -> None:
        self.confusion_lane.shutdown()
        self.parts_lane.shutdown()
        self.guide.shutdown()

    # -- slots -----------------------------------------------------------------------------------------------
    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        focus = QApplication.focusWidget()
        if focus is None or not self.isAncestorOf(focus):  # the page's keys work once it is shown
            self.pairs.setFocus()
        self._relabel()
        self._start_confusion()
        self.request()

    def _relabel(self) -> None:
        """Part names given elsewhere (Explore's legend, ``fieldmark names``) since the rows were drawn."""
        if self.view != "parts" or self.run is None or not self.separation_view.rows:
            return
        try:
            labels = self.state.part_labels([w.row.part for w in self.separation_view.rows])
        except EngineError as exc:
            self.status.setText(str(exc))
            return
        self.separation_view.relabel(labels)

    @Slot(int)
    def _on_class_box_activated(self, _index: int) -> None:
        self.set_pair(self.a_box.currentIndex(), self.b_box.currentIndex())

    @Slot(bool)
    def _on_together_box_toggled(self, _on: bool) -> None:
        self._update_guide()
        self._refresh_rows()

    @Slot(int)
    def _on_top_n_value_changed(self, value: int) -> None:
        self.state.crops[self.view] = value
        self.request()

    @Slot(QListWidgetItem)
    def _on_pairs_item_clicked(self, item: QListWidgetItem) -> None:
        pair: Pair = item.data(Qt.ItemDataRole.UserRole)
        self.set_pair(pair.a, pair.b)


__all__ = ["ComparePage", "CompareState", "PairState", "RowSelection", "TOGETHER", "FINDING_PLACES"]
