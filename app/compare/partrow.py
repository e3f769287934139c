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
from .separation import CROP_SIZE, PartCrop, PartRow
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
        self.set_value(value, scale, colour)
        self.setFixedSize(BAR_WIDTH, 20)
        self.setToolTip("Separation: how far apart this part's scores put the two species' test images "
                        "(Cohen's d of the score margin A − B)")

    def set_value(self, value: float, scale: float, colour: QColor) -> None:
        self.value, self.scale, self.colour = value, max(scale, 1e-9), colour
        self.update()

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


def set_crop(lab: QLabel, c: PartCrop, side: int) -> None:
    """Show crop ``c`` in ``lab``, ``side`` px, its path and margin as the tooltip."""
    lab.setPixmap(to_pixmap(c.image).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                            Qt.TransformationMode.SmoothTransformation))
    lab.setToolTip(f"{c.path}\nmargin {c.margin:+.2f} (part score A − B)"
                   + ("" if c.present else "\nthe part is not active on this image"))


class CropStrip(QWidget):
    """Crops side by side in ``slots`` places of ``side`` px (a fixed width, so the rows line up); ``labels``: the
    ones shown. Its labels are kept when it shows other crops (:meth:`show_crops`)."""

    def __init__(self, side: int, parent: QWidget) -> None:
        super().__init__(parent)
        self.side, self.labels, self._all = side, [], []
        self.lay = QHBoxLayout(self)
        self.lay.setContentsMargins(0, 0, 0, 0)
        self.lay.setSpacing(3)
        self.lay.addStretch(1)

    def show_crops(self, crops: list[PartCrop], slots: int) -> None:
        shown = crops[:slots]
        while len(self._all) < len(shown):
            lab = QLabel(self)
            lab.setFixedSize(self.side, self.side)
            self.lay.insertWidget(len(self._all), lab)
            self._all.append(lab)
        for lab, c in zip(self._all, shown):
            set_crop(lab, c, self.side)
            lab.setVisible(True)
        for lab in self._all[len(shown):]:
            lab.setVisible(False)
        self.labels = self._all[:len(shown)]
        self.setFixedWidth(slots * (self.side + 3))


class PartRowWidget(QFrame):
    """One ranked part: key, swatch, name, bar, on-bird share, A crops | B crops. Clicking selects it. The view
    builds it once per pair and moves it (:meth:`set_index`, :meth:`set_place`) when the grouping changes."""

    clicked = Signal(int)  # the row

    def __init__(self, index: int, row: PartRow, scale: float, slots: int, parent: QWidget | None = None,
                 place: PartPlace | None = None, shares: bool = False) -> None:
        super().__init__(parent)
        self.index, self.selected, self.place = index, False, place
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
        self.swatch = Swatch(QColor(), parent=self)
        self.bar = SeparationBar(row.separation, scale, QColor(), self)
        self.share = QLabel(self)  # the on-bird share (shown when the run's are known)
        self.share.setFixedWidth(SHARE_WIDTH)
        self.share.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.strip_a, self.strip_b = CropStrip(THUMB, self), CropStrip(THUMB, self)
        lay.addWidget(self.key)
        lay.addWidget(self.swatch)
        lay.addWidget(self.name)
        lay.addWidget(self.bar)
        lay.addWidget(self.share)
        lay.addWidget(self.strip_a)
        lay.addSpacing(GAP)
        lay.addWidget(self.strip_b)
        lay.addStretch(1)
        self.set_row(row, scale, slots)
        self.set_index(index)
        self.set_place(place, shares)

    def set_row(self, row: PartRow, scale: float, slots: int) -> None:
        """Show another part (the view reuses its rows from pair to pair: building them anew stalled the window)."""
        self.row, self.colour = row, part_colour(row.part)
        self.swatch.colour = self.colour
        self.swatch.update()
        self.bar.set_value(row.separation, scale, self.colour)
        self.set_label(row.label)
        self.strip_a.show_crops(row.crops_a, slots)
        self.strip_b.show_crops(row.crops_b, slots)
        self.set_selected(False)

    @property
    def labels_a(self) -> list[QLabel]:
        return self.strip_a.labels

    @property
    def labels_b(self) -> list[QLabel]:
        return self.strip_b.labels

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
        body_lay = QHBoxLayout(self.body)
        body_lay.setContentsMargins(0, 0, 0, 0)
        self.lay.addWidget(self.body)
        self.captions: list[QLabel] = []
        self.strips: list[CropStrip] = []
        for _ in range(2):  # A's crops, B's crops: built once, refilled for each selected part
            col = QWidget(self.body)
            cl = QVBoxLayout(col)
            cl.setContentsMargins(0, 0, 0, 0)
            cap = QLabel("", col)
            cap.setObjectName("sectionTitle")
            cl.addWidget(cap)
            strip = CropStrip(CROP_SIZE, col)
            cl.addWidget(strip)
            body_lay.addWidget(col)
            body_lay.addSpacing(GAP)
            self.captions.append(cap)
            self.strips.append(strip)
        body_lay.addStretch(1)
        self.body.setVisible(False)
        self.labels: list[QLabel] = []
        self.row: PartRow | None = None

    def show_row(self, row: PartRow | None, names: tuple[str, str], place: PartPlace | None = None) -> None:
        """Part ``row``'s crops at full crop size under its figures (None: nothing)."""
        self.row = row
        self.body.setVisible(row is not None)
        if row is None:
            self.labels = []
            self.title.setText("")
            return
        self.set_title(row, names, place)
        self.labels = []
        for name, crops, cap, strip in zip(names, (row.crops_a, row.crops_b), self.captions, self.strips):
            cap.setText(html.escape(species(name)))
            strip.show_crops(crops, max(1, len(crops)))
            self.labels.extend(strip.labels)

    def set_title(self, row: PartRow, names: tuple[str, str], place: PartPlace | None) -> None:
        """The selected part's figures (its crops stay)."""
        colour = part_colour(row.part).name()
        self.title.setText(
            f"<span style='color:{colour}'>■</span> <b>{html.escape(row.label)}</b> · separation "
            f"{row.separation:.2f} · mean margin {row.mean_a:+.2f} on {html.escape(species(names[0]))}, "
            f"{row.mean_b:+.2f} on {html.escape(species(names[1]))} (part score A − B)"
            + (f" · {html.escape(place_tip(place))}" if place is not None else ""))
