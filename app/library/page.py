"""The Library workspace: open a folder (scanned off the GUI thread), its report, a thumbnail grid and a preview."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import shiboken6
from PySide6.QtCore import QItemSelection, QObject, QSize, Qt, Signal, Slot
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QListView, QProgressBar, QPushButton,
                               QSizePolicy, QSplitter, QStackedWidget, QVBoxLayout, QWidget)
from superqt.utils import create_worker

from engine.data import DataReport, scan
from engine.errors import Cancelled, EngineError

from ..common.text import error_text
from ..state import DataState, SelectionState, StepRequest
from .model import SampleFilter, SampleListModel, SampleRole
from .preview import PreviewPanel
from .report import ClassPick, ReportPanel
from .thumbs import ThumbnailLoader

log = logging.getLogger(__name__)

THUMB = 112
PROMPT = ("<h2>Open a folder of bird photos</h2>"
          "One sub-folder per species, train/ and test/ folders, or CUB_200_2011.")


class _ScanProgress(QObject):
    """Carries the scan's progress from the worker thread (throttled: only when the percentage changes)."""

    progress_changed = Signal(int)

    def __init__(self, abort: threading.Event) -> None:
        super().__init__()
        self.abort = abort
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        if self.abort.is_set():
            raise Cancelled("scan stopped")
        pct = int(100 * done / max(total, 1))
        if pct != self._last:
            self._last = pct
            self.progress_changed.emit(pct)


def scan_folder(root: str, progress: _ScanProgress) -> DataReport:
    """The worker's job: :func:`engine.data.scan` with a progress callback (runs on a pool thread)."""
    return scan(root, progress=progress)


class LibraryPage(QWidget):
    """Open a folder, show its report, browse and preview its images. ``data_changed`` carries a DataState."""

    data_changed = Signal(object)  # DataState
    selection_changed = Signal(object)  # SelectionState
    scan_failed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.loader = ThumbnailLoader(size=THUMB, parent=self)
        self.model = SampleListModel(self.loader, self)
        self.report: DataReport | None = None
        self.root = ""
        self._worker = None
        self._abort = threading.Event()

        top = self._build_top()

        self.report_panel = ReportPanel(self)
        self.report_panel.class_pick_requested.connect(self._on_report_panel_class_pick_requested)
        self._build_grid()
        self.preview = PreviewPanel(self)

        self.prompt = QWidget(self)
        pl = QVBoxLayout(self.prompt)
        pl.addStretch(1)
        self.prompt_label = QLabel(PROMPT, self.prompt)
        self.prompt_label.setObjectName("promptLabel")
        self.prompt_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.prompt_label.setWordWrap(True)
        prompt_button = QPushButton("Open a Folder…", self.prompt)
        prompt_button.setObjectName("promptButton")
        prompt_button.clicked.connect(self.choose_folder)
        pl.addWidget(self.prompt_label)
        pl.addWidget(prompt_button, 0, Qt.AlignmentFlag.AlignHCenter)
        pl.addStretch(2)

        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(self.report_panel)
        split.addWidget(self.grid)
        split.addWidget(self.preview)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setStretchFactor(2, 0)
        split.setSizes([330, 700, 420])
        self.splitter = split
        self.stack = QStackedWidget(self)
        self.stack.addWidget(self.prompt)
        self.stack.addWidget(split)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.stack, 1)
        self._set_filters_enabled(False)

    # -- opening ---------------------------------------------------------------------------------------------
    @Slot()

    def _build_top(self) -> QHBoxLayout:
        """The row above the grid: Open Folder, the folder's path, the scan's progress, the class and split
        filters and the count."""
        self.open_button = QPushButton("Open Folder…", self)
        self.open_button.clicked.connect(self.choose_folder)
        self.path_label = QLabel("", self)
        self.path_label.setObjectName("pathLabel")
        self.path_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.path_label.setMinimumWidth(60)
        self.class_box = QComboBox(self)
        self.class_box.setMinimumContentsLength(16)
        self.class_box.currentIndexChanged.connect(self._on_filters_changed)
        self.split_box = QComboBox(self)
        self.split_box.addItem("All splits", None)
        self.split_box.addItem("Train", "train")
        self.split_box.addItem("Test", "test")
        self.split_box.currentIndexChanged.connect(self._on_filters_changed)
        self.count_label = QLabel("", self)
        self.busy = QProgressBar(self)
        self.busy.setMaximumWidth(180)
        self.busy.setVisible(False)
        top = QHBoxLayout()
        top.setContentsMargins(6, 6, 6, 0)
        top.addWidget(self.open_button)
        top.addWidget(self.path_label, 1)
        top.addWidget(self.busy)
        top.addWidget(QLabel("Class", self))
        top.addWidget(self.class_box)
        top.addWidget(QLabel("Split", self))
        top.addWidget(self.split_box)
        top.addWidget(self.count_label)
        return top

    def _build_grid(self) -> None:
        """The thumbnail grid over the sample model (laid out in batches, so 20,000 items never stall)."""
        self.grid = QListView(self)
        self.grid.setObjectName("thumbGrid")
        self.grid.setViewMode(QListView.ViewMode.IconMode)
        self.grid.setUniformItemSizes(True)
        self.grid.setLayoutMode(QListView.LayoutMode.Batched)  # lay out 20,000 items in slices, never at once
        self.grid.setBatchSize(500)
        self.grid.setMovement(QListView.Movement.Static)
        self.grid.setResizeMode(QListView.ResizeMode.Adjust)
        self.grid.setIconSize(QSize(THUMB, THUMB))
        self.grid.setGridSize(QSize(THUMB + 18, THUMB + 26))
        self.grid.setSpacing(2)
        self.grid.setWordWrap(False)
        self.grid.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.grid.setSelectionMode(QListView.SelectionMode.SingleSelection)
        self.grid.setModel(self.model)
        self.grid.selectionModel().selectionChanged.connect(self._on_grid_selection_changed)

    def choose_folder(self) -> None:
        """Ask for a folder and open it."""
        start = self.root or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images", start)
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder: str) -> None:
        """Scan ``folder`` on a worker thread; the report appears when the scan returns."""
        self.cancel_scan()
        self._abort = threading.Event()
        progress = _ScanProgress(self._abort)
        progress.progress_changed.connect(self.busy.setValue)
        self.root = os.path.abspath(os.path.expanduser(folder))
        self.path_label.setText(f"Scanning {self.root} …")
        self.busy.setRange(0, 100)
        self.busy.setValue(0)
        self.busy.setVisible(True)
        self.open_button.setEnabled(False)
        log.info("scanning %s", self.root)
        root = self.root
        self._worker = create_worker(scan_folder, root, progress, _start_thread=True, _connect={
            "returned": lambda report: self._on_worker_returned(root, report),
            "errored": lambda exc: self._on_worker_errored(root, exc)})
        self._progress = progress  # keep the emitter alive while the worker runs

    def cancel_scan(self) -> None:
        self._abort.set()

    def is_scanning(self) -> bool:
        return self._worker is not None

    def _on_worker_returned(self, root: str, report: DataReport) -> None:
        if not shiboken6.isValid(self) or root != self.root:
            return
        self._worker = None
        self._scan_done()
        self.set_report(report)

    def _on_worker_errored(self, root: str, exc: BaseException) -> None:
        if not shiboken6.isValid(self) or root != self.root:
            return
        self._worker = None
        self._scan_done()
        if isinstance(exc, Cancelled):
            return
        text = error_text(exc)
        if not isinstance(exc, EngineError):
            log.error("scan of %s failed", root, exc_info=(type(exc), exc, exc.__traceback__))
        else:
            log.error("%s", text)
        self.path_label.setText(f"Cannot open {root}")
        self.prompt_label.setText(f"<h2>This folder cannot be used</h2>{text}")
        self.stack.setCurrentWidget(self.prompt)
        self.scan_failed.emit(text)

    def _scan_done(self) -> None:
        self.busy.setVisible(False)
        self.open_button.setEnabled(True)

    def set_report(self, report: DataReport) -> None:
        """Show a scan's report and its samples (GUI thread)."""
        self.report = report
        self.root = report.root
        self.path_label.setText(report.root)
        self.path_label.setToolTip(report.root)
        self.report_panel.set_report(report)
        self.preview.set_part_names(report.part_names)
        self.preview.clear()
        self.model.set_samples(report.samples, report.classes)
        self.class_box.blockSignals(True)
        self.split_box.blockSignals(True)
        self.class_box.clear()
        self.class_box.addItem("All classes", None)
        for i, c in enumerate(report.classes):
            self.class_box.addItem(c, i)
        self.split_box.setCurrentIndex(0)
        self.class_box.blockSignals(False)
        self.split_box.blockSignals(False)
        self._set_filters_enabled(bool(report.classes))
        self._update_count()
        self.stack.setCurrentWidget(self.splitter)
        if self.model.rowCount():
            self.grid.setCurrentIndex(self.model.index(0, 0))
        self.data_changed.emit(DataState(report.root, report))

    def show_prompt(self, text: str | None = None) -> None:
        """Show the empty state with its "Open a folder" button (and an optional message)."""
        if text:
            self.prompt_label.setText(text)
        self.stack.setCurrentWidget(self.prompt)

    # -- filtering and selection -----------------------------------------------------------------------------
    def set_filter(self, flt: SampleFilter) -> None:
        """Filter the grid (also reflected in the combo boxes)."""
        self.class_box.blockSignals(True)
        self.split_box.blockSignals(True)
        self.class_box.setCurrentIndex(max(0, self.class_box.findData(flt.label)) if flt.label is not None else 0)
        self.split_box.setCurrentIndex(max(0, self.split_box.findData(flt.split)) if flt.split else 0)
        self.class_box.blockSignals(False)
        self.split_box.blockSignals(False)
        self._apply_filter(flt)

    def _apply_filter(self, flt: SampleFilter) -> None:
        self.model.set_filter(flt)
        self._update_count()
        if self.model.rowCount():
            self.grid.setCurrentIndex(self.model.index(0, 0))
        else:
            self.preview.clear()

    @Slot(object)
    def step(self, request: StepRequest) -> None:
        """Make the image ``request.delta`` rows away the current one (clamped to the visible rows)."""
        rows = self.model.rowCount()
        if rows == 0:
            return
        cur = self.grid.currentIndex().row()
        row = min(max(0, (cur if cur >= 0 else 0) + request.delta), rows - 1)
        if row != cur:
            self.grid.setCurrentIndex(self.model.index(row, 0))

    @Slot()
    def _on_filters_changed(self) -> None:
        label = self.class_box.currentData()
        self._apply_filter(SampleFilter(label, self.split_box.currentData()))
        if label is None:
            self.report_panel.clear_class_pick()

    @Slot(object)
    def _on_report_panel_class_pick_requested(self, pick: ClassPick) -> None:
        self.set_filter(SampleFilter(None if pick.label < 0 else pick.label, self.split_box.currentData()))

    @Slot(QItemSelection, QItemSelection)
    def _on_grid_selection_changed(self, selected: QItemSelection, _deselected: QItemSelection) -> None:
        idx = selected.indexes()
        if not idx:
            return
        sample = self.model.data(idx[0], SampleRole)
        self.preview.show_sample(sample, self.model.class_name(sample.label))
        self.selection_changed.emit(SelectionState((sample,), self.root))

    def _update_count(self) -> None:
        shown, total = self.model.rowCount(), self.model.total
        self.count_label.setText(f"{shown:,} of {total:,}" if shown != total else f"{total:,} images")

    def _set_filters_enabled(self, on: bool) -> None:
        self.class_box.setEnabled(on)
        self.split_box.setEnabled(on)

    def shutdown(self) -> None:
        """Stop the scan and the thumbnail threads (called when the window closes)."""
        self.cancel_scan()
        self.loader.close()
