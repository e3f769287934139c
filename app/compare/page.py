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
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (QApplication, QCheckBox, QComboBox, QHBoxLayout, QLabel, QListWidgetItem, QProgressBar,
                               QSpinBox, QSplitter, QStackedWidget, QVBoxLayout, QWidget)

from engine.data import DataReport
from engine.errors import EngineError
from engine.events import Message, Progress
from engine.runs import RunInfo

from ..common.caches import trim_oldest
from ..common.lane import Lane
from ..common.model_cache import ModelCache
from ..common.text import error_text, training_method_label
from .columns import ColumnsView
from .compute import ClassParts, Confusion, Pair, class_parts_job, confusion_job
from .pairs import PairPanel
from .guide import GuideControl
from .rows import RowSelection, SeparationView
from .separation import PairSeparation, confusion_from_scores, places_job, scores_job, separation_job

log = logging.getLogger(__name__)

DEFAULT_CROPS = {"columns": 6, "parts": 3}  # crops per map of a class / per species of a separating part
TOGETHER = "Rank all parts together"
FINDING_PLACES = ("Finding which parts lie on the bird (each part's peak over the training photos, once per run); "
                  "until then all parts are ranked together.")


@dataclass(frozen=True)
class PairState:
    """The two classes compared (indices into the run's classes; -1: none)."""

    a: int
    b: int


@dataclass(frozen=True)
class CompareState:
    """What the page shows: the run, the pair, whether its crops are on screen, and the view ("parts": the
    ranked separating parts of a ``parts`` run; "columns": each class's own maps)."""

    run: str
    a: int
    b: int
    ready: bool
    view: str = "columns"


class ComparePage(QWidget):
    """Pick two classes (or a suggested pair) and compare their parts."""

    pair_changed = Signal(object)  # PairState
    compare_changed = Signal(object)  # CompareState
    row_selected = Signal(object)  # RowSelection (a parts run's separating-part row)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.confusion_lane = Lane(self, "confusion")
        self.parts_lane = Lane(self, "parts")
        self.confusion_models = ModelCache(keep=1)  # one cache per lane thread
        self.parts_models = ModelCache(keep=1)
        self.run: RunInfo | None = None
        self.report: DataReport | None = None
        self.confusion: Confusion | None = None
        self.scores: Any = None  # a parts run's engine.fieldmarks PartScores over the test split
        self._confusion_for = ""
        self._score_notes: list[str] = []
        self._parts: OrderedDict[tuple[str, int, int], ClassParts] = OrderedDict()
        self._separations: OrderedDict[tuple[str, int, int, int], PairSeparation] = OrderedDict()
        self._crops = dict(DEFAULT_CROPS)
        self._picked = False  # the user chose a pair: a finished confusion no longer picks one
        self.places: list[Any] | None = None  # a parts run's on-bird shares (engine.fieldmarks.onbird.PartPlace)
        self.places_error = ""  # why they could not be read or computed
        self._places_for = ""  # the run whose shares are being computed (or were)

        self.a_box = QComboBox(self)
        self.b_box = QComboBox(self)
        for box in (self.a_box, self.b_box):
            box.setMinimumContentsLength(20)
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.activated.connect(self._on_class_box_activated)
        self.top_n = QSpinBox(self)
        self.top_n.setRange(1, 24)
        self.top_n.setValue(DEFAULT_CROPS["columns"])
        self.top_n.setToolTip("Crops per part channel (the strongest by part score)")
        self.top_n.valueChanged.connect(self._on_top_n_value_changed)
        self.top_n_label = QLabel("Crops per part", self)
        self.progress = QProgressBar(self)
        self.progress.setMaximumWidth(220)
        self.progress.setVisible(False)
        self.status = QLabel("", self)
        self.together_box = QCheckBox(TOGETHER, self)
        self.together_box.setToolTip("Rank every part in one list. Unticked: the parts on the bird first, then the "
                                     "background / habitat parts (their peak seldom on the bird) below them")
        self.together_box.setVisible(False)
        self.together_box.toggled.connect(self._on_together_box_toggled)
        self.guide = GuideControl(self)
        bar = QHBoxLayout()
        bar.setContentsMargins(6, 6, 6, 0)
        bar.addWidget(self.a_box)
        bar.addWidget(QLabel("vs", self))
        bar.addWidget(self.b_box)
        bar.addWidget(self.top_n_label)
        bar.addWidget(self.top_n)
        bar.addWidget(self.together_box)
        bar.addWidget(self.progress)
        bar.addWidget(self.status, 1)
        bar.addWidget(self.guide)
        self.mode_label = QLabel("", self)
        self.mode_label.setObjectName("promptLabel")
        self.mode_label.setWordWrap(True)
        self.mode_label.setContentsMargins(8, 0, 8, 0)

        left = PairPanel(self)
        self.pairs, self.confusion_status = left.list, left.status
        self.pairs.itemClicked.connect(self._on_pairs_item_clicked)
        self.scroll = ColumnsView(self)
        self.columns = self.scroll.columns
        self.separation_view = SeparationView(self)
        self.separation_view.row_selected.connect(self.row_selected)
        self.views = QStackedWidget(self)
        self.views.addWidget(self.scroll)
        self.views.addWidget(self.separation_view)
        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(left)
        split.addWidget(self.views)
        split.setStretchFactor(1, 1)
        split.setSizes([300, 1000])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(bar)
        lay.addWidget(self.mode_label)
        lay.addWidget(split, 1)
        keys = [(Qt.Key.Key_Left, lambda: self.step_pair(-1)), (Qt.Key.Key_Right, lambda: self.step_pair(1))]
        keys += [(getattr(Qt.Key, f"Key_{n}"), lambda n=n: self.select_row(n - 1)) for n in range(1, 10)]
        for key, slot in keys:
            sc = QShortcut(QKeySequence(key), self, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.activated.connect(slot)
        self._update_status()
        self._update_mode()

    # -- inputs ----------------------------------------------------------------------------------------------
    def set_run(self, ref: RunInfo | None) -> None:
        self.run = ref
        self.confusion = None
        self.scores = None
        self._read_places()
        self._separations.clear()  # ranked from the scores, which are computed again
        self._confusion_for = ""
        self._picked = False
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
        self.report = report
        self.confusion = None
        self.scores = None
        if self.places is None:  # computed on the training photos of this data instead
            self._places_for, self.places_error = "", ""
        self._confusion_for = ""
        self._parts.clear()
        self._separations.clear()
        self._start_confusion()
        self.request()

    def set_pair(self, a: int, b: int) -> None:
        """Compare classes ``a`` and ``b`` (as the combo boxes or a suggested pair would)."""
        self._picked = True
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

    @property
    def view(self) -> str:
        """"parts" for a ``parts`` run (ranked separating parts), else "columns" (each class's own maps)."""
        return "parts" if self.run is not None and self.run.method == "parts" else "columns"

    def usable(self) -> str:
        """Why the page cannot compare now ("" when it can)."""
        if self.run is None:
            return "Open a run (Train, or File ▸ Open Run…)."
        if self.report is None:
            return "Open the run's data folder in the Library."
        if list(self.report.classes) != list(self.run.classes):
            return "The open data set has other classes than the run: open the data the run was trained on."
        return ""

    # -- jobs ------------------------------------------------------------------------------------------------
    def _start_confusion(self) -> None:
        if self.usable() or not self.isVisible() or self.run is None or self.report is None:
            return
        key = f"{self.run.path}|{self.report.root}"
        if self._confusion_for == key:
            return
        self._confusion_for = key
        if self.view == "parts":
            self._score_notes = []
            self.confusion_status.setText("Scoring the parts of the test images…")
            self.confusion_lane.submit(scores_job, self.run.path, self.report,
                                       on_returned=lambda scores, run=self.run.path: self._on_scores_returned(run,
                                                                                                           scores),
                                       on_yielded=lambda ev: self._show_progress(ev, self.confusion_status),
                                       on_errored=self._on_lane_errored)
            self._start_places()
            return
        self.confusion_status.setText("Predicting the test images…")
        self.confusion_lane.submit(confusion_job, self.run.path, self.report, self.confusion_models,
                                   on_returned=self._on_confusion_lane_returned,
                                   on_yielded=lambda ev: self._show_progress(ev, self.confusion_status),
                                   on_errored=self._on_lane_errored)

    def _read_places(self) -> None:
        """The run's saved on-bird shares (a small file; None: not computed for these weights yet)."""
        from engine.fieldmarks.onbird import saved_places

        self.places, self.places_error, self._places_for = None, "", ""
        if self.run is None or self.run.method != "parts":
            return
        try:
            self.places = saved_places(self.run.path)
        except EngineError as exc:
            self.places_error = str(exc)
            self._places_for = self.run.path  # a damaged file: not computed over it (its message says what to do)

    def _start_places(self) -> None:
        """Compute the on-bird shares after the scores, on the same lane (queued, not superseding them)."""
        if self.places is not None or self.run is None or self.report is None or self._places_for == self.run.path:
            return
        self._places_for = run = self.run.path
        self.confusion_lane.submit(places_job, run, self.report, supersede=False,
                                   on_returned=lambda places: self._on_places_returned(run, places),
                                   on_yielded=self._show_places_progress,
                                   on_errored=lambda exc: self._on_places_errored(run, exc))

    def places_note(self) -> str:
        """What the rows say while the parts are not grouped by place ("" once they can be)."""
        if self.places is not None or self.together_box.isChecked():
            return ""
        if self.places_error:
            return (f"Cannot tell the parts on the bird from the background ({self.places_error}); all parts are "
                    "ranked together.")
        return FINDING_PLACES

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
        missing = [c for c in dict.fromkeys((p.a, p.b)) if (run, c, n) not in self._parts]
        self._show_columns()
        if not missing:
            self.parts_lane.cancel()
            self.progress.setVisible(False)
            return
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
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
        cached = self._separations.get((run, p.a, p.b, n))
        if cached is not None:
            self.parts_lane.cancel()
            self.progress.setVisible(False)
            self._show_separation(cached)
            return
        self.separation_view.show_pair(None, names, "Ranking the parts…")
        self.compare_changed.emit(CompareState(run, p.a, p.b, False, "parts"))
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.parts_lane.submit(separation_job, run, self.scores, p.a, p.b, n,
                               on_returned=self._on_separation_returned,
                               on_yielded=lambda ev: self._show_progress(ev, self.status),
                               on_errored=self._on_lane_errored)

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
            parts = self._parts.get((self.run.path, c, n))
            ready = ready and parts is not None
            col.show_parts(self.run.classes[c] if 0 <= c < len(self.run.classes) else "", parts, n)
        if ready:
            self.status.setText("")
        self.compare_changed.emit(CompareState(self.run.path, p.a, p.b, ready))

    def _show_progress(self, event: Progress | Message, label: QLabel) -> None:
        if isinstance(event, Message) and label is self.confusion_status:  # the parts jobs repeat the same lines
            (log.warning if event.level == "warning" else log.info)("compare: %s", event.text)
            self._score_notes.append(event.text)
        if isinstance(event, Progress) and event.total:
            self.progress.setVisible(True)
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)
            label.setText(f"{event.stage}: {event.done}/{event.total}")

    def _show_places_progress(self, event: Progress | Message) -> None:
        if isinstance(event, Message):
            (log.warning if event.level == "warning" else log.info)("compare (on-bird shares): %s", event.text)
        elif event.total:
            self.progress.setVisible(True)
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)
            self.status.setText(f"On-bird shares (training photos): {event.done}/{event.total}")

    def _on_places_returned(self, run: str, places: list[Any]) -> None:
        if self.run is None or self.run.path != run:
            return
        self.places, self.places_error = places, ""
        if self.parts_lane.is_idle():
            self.progress.setVisible(False)
        on = sum(p.on_bird for p in places)
        log.info("compare: %d of %d parts of %s lie on the bird", on, len(places), run)
        self.status.setText(f"{on} of {len(places)} parts lie on the bird.")
        self._refresh_rows()

    def _on_places_errored(self, run: str, exc: BaseException) -> None:
        if self.run is None or self.run.path != run:
            return
        self.places_error = error_text(exc)
        log.error("compare: on-bird shares: %s", self.places_error)
        if self.parts_lane.is_idle():
            self.progress.setVisible(False)
        self.status.setText(f"On-bird shares: {self.places_error}")
        self._refresh_rows()

    def _refresh_rows(self) -> None:
        """Lay the shown pair's rows out again (the shares arrived, the toggle changed): nothing is recomputed."""
        sep = self.separation_view.separation
        if self.view != "parts" or self.run is None or sep is None or sep.run != self.run.path:
            return
        if (self.pair.a, self.pair.b) == (sep.a, sep.b):
            self.separation_view.arrange(self.places, self.together_box.isChecked(), self.places_note())

    def _on_parts_lane_returned(self, run: str, n: int, results: list[ClassParts]) -> None:
        for r in results:
            self._parts[(run, r.class_index, n)] = r
        trim_oldest(self._parts, 32)
        self.progress.setVisible(False)
        if self.run is not None and self.run.path == run:
            self._show_columns()

    def _on_separation_returned(self, sep: PairSeparation) -> None:
        self._separations[(sep.run, sep.a, sep.b, sep.crops)] = sep
        trim_oldest(self._separations, 32)
        self.progress.setVisible(False)
        if self.run is not None and self.run.path == sep.run and (self.pair.a, self.pair.b) == (sep.a, sep.b):
            self._show_separation(sep)

    def _on_scores_returned(self, run: str, scores: Any) -> None:
        if self.run is None or self.run.path != run:
            return
        self.scores = scores
        confusion = confusion_from_scores(run, scores)
        confusion.notes.extend(self._score_notes)
        picked = self._picked
        self._on_confusion_lane_returned(confusion)
        if picked or not confusion.pairs:
            self.request()

    def _on_confusion_lane_returned(self, confusion: Confusion) -> None:
        self.confusion = confusion
        if self.parts_lane.is_idle():
            self.progress.setVisible(False)
        self.pairs.show_pairs(confusion.pairs, self.run.classes if self.run else ())
        how = ("mean of the parts' class scores" if self.view == "parts"
               else "whole photos resized, as the maps see them")
        self.confusion_status.setText(f"{confusion.images} test images, top-1 {100 * confusion.accuracy:.1f} % "
                                      f"({how})" + "".join(f"\n{note}" for note in confusion.notes))
        if confusion.pairs and not self._picked:
            self.pairs.setCurrentRow(0)
            top = confusion.pairs[0]
            self.set_pair(top.a, top.b)
            self._picked = False

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
        self.top_n.setValue(self._crops[view])
        self.top_n.blockSignals(False)
        self.top_n_label.setText("Crops per species" if view == "parts" else "Crops per part")
        self.top_n.setToolTip("The strongest crops of each species per separating part" if view == "parts"
                              else "Crops per part channel (the strongest by part score)")
        if self.run is None:
            self.mode_label.setText("")
        elif view == "parts":
            self.mode_label.setText("Shared parts: every part is the same body region on every bird, so the parts "
                                    "are ranked by how well their scores tell the two species apart. Keys: Left / "
                                    "Right the pair, 1-9 a part.")
        else:
            method = training_method_label(self.run.method)
            self.mode_label.setText(f"{method} run: its maps belong to one class each, so each species shows its "
                                    "own maps' strongest crops (ranking the parts that separate a pair needs a "
                                    "`parts` run).")
        self._update_guide()

    def _update_guide(self) -> None:
        run = self.run
        self.guide.hint = ("Write a printable HTML page per species, with the parts that separate it from its "
                           "look-alikes" if self.view == "parts" else
                           "Write a printable HTML page per species: its typical photo, accuracy and confusions "
                           "(separating parts need a `parts` run)")
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
        from engine.fieldmarks import part_label, read_part_names

        try:
            names = read_part_names(self.run.path)
        except EngineError as exc:
            self.status.setText(str(exc))
            return
        self.separation_view.relabel({w.row.part: part_label(w.row.part, names) for w in self.separation_view.rows})

    @Slot(int)
    def _on_class_box_activated(self, _index: int) -> None:
        self.set_pair(self.a_box.currentIndex(), self.b_box.currentIndex())

    @Slot(bool)
    def _on_together_box_toggled(self, _on: bool) -> None:
        self._update_guide()
        self._refresh_rows()

    @Slot(int)
    def _on_top_n_value_changed(self, value: int) -> None:
        self._crops[self.view] = value
        self.request()

    @Slot(QListWidgetItem)
    def _on_pairs_item_clicked(self, item: QListWidgetItem) -> None:
        pair: Pair = item.data(Qt.ItemDataRole.UserRole)
        self.set_pair(pair.a, pair.b)


__all__ = ["ComparePage", "CompareState", "PairState", "RowSelection", "TOGETHER", "FINDING_PLACES"]
