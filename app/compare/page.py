"""The Compare workspace: two classes side by side, one row per part channel of their strongest crops.

The run's confusion over the test split (computed off the GUI thread when the page is first shown) suggests the
most confusable pairs; clicking one picks it. For each class, each of its maps (the ξ MC-Loss channels) gets a row
of its top-N crops over the class's test images, so the parts that tell the pair apart sit next to each other.
"""

from __future__ import annotations

import html
import logging
from collections import OrderedDict
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (QComboBox, QFrame, QGridLayout, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QProgressBar, QScrollArea, QSpinBox, QSplitter, QVBoxLayout, QWidget)

from engine.data import DataReport
from engine.errors import EngineError
from engine.events import Message, Progress
from engine.runs import RunInfo

from ..common.lane import Lane
from ..common.model_cache import ModelCache
from ..common.pixmaps import to_pixmap
from .compute import ClassParts, Confusion, Pair, class_parts_job, confusion_job

log = logging.getLogger(__name__)

THUMB = 80


@dataclass(frozen=True)
class PairState:
    """The two classes compared (indices into the run's classes; -1: none)."""

    a: int
    b: int


@dataclass(frozen=True)
class CompareState:
    """What the page shows: the run, the pair, and whether its crops are on screen."""

    run: str
    a: int
    b: int
    ready: bool


class ClassColumn(QFrame):
    """One class: its title, then per map a caption and a row of crops (best first)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("compareColumn")
        self.lay = QVBoxLayout(self)
        self.lay.setContentsMargins(4, 4, 4, 4)
        self.title = QLabel("", self)
        self.title.setObjectName("sectionTitle")
        self.lay.addWidget(self.title)
        self.body = QWidget(self)
        self.grid = QGridLayout(self.body)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setHorizontalSpacing(3)
        self.lay.addWidget(self.body)
        self.lay.addStretch(1)
        self.crop_labels: list[list[QLabel]] = []

    def show_parts(self, name: str, parts: ClassParts | None, top_n: int) -> None:
        while self.grid.count():
            w = self.grid.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.crop_labels = []
        if parts is None:
            self.title.setText(f"{html.escape(name)} · computing…")
            return
        self.title.setText(f"{html.escape(name)} · {parts.images} test images")
        for r, row in enumerate(parts.rows):
            caption = QLabel(row.name, self.body)
            self.grid.addWidget(caption, 2 * r, 0, 1, max(1, top_n))
            labels = []
            for c, crop in enumerate(row.crops):
                lab = QLabel(self.body)
                lab.setPixmap(to_pixmap(crop.image).scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                                           Qt.TransformationMode.SmoothTransformation))
                lab.setToolTip(f"{crop.path}\nscore {crop.score:.3g}")
                self.grid.addWidget(lab, 2 * r + 1, c)
                labels.append(lab)
            self.crop_labels.append(labels)


class ComparePage(QWidget):
    """Pick two classes (or a suggested pair) and compare their parts."""

    pair_changed = Signal(object)  # PairState
    compare_changed = Signal(object)  # CompareState

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.confusion_lane = Lane(self, "confusion")
        self.parts_lane = Lane(self, "parts")
        self.confusion_models = ModelCache(keep=1)  # one cache per lane thread
        self.parts_models = ModelCache(keep=1)
        self.run: RunInfo | None = None
        self.report: DataReport | None = None
        self.confusion: Confusion | None = None
        self._confusion_for = ""
        self._parts: OrderedDict[tuple[str, int, int], ClassParts] = OrderedDict()
        self._picked = False  # the user chose a pair: a finished confusion no longer picks one

        self.a_box = QComboBox(self)
        self.b_box = QComboBox(self)
        for box in (self.a_box, self.b_box):
            box.setMinimumContentsLength(20)
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.activated.connect(self._on_class_box_activated)
        self.top_n = QSpinBox(self)
        self.top_n.setRange(1, 24)
        self.top_n.setValue(6)
        self.top_n.setToolTip("Crops per part channel (the strongest by part score)")
        self.top_n.valueChanged.connect(self._on_top_n_value_changed)
        self.progress = QProgressBar(self)
        self.progress.setMaximumWidth(220)
        self.progress.setVisible(False)
        self.status = QLabel("", self)
        bar = QHBoxLayout()
        bar.setContentsMargins(6, 6, 6, 0)
        bar.addWidget(self.a_box)
        bar.addWidget(QLabel("vs", self))
        bar.addWidget(self.b_box)
        bar.addWidget(QLabel("Crops per part", self))
        bar.addWidget(self.top_n)
        bar.addWidget(self.progress)
        bar.addWidget(self.status, 1)

        self.pairs = QListWidget(self)
        self.pairs.setObjectName("confusablePairs")
        self.pairs.setAlternatingRowColors(True)
        self.pairs.setSpacing(1)
        self.pairs.setToolTip("Class pairs the run confuses most on the test split: click one to compare it")
        self.pairs.itemClicked.connect(self._on_pairs_item_clicked)
        self.confusion_status = QLabel("", self)
        self.confusion_status.setWordWrap(True)
        left = QWidget(self)
        ll = QVBoxLayout(left)
        ll.setContentsMargins(6, 0, 0, 0)
        title = QLabel("Most confused pairs (test split)", left)
        title.setObjectName("sectionTitle")
        ll.addWidget(title)
        ll.addWidget(self.pairs, 1)
        ll.addWidget(self.confusion_status)
        self.columns = (ClassColumn(self), ClassColumn(self))
        holder = QWidget(self)
        hl = QHBoxLayout(holder)
        for col in self.columns:
            hl.addWidget(col, 1)
        self.scroll = QScrollArea(self)
        self.scroll.setWidgetResizable(True)
        self.scroll.setWidget(holder)
        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(left)
        split.addWidget(self.scroll)
        split.setStretchFactor(1, 1)
        split.setSizes([300, 1000])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(bar)
        lay.addWidget(split, 1)
        self._update_status()

    # -- inputs ----------------------------------------------------------------------------------------------
    def set_run(self, ref: RunInfo | None) -> None:
        self.run = ref
        self.confusion = None
        self._confusion_for = ""
        self._picked = False
        self.pairs.clear()
        for box in (self.a_box, self.b_box):
            box.clear()
            box.addItems(list(ref.classes) if ref else [])
        if ref and len(ref.classes) > 1:
            self.b_box.setCurrentIndex(1)
        self._start_confusion()
        self.request()

    def set_data(self, report: DataReport | None) -> None:
        self.report = report
        self.confusion = None
        self._confusion_for = ""
        self._parts.clear()
        self._start_confusion()
        self.request()

    def set_pair(self, a: int, b: int) -> None:
        """Compare classes ``a`` and ``b`` (as the combo boxes or a suggested pair would)."""
        self._picked = True
        self.a_box.setCurrentIndex(a)
        self.b_box.setCurrentIndex(b)
        self.pair_changed.emit(PairState(a, b))
        self.request()

    @property
    def pair(self) -> PairState:
        return PairState(self.a_box.currentIndex(), self.b_box.currentIndex())

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
        self.confusion_status.setText("Predicting the test images…")
        self.confusion_lane.submit(confusion_job, self.run.path, self.report, self.confusion_models,
                                   on_returned=self._on_confusion_lane_returned,
                                   on_yielded=lambda ev: self._show_progress(ev, self.confusion_status),
                                   on_errored=self._on_lane_errored)

    def request(self) -> None:
        """Show the crops of the current pair: cached classes at once, the others from the parts lane."""
        why = self.usable()
        self._update_status(why)
        p = self.pair
        if not self.isVisible():  # nothing is computed for a hidden page; showing it asks again
            return
        if why or p.a < 0 or p.b < 0 or self.run is None or self.report is None:
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
        if isinstance(event, Progress) and event.total:
            self.progress.setVisible(True)
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)
            label.setText(f"{event.stage}: {event.done}/{event.total}")

    def _on_parts_lane_returned(self, run: str, n: int, results: list[ClassParts]) -> None:
        for r in results:
            self._parts[(run, r.class_index, n)] = r
        while len(self._parts) > 32:
            self._parts.popitem(last=False)
        self.progress.setVisible(False)
        if self.run is not None and self.run.path == run:
            self._show_columns()

    def _on_confusion_lane_returned(self, confusion: Confusion) -> None:
        self.confusion = confusion
        if self.parts_lane.is_idle():
            self.progress.setVisible(False)
        names = self.run.classes if self.run else ()
        self.pairs.clear()
        for pair in confusion.pairs:
            errors = f"{pair.errors} error" + ("" if pair.errors == 1 else "s")
            item = QListWidgetItem(f"{names[pair.a]} ↔ {names[pair.b]}\n{errors} · "
                                   f"{100 * pair.soft:.1f} % probability to each other")
            item.setData(Qt.ItemDataRole.UserRole, pair)
            self.pairs.addItem(item)
        self.confusion_status.setText(f"{confusion.images} test images, top-1 {100 * confusion.accuracy:.1f} % "
                                      "(whole photos resized, as the maps see them)"
                                      + "".join(f"\n{note}" for note in confusion.notes))
        if confusion.pairs and not self._picked:
            self.pairs.setCurrentRow(0)
            top = confusion.pairs[0]
            self.set_pair(top.a, top.b)
            self._picked = False

    def _on_lane_errored(self, exc: BaseException) -> None:
        self.progress.setVisible(False)
        text = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
        log.error("compare: %s", text)
        self.status.setText(text)

    def _update_status(self, why: str = "") -> None:
        self.status.setText(why)
        for w in (self.a_box, self.b_box, self.top_n):
            w.setEnabled(not why)

    def shutdown(self) -> None:
        self.confusion_lane.shutdown()
        self.parts_lane.shutdown()

    # -- slots -----------------------------------------------------------------------------------------------
    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self._start_confusion()
        self.request()

    @Slot(int)
    def _on_class_box_activated(self, _index: int) -> None:
        self.set_pair(self.a_box.currentIndex(), self.b_box.currentIndex())

    @Slot(int)
    def _on_top_n_value_changed(self, _value: int) -> None:
        self.request()

    @Slot(QListWidgetItem)
    def _on_pairs_item_clicked(self, item: QListWidgetItem) -> None:
        pair: Pair = item.data(Qt.ItemDataRole.UserRole)
        self.set_pair(pair.a, pair.b)
