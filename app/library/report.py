"""The data report: layout, split, classes with counts, and every skipped file with its reason."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QSplitter, QTableWidget, QVBoxLayout, QWidget

from engine.data import DataReport
from engine.data.scan import LAYOUTS

from ..common.widgets import table_item

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassPick:
    """A class the user picked in the counts table (label -1: all classes)."""

    label: int


def _table(headers: list[str], parent: QWidget) -> QTableWidget:
    t = QTableWidget(0, len(headers), parent)
    t.setHorizontalHeaderLabels(headers)
    t.verticalHeader().setVisible(False)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    t.setAlternatingRowColors(True)
    t.setWordWrap(False)
    t.verticalHeader().setDefaultSectionSize(22)
    return t


class ReportPanel(QWidget):
    """Summary text, a classes table (click a class to filter the grid) and a skipped-files table."""

    class_pick_requested = Signal(object)  # ClassPick

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summary = QLabel("No folder open.", self)
        self.summary.setWordWrap(True)
        self.summary.setObjectName("reportSummary")
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.classes = _table(["Class", "Train", "Test", "Total"], self)
        hh = self.classes.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in (1, 2, 3):
            hh.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.classes.itemSelectionChanged.connect(self._on_classes_item_selection_changed)
        self.skipped_title = QLabel("Skipped files", self)
        self.skipped_title.setObjectName("sectionTitle")
        self.skipped = _table(["File", "Reason", "Detail"], self)
        sh = self.skipped.horizontalHeader()
        sh.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        sh.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        sh.setStretchLastSection(True)
        self.skipped.setColumnWidth(0, 150)

        classes_box = QWidget(self)
        cl = QVBoxLayout(classes_box)
        cl.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Classes", classes_box)
        title.setObjectName("sectionTitle")
        cl.addWidget(title)
        cl.addWidget(self.classes)
        skipped_box = QWidget(self)
        sl = QVBoxLayout(skipped_box)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(self.skipped_title)
        sl.addWidget(self.skipped)
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(classes_box)
        split.addWidget(skipped_box)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        self.splitter = split
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.summary)
        lay.addWidget(split, 1)

    def set_report(self, report: DataReport | None) -> None:
        """Show ``report`` (None clears the panel)."""
        self.classes.blockSignals(True)
        self.classes.setRowCount(0)
        self.skipped.setRowCount(0)
        self.classes.blockSignals(False)
        if report is None:
            self.summary.setText("No folder open.")
            self.skipped_title.setText("Skipped files")
            return
        n_train = sum(1 for s in report.samples if s.split == "train")
        n_test = sum(1 for s in report.samples if s.split == "test")
        lines = [f"<b>{os.path.basename(report.root.rstrip('/')) or report.root}</b>",
                 f"Layout: {report.layout}"]
        if report.layout == "flat":
            lines.append(f"{len(report.samples)} images, no classes")
        else:
            lines.append(f"{len(report.classes)} classes · {len(report.samples)} images "
                         f"({n_train} train, {n_test} test)")
            lines.append(f"Split: {report.split_source}")
        if report.part_names:
            lines.append(f"Part keypoints: {len(report.part_names)}")
        lines += [f"<i>Note: {n}</i>" for n in report.notes]
        self.summary.setText("<br>".join(lines))
        self.summary.setToolTip(f"{report.root}\n{report.layout}: {LAYOUTS.get(report.layout, '')}")
        self.classes.setRowCount(len(report.classes))
        for row, (name, c) in enumerate(report.counts().items()):
            name_item = table_item(name)
            name_item.setToolTip(name)
            self.classes.setItem(row, 0, name_item)
            self.classes.setItem(row, 1, table_item(c["train"], True))
            self.classes.setItem(row, 2, table_item(c["test"], True))
            self.classes.setItem(row, 3, table_item(c["train"] + c["test"], True))
        self.skipped_title.setText(f"Skipped files ({len(report.skipped)})" if report.skipped
                                   else "Skipped files (none)")
        total = max(sum(self.splitter.sizes()), 400)  # not laid out yet while hidden: QSplitter scales weights
        low = 90 if not report.skipped else min(total // 2, 60 + 22 * len(report.skipped))
        self.splitter.setSizes([total - low, low])  # the classes get the room the skipped files do not need
        self.skipped.setRowCount(len(report.skipped))
        root = report.root.rstrip("/") + "/"
        for row, sk in enumerate(report.skipped):
            shown = sk.path[len(root):] if sk.path.startswith(root) else sk.path
            item = table_item(shown)
            item.setToolTip(sk.path)
            self.skipped.setItem(row, 0, item)
            self.skipped.setItem(row, 1, table_item(sk.reason))
            detail = table_item(sk.detail)
            detail.setToolTip(sk.detail)
            self.skipped.setItem(row, 2, detail)

    def clear_class_pick(self) -> None:
        self.classes.blockSignals(True)
        self.classes.clearSelection()
        self.classes.blockSignals(False)

    @Slot()
    def _on_classes_item_selection_changed(self) -> None:
        rows = {i.row() for i in self.classes.selectedIndexes()}
        self.class_pick_requested.emit(ClassPick(min(rows) if rows else -1))
