"""The Compare page's widget tree, built in the manner of Qt Designer's ``setupUi``: :func:`build` creates the
widgets as public attributes of the page and lays them out; the page connects them and holds the behaviour
(:mod:`app.compare.page`)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QProgressBar, QSpinBox, QSplitter,
                               QStackedWidget, QVBoxLayout, QWidget)

from .columns import ColumnsView
from .guide import GuideControl
from .pairs import PairPanel
from .rows import SeparationView
from .state import DEFAULT_CROPS, TOGETHER


def build_bar(page: QWidget) -> QHBoxLayout:
    """The row above the views: the pair's class boxes, the crop count, the grouping toggle, progress, status and
    the field guide."""
    page.a_box = QComboBox(page)
    page.b_box = QComboBox(page)
    for box in (page.a_box, page.b_box):
        box.setMinimumContentsLength(20)
        box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    page.top_n = QSpinBox(page)
    page.top_n.setRange(1, 24)
    page.top_n.setValue(DEFAULT_CROPS["columns"])
    page.top_n.setToolTip("Crops per part channel (the strongest by part score)")
    page.top_n_label = QLabel("Crops per part", page)
    page.progress = QProgressBar(page)
    page.progress.setMaximumWidth(220)
    page.progress.setVisible(False)
    page.status = QLabel("", page)
    page.together_box = QCheckBox(TOGETHER, page)
    page.together_box.setToolTip("Rank every part in one list. Unticked: the parts on the bird first, then the "
                                 "background / habitat parts (their peak seldom on the bird) below them")
    page.together_box.setVisible(False)
    page.guide = GuideControl(page)
    bar = QHBoxLayout()
    bar.setContentsMargins(6, 6, 6, 0)
    for w in (page.a_box, QLabel("vs", page), page.b_box, page.top_n_label, page.top_n, page.together_box,
              page.progress):
        bar.addWidget(w)
    bar.addWidget(page.status, 1)
    bar.addWidget(page.guide)
    return bar


def build(page: QWidget) -> None:
    """Create the page's widgets (the bar, the mode label, the pairs and the two views) and lay them out."""
    bar = build_bar(page)
    page.mode_label = QLabel("", page)
    page.mode_label.setObjectName("promptLabel")
    page.mode_label.setWordWrap(True)
    page.mode_label.setContentsMargins(8, 0, 8, 0)
    left = PairPanel(page)
    page.pairs, page.confusion_status = left.list, left.status
    page.scroll = ColumnsView(page)
    page.columns = page.scroll.columns
    page.separation_view = SeparationView(page)
    page.views = QStackedWidget(page)
    page.views.addWidget(page.scroll)
    page.views.addWidget(page.separation_view)
    split = QSplitter(Qt.Orientation.Horizontal, page)
    split.addWidget(left)
    split.addWidget(page.views)
    split.setStretchFactor(1, 1)
    split.setSizes([300, 1000])
    lay = QVBoxLayout(page)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addLayout(bar)
    lay.addWidget(page.mode_label)
    lay.addWidget(split, 1)
