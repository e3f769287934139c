"""The Explore page's widget tree, built in the manner of Qt Designer's ``setupUi``: :func:`build` creates the
widgets as public attributes of the page and lays them out; the page connects them and holds the behaviour
(:mod:`app.explore.page`)."""

from __future__ import annotations

from typing import Any, Iterable

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QKeySequence, QMouseEvent, QShortcut
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QListWidget, QPushButton, QScrollArea,
                               QSlider, QSplitter, QVBoxLayout, QWidget)
from superqt import QElidingLabel

from ..state import StepRequest
from .compute import THUMB
from .evaluation import EvaluationPanel
from .image_view import COLORMAPS, MapImageView
from .partmap import PartLegend
from .resampled import ResampledPanel

CROP_MIN, CROP_MAX = 160, 300  # display sides: small crops are enlarged (pixels kept sharp), large ones fitted
NEEDS_PARTS = "All parts needs a `parts` run"


class CropLabel(QLabel):
    """The part's crop; a double-click asks to name the part (``double_clicked``)."""

    double_clicked = Signal()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        self.double_clicked.emit()
        super().mouseDoubleClickEvent(event)


class NoteLabel(QElidingLabel):
    """A one-line note shown whole when there is room and elided in a narrow window (superqt's label asks for the
    width of the text it last showed, so it would stay elided once it was)."""

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(self.fontMetrics().horizontalAdvance(self.text()) + 4, super().sizeHint().height())


def section_title(text: str, parent: QWidget) -> QLabel:
    t = QLabel(text, parent)
    t.setObjectName("sectionTitle")
    return t


PLACES_TIP = ("The on-bird shares: a pass over the training photos that finds the parts lying off the bird "
              "(background / habitat)")


def build_bar(page: QWidget) -> QHBoxLayout:
    """The row of choices above the maps: view, method, class, colours, opacity, keypoints, the status line."""
    page.view_box = QComboBox(page)
    page.view_box.setObjectName("viewBox")
    page.view_box.setToolTip("All parts: a shared-parts run's parts as one coloured map; One map: a single map")
    page.parts_note = NoteLabel(NEEDS_PARTS, page)
    page.parts_note.setObjectName("partsNote")
    page.parts_note.setToolTip("Train with the parts method (shared parts) to see all parts at once; MC-Loss "
                               "channels and TASN attention belong to one class each")
    page.parts_note.setVisible(False)
    page.method_box = QComboBox(page)
    for box, short in ((page.view_box, "All parts"), (page.method_box, "Grad-CAM")):  # filled after the window is
        box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)  # shown: as wide as the longest label
        box.setMinimumWidth(page.fontMetrics().horizontalAdvance(short) + 36)  # when there is room, yet a 1024 px
        # window still fits the longest ("Attention blocks (CBAM / residual)")
    page.class_box = QComboBox(page)
    page.class_box.setMinimumContentsLength(18)
    page.class_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    page.cmap_box = QComboBox(page)
    page.cmap_box.addItems(list(COLORMAPS))
    page.opacity = QSlider(Qt.Orientation.Horizontal, page)
    page.opacity.setRange(0, 100)
    page.opacity.setValue(65)
    page.opacity.setFixedWidth(120)
    page.keypoints_box = QCheckBox("Keypoints", page)
    page.keypoints_box.setToolTip("Show the data set's ground-truth part keypoints")
    page.status = QElidingLabel("", page)  # long messages are elided (full text in the tooltip), so the
    page.status.setObjectName("exploreStatus")  # window can be narrower than the longest one
    page.status.setElideMode(Qt.TextElideMode.ElideRight)
    bar = QHBoxLayout()
    bar.setContentsMargins(6, 6, 6, 0)
    for text, w in (("View", page.view_box), ("Method", page.method_box), ("Class", page.class_box),
                    ("Colours", page.cmap_box), ("Opacity", page.opacity)):
        bar.addWidget(QLabel(text, page))
        bar.addWidget(w)
        if w is page.view_box:
            bar.addWidget(page.parts_note)
    bar.addWidget(page.keypoints_box)
    bar.addWidget(page.status, 1)
    return bar


def build_side(page: QWidget) -> QScrollArea:
    """The side panel: predictions, the parts' legend (shared-parts runs), the part's crop, the evaluation."""
    page.predictions = QListWidget(page)
    page.predictions.setObjectName("predictions")
    page.predictions.setFixedHeight(5 * 20 + 8)
    page.predictions.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    page.predictions.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    page.legend = PartLegend(page)
    page.places_status = QLabel("", page)  # under the legend it marks: the on-bird shares' pass has a line of its
    page.places_status.setObjectName("explorePlaces")  # own, so it never overwrites what the user just did
    page.places_status.setWordWrap(True)
    page.places_status.setToolTip(PLACES_TIP)
    page.places_status.setVisible(False)
    page.propose_button = QPushButton("Propose names…", page)
    page.propose_button.setToolTip("Name the parts after the CUB keypoints nearest them (a CUB-layout folder)")
    page.crop_label = CropLabel(page)
    page.crop_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    page.crop_label.setMinimumSize(CROP_MIN, CROP_MIN)
    page.crop_caption = QLabel("", page)
    page.crop_caption.setWordWrap(True)
    page.evaluation = EvaluationPanel(page)
    side = QWidget(page)
    sl = QVBoxLayout(side)
    sl.setContentsMargins(4, 0, 6, 0)
    page.parts_box = QWidget(side)  # the legend: shared-parts runs only
    pl = QVBoxLayout(page.parts_box)
    pl.setContentsMargins(0, 0, 0, 0)
    pl.addWidget(section_title("Parts", page.parts_box))
    pl.addWidget(page.legend)
    pl.addWidget(page.places_status)
    pl.addWidget(page.propose_button, 0, Qt.AlignmentFlag.AlignLeft)
    page.parts_box.setVisible(False)
    for title, w in (("Predictions", page.predictions), (None, page.parts_box), ("Part crop", page.crop_label)):
        if title:
            sl.addWidget(section_title(title, side))
        sl.addWidget(w)
    sl.addWidget(page.crop_caption)
    sl.addWidget(page.evaluation)
    sl.addStretch(1)
    side_scroll = QScrollArea(page)
    side_scroll.setWidgetResizable(True)
    side_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    side_scroll.setWidget(side)
    side_scroll.setMinimumWidth(280)
    return side_scroll


def build_maps(page: QWidget) -> QSplitter:
    """The strip of the class's maps, the photo with its overlay (``page.image_view``, made first), and its
    resampled views, one above the other."""
    page.strip = QListWidget(page)
    page.strip.setObjectName("mapStrip")
    page.strip.setViewMode(QListWidget.ViewMode.IconMode)
    page.strip.setFlow(QListWidget.Flow.LeftToRight)
    page.strip.setWrapping(False)
    page.strip.setMovement(QListWidget.Movement.Static)
    page.strip.setIconSize(QSize(THUMB, THUMB))
    page.strip.setFixedHeight(THUMB + 46)
    page.strip.setToolTip("The maps of the class: click one to overlay it")
    page.resampled = ResampledPanel(page)
    left = QSplitter(Qt.Orientation.Vertical, page)
    left.addWidget(page.strip)
    left.addWidget(page.image_view)
    left.addWidget(page.resampled)
    left.setCollapsible(0, False)
    left.setStretchFactor(1, 3)
    left.setStretchFactor(2, 2)
    left.setSizes([THUMB + 46, 420, 280])
    return left


def build(page: QWidget) -> None:
    """Create the page's widgets (the bar, the maps and the side panel) and lay them out."""
    bar = build_bar(page)
    page.image_view = MapImageView(page)
    page.image_view.set_opacity(page.opacity.value() / 100)
    side = build_side(page)
    left = build_maps(page)
    main = QSplitter(Qt.Orientation.Horizontal, page)
    main.addWidget(left)
    main.addWidget(side)
    main.setStretchFactor(0, 1)
    main.setSizes([1100, 330])
    lay = QVBoxLayout(page)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addLayout(bar)
    lay.addWidget(main, 1)


def add_keys(page: QWidget) -> None:
    """The page's keys: arrows step through the library's images (``step_requested``), 1-9 pick that part (map)
    and 0 / Esc show all parts again (``select_part``)."""
    within = Qt.ShortcutContext.WidgetWithChildrenShortcut
    for key, delta in ((Qt.Key.Key_Left, -1), (Qt.Key.Key_Up, -1), (Qt.Key.Key_Right, 1), (Qt.Key.Key_Down, 1)):
        sc = QShortcut(QKeySequence(key), page, context=within)
        sc.activated.connect(lambda d=delta: page.step_requested.emit(StepRequest(d)))
    for n in range(10):
        sc = QShortcut(QKeySequence(str(n)), page, context=within)
        sc.activated.connect(lambda n=n: page.select_part(n - 1 if n else None))
    sc = QShortcut(QKeySequence(Qt.Key.Key_Escape), page, context=within)
    sc.activated.connect(lambda: page.select_part(None))


def refill(box: QComboBox, items: Iterable[tuple[str, Any]], select: Any = None) -> None:
    """Replace ``box``'s items ((label, data) pairs) and pick the one whose data is ``select`` (else the first),
    without the box's signals."""
    box.blockSignals(True)
    box.clear()
    for label, data in items:
        box.addItem(label, data)
    box.setCurrentIndex(max(0, box.findData(select)) if select is not None else 0)
    box.blockSignals(False)


def select_quietly(box: QComboBox, data: Any) -> None:
    """Pick ``box``'s item whose data is ``data`` (else the first), without the box's signals."""
    box.blockSignals(True)
    box.setCurrentIndex(max(0, box.findData(data)))
    box.blockSignals(False)
