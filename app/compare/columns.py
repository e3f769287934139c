"""The per-class view of Compare (MC-Loss, TASN and CE runs): one column per class, and per map of that class (its
ξ channels, or its attention / Grad-CAM map) a caption and a row of its strongest crops over the class's test
images. These maps belong to one class each, so the two columns are read side by side rather than ranked.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from ..common.pixmaps import to_pixmap
from .compute import ClassParts

THUMB = 80


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


class ColumnsView(QScrollArea):
    """The two classes' columns side by side, scrolling."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.columns = (ClassColumn(self), ClassColumn(self))
        holder = QWidget(self)
        lay = QHBoxLayout(holder)
        for col in self.columns:
            lay.addWidget(col, 1)
        self.setWidgetResizable(True)
        self.setWidget(holder)
