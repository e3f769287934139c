"""The widgets of one separating part (for a ``parts`` run's Compare rows, :mod:`app.compare.rows`): its colour
swatch (the shared part palette, as in Explore's part map), its separation as a bar with the figure, its strongest
crops from species A beside those from species B (:class:`PartRowWidget`), and the selected part's crops again,
larger (:class:`SelectedPart`)."""

from __future__ import annotations

import html

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from engine.fieldmarks.onbird import PartPlace

from ..common.pixmaps import part_colour, to_pixmap
from .separation import PartCrop, PartRow
from .state import place_tip, share_text, species

THUMB = 64  # crops in the rows
NAME_WIDTH = 130
BAR_WIDTH = 170
SHARE_WIDTH = 64
GAP = 18  # between the A and the B crops
FULL_BAR = 2.0  # a separation of 2 (two standard deviations) fills the bar; a larger one widens the scale


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
    """One ranked part: key, swatch, name, bar, on-bird share, A crops | B crops. Clicking selects it. The view
    builds it once per pair and moves it (:meth:`set_index`, :meth:`set_place`) when the grouping changes."""

    clicked = Signal(int)  # the row

    def __init__(self, index: int, row: PartRow, scale: float, slots: int, parent: QWidget | None = None,
                 place: PartPlace | None = None, shares: bool = False) -> None:
        super().__init__(parent)
        self.index, self.row, self.selected, self.place = index, row, False, place
        self.colour = part_colour(row.part)
        self.setObjectName("separationRow")
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 3, 8, 3)
        lay.setSpacing(8)
        self.key = QLabel(self)
        self.key.setFixedWidth(12)
        self.name = QLabel(self)
        self.name.setFixedWidth(NAME_WIDTH)
        self.name.setWordWrap(True)
        self.set_label(row.label)
        self.bar = SeparationBar(row.separation, scale, self.colour, self)
        self.share = QLabel(self)  # the on-bird share (shown when the run's are known)
        self.share.setFixedWidth(SHARE_WIDTH)
        self.share.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.strip_a, self.labels_a = crop_strip(row.crops_a, slots, THUMB, self)
        self.strip_b, self.labels_b = crop_strip(row.crops_b, slots, THUMB, self)
        lay.addWidget(self.key)
        lay.addWidget(Swatch(self.colour, parent=self))
        lay.addWidget(self.name)
        lay.addWidget(self.bar)
        lay.addWidget(self.share)
        lay.addWidget(self.strip_a)
        lay.addSpacing(GAP)
        lay.addWidget(self.strip_b)
        lay.addStretch(1)
        self.set_index(index)
        self.set_place(place, shares)

    def set_index(self, index: int) -> None:
        """The row's place in the list (its key, 1-9)."""
        self.index = index
        self.key.setText(str(index + 1) if index < 9 else "")
        self.key.setToolTip(f"Press {index + 1} to select this part" if index < 9 else "")

    def set_place(self, place: PartPlace | None, shown: bool) -> None:
        """The part's on-bird share (``shown``: the run's shares are known, so the column is there)."""
        self.place = place
        self.share.setText(share_text(place))
        self.share.setToolTip(place_tip(place))
        self.share.setVisible(shown)

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
        self.row: PartRow | None = None

    def show_row(self, row: PartRow | None, names: tuple[str, str], side: int,
                 place: PartPlace | None = None) -> None:
        while self.body_lay.count():
            w = self.body_lay.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.labels = []
        self.row = row
        if row is None:
            self.title.setText("")
            return
        self.set_title(row, names, place)
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

    def set_title(self, row: PartRow, names: tuple[str, str], place: PartPlace | None) -> None:
        """The selected part's figures (its crops stay)."""
        colour = part_colour(row.part).name()
        self.title.setText(
            f"<span style='color:{colour}'>■</span> <b>{html.escape(row.label)}</b> · separation "
            f"{row.separation:.2f} · mean margin {row.mean_a:+.2f} on {html.escape(species(names[0]))}, "
            f"{row.mean_b:+.2f} on {html.escape(species(names[1]))} (part score A − B)"
            + (f" · {html.escape(place_tip(place))}" if place is not None else ""))
