"""Past runs in a folder (:func:`engine.runs.list_runs`) with their metrics; each can be opened."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QPushButton, QTableWidget, QVBoxLayout,
                               QWidget)
from superqt import QElidingLabel

from engine.errors import EngineError
from engine.runs import RunInfo, list_runs

from ..common.widgets import table_item

log = logging.getLogger(__name__)

COLUMNS = ["Run", "Model", "Method", "Epoch", "Top-1", "Img/s", "Updated"]


class RunsPanel(QWidget):
    """A table of the runs in one folder. ``run_open_requested`` carries the chosen run's RunInfo."""

    run_open_requested = Signal(object)  # RunInfo

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder = ""
        self.runs: list[RunInfo] = []
        self.title = QElidingLabel("Past runs", self)  # a long folder is elided in the middle (full in the tooltip)
        self.title.setElideMode(Qt.TextElideMode.ElideMiddle)
        self.title.setObjectName("sectionTitle")
        self.open_button = QPushButton("Open Run", self)
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self._on_open_button_clicked)
        refresh = QPushButton("Refresh", self)
        refresh.clicked.connect(self.refresh)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in range(1, len(COLUMNS)):
            hh.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._on_table_item_selection_changed)
        self.table.cellDoubleClicked.connect(self._on_table_cell_double_clicked)
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.title, 1)
        bar.addWidget(refresh)
        bar.addWidget(self.open_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(bar)
        lay.addWidget(self.table)

    def set_folder(self, folder: str) -> None:
        """List the runs in ``folder`` (no-op when it is already shown)."""
        if folder != self.folder:
            self.folder = folder
            self.refresh()

    @Slot()
    def refresh(self) -> None:
        """Re-read the folder (a few small JSON files: cheap enough for the GUI thread)."""
        folder = Path(self.folder).expanduser() if self.folder else None
        self.runs = list_runs(folder) if folder is not None and folder.is_dir() else []
        self.title.setText(f"Past runs in {self.folder}" if self.folder else "Past runs")
        self.title.setToolTip(str(self.folder or ""))
        self.table.setRowCount(len(self.runs))
        for row, r in enumerate(self.runs):
            top1 = r.metrics.get("test_top1")
            speed = r.metrics.get("images_per_s")
            name = table_item(Path(r.path).name)
            name.setToolTip(r.path)
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, table_item(r.model))
            self.table.setItem(row, 2, table_item(r.method))
            self.table.setItem(row, 3, table_item(f"{r.epoch}/{r.epochs}", True))
            self.table.setItem(row, 4, table_item(f"{top1 * 100:.1f}%" if isinstance(top1, (int, float)) else "–",
                                                  True))
            self.table.setItem(row, 5, table_item(f"{speed:.1f}" if isinstance(speed, (int, float)) else "–", True))
            self.table.setItem(row, 6, table_item(r.updated.replace("T", " ")))
        self.open_button.setEnabled(False)

    def row_of(self, path: str) -> int:
        """The table row of the run at ``path`` (-1 if it is not listed)."""
        target = str(Path(path).expanduser().resolve())
        for i, r in enumerate(self.runs):
            if str(Path(r.path).resolve()) == target:
                return i
        return -1

    def open_row(self, row: int) -> None:
        """Ask to open the run in ``row``."""
        if not 0 <= row < len(self.runs):
            return
        try:
            ref = RunInfo.read(self.runs[row].path)
        except EngineError as exc:
            log.error("%s", exc)
            return
        self.run_open_requested.emit(ref)

    @Slot()
    def _on_table_item_selection_changed(self) -> None:
        self.open_button.setEnabled(bool(self.table.selectedIndexes()))

    @Slot()
    def _on_open_button_clicked(self) -> None:
        rows = {i.row() for i in self.table.selectedIndexes()}
        if rows:
            self.open_row(min(rows))

    @Slot(int, int)
    def _on_table_cell_double_clicked(self, row: int, _col: int) -> None:
        self.open_row(row)
