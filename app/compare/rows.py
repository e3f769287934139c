"""The separating parts of a pair, drawn as rows (for a ``parts`` run): per part its colour swatch (the shared
part palette, as in Explore's part map), its name, its separation as a bar with the figure, and its strongest
crops from species A beside those from species B; the selected row's crops again, larger, below the rows.

A birder reads down the bars: the long ones at the top are where the two species differ (the crown), the short
ones at the bottom where they look alike (the tail).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from ..common.pixmaps import part_colour, to_pixmap
from .separation import CROP_SIZE, PairSeparation, PartCrop, PartRow

THUMB = 64  # crops in the rows
NAME_WIDTH = 130
BAR_WIDTH = 170
GAP = 18  # between the A and the B crops
FULL_BAR = 2.0  # a separation of 2 (two standard deviations) fills the bar; a larger one widens the scale


def species(name: str) -> str:
    """A class folder name as a birder writes it (``Fish_Crow`` → ``Fish Crow``)."""
    return name.replace("_", " ")


@dataclass(frozen=True)
class RowSelection:
    """The selected row (0-based; -1: none) and its part."""

    row: int
    part: int


class Swatch(QWidget):
    """A small square of the part's colour."""

    def __init__(self, colour: QColor, side: int = 14, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.colour = colour
        self.setFixedSize(side, side)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(self.palette().color(self.foregroundRole()))
        p.setBrush(self.colour)
        p.drawRoundedRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), 3, 3)


class SeparationBar(QWidget):
    """The separation as a bar (its length relative to ``scale``, the pair's largest) with the figure beside."""

    def __init__(self, value: float, scale: float, colour: QColor, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.value, self.scale, self.colour = value, max(scale, 1e-9), colour
        self.setFixedSize(BAR_WIDTH, 20)
        self.setToolTip("Separation: how far apart this part's scores put the two species' test images "
                        "(Cohen's d of the score margin A − B)")

    def fraction(self) -> float:
        return min(max(self.value / self.scale, 0.0), 1.0)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        text_w = 44
        track = QRectF(0, 5, self.width() - text_w - 4, 10)
        base = self.palette().color(self.foregroundRole())
        shade = QColor(base)
        shade.setAlpha(40)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(shade)
        p.drawRoundedRect(track, 3, 3)
        fill = QRectF(track)
        fill.setWidth(track.width() * self.fraction())
        if fill.width() > 0:
            edge = QColor(base)
            edge.setAlpha(110)  # a dark part colour (indigo) stays visible on the dark theme
            p.setPen(edge)
            p.setBrush(self.colour)
            p.drawRoundedRect(fill.adjusted(0.5, 0.5, -0.5, -0.5), 3, 3)
        p.setPen(base)
        p.drawText(QRectF(self.width() - text_w, 0, text_w, self.height()),
                   Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{self.value:.2f}")


def crop_label(c: PartCrop, side: int, parent: QWidget) -> QLabel:
    lab = QLabel(parent)
    lab.setFixedSize(side, side)
    lab.setPixmap(to_pixmap(c.image).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                            Qt.TransformationMode.SmoothTransformation))
    lab.setToolTip(f"{c.path}\nmargin {c.margin:+.2f} (part score A − B)"
                   + ("" if c.present else "\nthe part is not active on this image"))
    return lab


def crop_strip(crops: list[PartCrop], slots: int, side: int, parent: QWidget) -> tuple[QWidget, list[QLabel]]:
    """``crops`` side by side in ``slots`` places of ``side`` px (a fixed width, so the rows line up)."""
    w = QWidget(parent)
    lay = QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(3)
    labels = [crop_label(c, side, w) for c in crops[:slots]]
    for lab in labels:
        lay.addWidget(lab)
    lay.addStretch(1)
    w.setFixedWidth(slots * (side + 3))
    return w, labels


class PartRowWidget(QFrame):
    """One ranked part: key, swatch, name, bar, A crops | B crops. Clicking selects it."""

    clicked = Signal(int)  # the row

    def __init__(self, index: int, row: PartRow, scale: float, slots: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.index, self.row, self.selected = index, row, False
        self.colour = part_colour(row.part)
        self.setObjectName("separationRow")
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 3, 8, 3)
        lay.setSpacing(8)
        key = QLabel(str(index + 1) if index < 9 else "", self)
        key.setFixedWidth(12)
        key.setToolTip(f"Press {index + 1} to select this part" if index < 9 else "")
        self.name = QLabel(self)
        self.name.setFixedWidth(NAME_WIDTH)
        self.name.setWordWrap(True)
        self.set_label(row.label)
        self.bar = SeparationBar(row.separation, scale, self.colour, self)
        self.strip_a, self.labels_a = crop_strip(row.crops_a, slots, THUMB, self)
        self.strip_b, self.labels_b = crop_strip(row.crops_b, slots, THUMB, self)
        lay.addWidget(key)
        lay.addWidget(Swatch(self.colour, parent=self))
        lay.addWidget(self.name)
        lay.addWidget(self.bar)
        lay.addWidget(self.strip_a)
        lay.addSpacing(GAP)
        lay.addWidget(self.strip_b)
        lay.addStretch(1)

    def set_label(self, label: str) -> None:
        self.row.label = label
        self.name.setText(f"<b>{html.escape(label)}</b>")
        self.name.setToolTip(f"part {self.row.part + 1}")

    def set_selected(self, on: bool) -> None:
        self.selected = on
        self.update()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit(self.index)
        super().mousePressEvent(event)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        if self.selected:
            p = QPainter(self)
            p.setRenderHint(QPainter.RenderHint.Antialiasing)
            fill = QColor(self.palette().color(self.palette().ColorRole.Highlight))
            fill.setAlpha(50)
            p.setPen(self.colour)
            p.setBrush(fill)
            p.drawRoundedRect(QRectF(self.rect()).adjusted(1, 1, -1, -1), 5, 5)
        super().paintEvent(event)


class SelectedPart(QFrame):
    """The selected part's crops at full crop size: A's on the left, B's on the right."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("selectedPart")
        self.lay = QVBoxLayout(self)
        self.lay.setContentsMargins(8, 4, 8, 4)
        self.title = QLabel("", self)
        self.title.setWordWrap(True)
        self.lay.addWidget(self.title)
        self.body = QWidget(self)
        self.body_lay = QHBoxLayout(self.body)
        self.body_lay.setContentsMargins(0, 0, 0, 0)
        self.lay.addWidget(self.body)
        self.labels: list[QLabel] = []

    def show_row(self, row: PartRow | None, names: tuple[str, str], side: int) -> None:
        while self.body_lay.count():
            w = self.body_lay.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.labels = []
        if row is None:
            self.title.setText("")
            return
        colour = part_colour(row.part).name()
        self.title.setText(
            f"<span style='color:{colour}'>■</span> <b>{html.escape(row.label)}</b> · separation "
            f"{row.separation:.2f} · mean margin {row.mean_a:+.2f} on {html.escape(species(names[0]))}, "
            f"{row.mean_b:+.2f} on {html.escape(species(names[1]))} (part score A − B)")
        for name, crops in ((names[0], row.crops_a), (names[1], row.crops_b)):
            col = QWidget(self.body)
            cl = QVBoxLayout(col)
            cl.setContentsMargins(0, 0, 0, 0)
            cap = QLabel(html.escape(species(name)), col)
            cap.setObjectName("sectionTitle")
            cl.addWidget(cap)
            strip, labels = crop_strip(crops, max(1, len(crops)), side, col)
            cl.addWidget(strip)
            self.labels.extend(labels)
            self.body_lay.addWidget(col)
            self.body_lay.addSpacing(GAP)
        self.body_lay.addStretch(1)


class SeparationView(QWidget):
    """The ranked rows of a pair and the selected part, larger. ``row_selected`` carries a RowSelection."""

    row_selected = Signal(object)  # RowSelection

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.separation: PairSeparation | None = None
        self.names: tuple[str, str] = ("", "")
        self.rows: list[PartRowWidget] = []
        self.current = -1
        self.title = QLabel("", self)
        self.title.setObjectName("sectionTitle")
        self.title.setWordWrap(True)
        self.header = QWidget(self)
        self.header_lay = QHBoxLayout(self.header)
        self.header_lay.setContentsMargins(8, 0, 8, 0)
        self.header_lay.setSpacing(8)
        self.list = QWidget(self)
        self.list_lay = QVBoxLayout(self.list)
        self.list_lay.setContentsMargins(0, 0, 0, 0)
        self.list_lay.setSpacing(2)
        self.scroll = QScrollArea(self)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setWidget(self.list)
        self.detail = SelectedPart(self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 4)
        lay.addWidget(self.title)
        lay.addWidget(self.header)
        lay.addWidget(self.scroll, 1)
        lay.addWidget(self.detail)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(1100, 700)

    def show_pair(self, separation: PairSeparation | None, names: tuple[str, str], text: str = "") -> None:
        """Rows for ``separation`` (None: ``text`` instead, e.g. "computing…")."""
        self.separation, self.names = separation, names
        for w in self.rows:
            w.deleteLater()
        self.rows = []
        self.current = -1
        while self.header_lay.count():
            w = self.header_lay.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        if separation is None:
            self.title.setText(text)
            self.header.setVisible(False)
            self.detail.show_row(None, names, 0)
            return
        a, b = (html.escape(species(n)) for n in names)
        more = f" (top {len(separation.rows)} of {separation.parts})" if len(separation.rows) < separation.parts else ""
        self.title.setText(f"Parts that tell {a} from {b}, best first{more}: separation over "
                           f"{separation.images_a} + {separation.images_b} test images")
        slots = separation.crops
        for text_, width in (("", 12 + 8 + 14), ("Part", NAME_WIDTH), ("Separation", BAR_WIDTH),
                             (a, slots * (THUMB + 3)), (b, slots * (THUMB + 3))):
            lab = QLabel(text_, self.header)
            lab.setFixedWidth(width)
            if text_ in (a, b):
                lab.setToolTip(f"the {'strongest' if text_ == a else 'weakest'} margins (part score A − B) "
                               "among this species' test images")
            self.header_lay.addWidget(lab)
            if text_ == a:
                self.header_lay.addSpacing(GAP)
        self.header_lay.addStretch(1)
        self.header.setVisible(True)
        scale = max([FULL_BAR] + [r.separation for r in separation.rows])
        for i, row in enumerate(separation.rows):
            w = PartRowWidget(i, row, scale, slots, self.list)
            w.clicked.connect(self.select)
            self.list_lay.addWidget(w)
            self.rows.append(w)
        self.list_lay.addStretch(1)
        self.select(0 if self.rows else -1)

    def select(self, index: int) -> None:
        """Highlight row ``index`` (0-based) and show its crops larger; out of range: nothing changes."""
        if not -1 <= index < len(self.rows):
            return
        self.current = index
        for i, w in enumerate(self.rows):
            w.set_selected(i == index)
        row = self.rows[index].row if index >= 0 else None
        self.detail.show_row(row, self.names, CROP_SIZE)
        if index >= 0:
            self.scroll.ensureWidgetVisible(self.rows[index])
        self.row_selected.emit(RowSelection(index, row.part if row is not None else -1))

    def relabel(self, labels: dict[int, str]) -> None:
        """Show new part names (``labels``: part → label) without recomputing."""
        for w in self.rows:
            if w.row.part in labels and labels[w.row.part] != w.row.label:
                w.set_label(labels[w.row.part])
        if self.current >= 0:
            self.select(self.current)


__all__ = ["SeparationView", "PartRowWidget", "RowSelection", "species"]
