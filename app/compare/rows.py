"""The separating parts of a pair, drawn as rows (for a ``parts`` run): per part its colour swatch (the shared
part palette, as in Explore's part map), its name, its separation as a bar with the figure, its on-bird share
(when the run's are known), and its strongest crops from species A beside those from species B; the selected
row's crops again, larger, below the rows.

By default the parts on the bird are ranked first and the background / habitat parts (:mod:`engine.fieldmarks.
onbird`: their peak seldom on the bird) follow under their own heading, ranked the same way; "Rank all parts
together" shows one ranking. A birder reads down the bars: the long ones at the top are where the two species
differ (the crown), the short ones at the bottom where they look alike (the tail).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Sequence

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from engine.fieldmarks.onbird import ON_BIRD_MIN, PartPlace, split_by_place

from ..common.pixmaps import part_colour, to_pixmap
from .separation import CROP_SIZE, MAX_ROWS, PairSeparation, PartCrop, PartRow

THUMB = 64  # crops in the rows
NAME_WIDTH = 130
BAR_WIDTH = 170
SHARE_WIDTH = 64
GAP = 18  # between the A and the B crops
FULL_BAR = 2.0  # a separation of 2 (two standard deviations) fills the bar; a larger one widens the scale
BACKGROUND = (f"<b>Background / habitat</b>: parts whose peak is on the bird on fewer than {100 * ON_BIRD_MIN:.0f} % "
              "of their active training photos (or never active), ranked the same way")
NO_PART_ON_BIRD = ("No part of this run lies on the bird: none has its peak on the bird on at least "
                   f"{100 * ON_BIRD_MIN:.0f} % of its active training photos, so all are listed under background / "
                   "habitat.")


def share_text(place: PartPlace | None) -> str:
    """The on-bird share as the rows show it ("72 %"; "–": never active or unknown)."""
    return "–" if place is None or place.share is None else f"{100 * place.share:.0f} %"


def place_tip(place: PartPlace | None) -> str:
    """Where the part lies, in a sentence (the share's tooltip)."""
    if place is None:
        return "On-bird share: not known yet"
    where = "on the bird" if place.on_bird else "background / habitat"
    if place.share is None:
        return f"Never active on the training photos: {where}"
    box = "inside the bird box" if place.source == "box" else "on the run's own foreground"
    return (f"Peak on the bird ({box}) on {100 * place.share:.0f} % of its {place.active} active training photos: "
            f"{where}")


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


class SeparationView(QWidget):
    """The ranked rows of a pair and the selected part, larger. ``row_selected`` carries a RowSelection.

    With the run's on-bird shares (``places``) and not ``together``, the parts on the bird come first
    (``bird_rows``), then under ``background_header`` the background / habitat parts (``background_rows``); ``rows``
    is every row in the order shown (the keys 1-9 count through both groups). The rows of a pair are built once:
    :meth:`arrange` (new shares, the toggle) only moves them."""

    row_selected = Signal(object)  # RowSelection

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.separation: PairSeparation | None = None
        self.names: tuple[str, str] = ("", "")
        self.rows: list[PartRowWidget] = []
        self.bird_rows: list[PartRowWidget] = []
        self.background_rows: list[PartRowWidget] = []
        self.grouped = False  # the rows are split into on the bird / background
        self.current = -1
        self._widgets: dict[int, PartRowWidget] = {}  # part -> its row, built for the pair shown
        self._header_for: tuple = ()
        self.title = QLabel("", self)
        self.title.setObjectName("sectionTitle")
        self.title.setWordWrap(True)
        self.note = QLabel("", self)  # no part on the bird, the shares still being computed, or why they are not
        self.note.setObjectName("promptLabel")
        self.note.setWordWrap(True)
        self.note.setVisible(False)
        self.header = QWidget(self)
        self.header_lay = QHBoxLayout(self.header)
        self.header_lay.setContentsMargins(8, 0, 8, 0)
        self.header_lay.setSpacing(8)
        self.list = QWidget(self)
        self.list_lay = QVBoxLayout(self.list)
        self.list_lay.setContentsMargins(0, 0, 0, 0)
        self.list_lay.setSpacing(2)
        self.background_header = QLabel(BACKGROUND, self.list)
        self.background_header.setObjectName("backgroundHeader")
        self.background_header.setWordWrap(True)
        self.background_header.setContentsMargins(8, 8, 8, 2)
        self.background_header.setVisible(False)
        self.scroll = QScrollArea(self)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setWidget(self.list)
        self.detail = SelectedPart(self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 4)
        lay.addWidget(self.title)
        lay.addWidget(self.note)
        lay.addWidget(self.header)
        lay.addWidget(self.scroll, 1)
        lay.addWidget(self.detail)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(1100, 700)

    def show_pair(self, separation: PairSeparation | None, names: tuple[str, str], text: str = "",
                  places: Sequence[PartPlace] | None = None, together: bool = False, note: str = "") -> None:
        """Rows for ``separation`` (None: ``text`` instead, e.g. "computing…"), laid out by :meth:`arrange`."""
        for w in self._widgets.values():
            w.hide()
            w.deleteLater()
        self._widgets, self._header_for = {}, ()
        self.separation, self.names = separation, names
        self.current = -1
        if separation is None:
            self._take_rows()
            self.rows, self.bird_rows, self.background_rows = [], [], []
            self.title.setText(text)
            self.note.setVisible(False)
            self.header.setVisible(False)
            self.grouped = False
            self.detail.show_row(None, names, 0)
            return
        self.arrange(places, together, note)

    def arrange(self, places: Sequence[PartPlace] | None = None, together: bool = False, note: str = "") -> None:
        """Lay the pair's rows out: grouped by ``places`` (the run's on-bird shares) unless ``together`` or
        ``places`` is None (then one ranking); ``note`` above the rows (e.g. why they are not grouped yet). The
        selected part stays selected."""
        separation = self.separation
        if separation is None:
            return
        where = {p.part: p for p in places} if places is not None else {}
        self.grouped = places is not None and not together
        if self.grouped:
            bird, background = split_by_place(separation.rows, list(places))
            bird, background = bird[:MAX_ROWS], background[:MAX_ROWS]
        else:
            bird, background = separation.rows[:MAX_ROWS], []
        a, b = (html.escape(species(n)) for n in self.names)
        shown = len(bird) + len(background)
        more = f" (top {shown} of {separation.parts})" if shown < separation.parts else ""
        which = "Parts on the bird that tell" if self.grouped else "Parts that tell"
        self.title.setText(f"{which} {a} from {b}, best first{more}: separation over "
                           f"{separation.images_a} + {separation.images_b} test images")
        if self.grouped and not bird:
            note = NO_PART_ON_BIRD + (f" {note}" if note else "")
        self.note.setText(note)
        self.note.setVisible(bool(note))
        shares = places is not None
        self._set_header(a, b, separation.crops, shares)
        selected = self.rows[self.current].row.part if 0 <= self.current < len(self.rows) else None
        self._take_rows()
        scale = max([FULL_BAR] + [r.separation for r in separation.rows])
        self.rows, self.bird_rows, self.background_rows = [], [], []
        for group, out in ((bird, self.bird_rows), (background, self.background_rows)):
            if group is background and background:
                self.list_lay.addWidget(self.background_header)
                self.background_header.setVisible(True)
            for row in group:
                w = self._widgets.get(row.part)
                if w is None:
                    w = PartRowWidget(len(self.rows), row, scale, separation.crops, self.list)
                    w.clicked.connect(self.select)
                    self._widgets[row.part] = w
                w.set_index(len(self.rows))
                w.set_place(where.get(row.part), shares)
                self.list_lay.addWidget(w)
                w.setVisible(True)
                self.rows.append(w)
                out.append(w)
        self.list_lay.addStretch(1)
        for w in set(self._widgets.values()) - set(self.rows):
            w.setVisible(False)
        index = next((i for i, w in enumerate(self.rows) if w.row.part == selected), -1)
        if index >= 0 and self.detail.row is self.rows[index].row:  # the same part: its crops stay
            self.current = index
            for i, w in enumerate(self.rows):
                w.set_selected(i == index)
            self.detail.set_title(self.rows[index].row, self.names, self.rows[index].place)
            self.row_selected.emit(RowSelection(index, self.rows[index].row.part))
        else:
            self.current = -1
            self.select(0 if self.rows else -1)

    def _take_rows(self) -> None:
        """Empty the list's layout (the rows are kept for :meth:`arrange`)."""
        while self.list_lay.count():
            self.list_lay.takeAt(0)
        self.background_header.setVisible(False)

    def _set_header(self, a: str, b: str, slots: int, shares: bool) -> None:
        if self._header_for == (a, b, slots, shares):
            self.header.setVisible(True)
            return
        self._header_for = (a, b, slots, shares)
        while self.header_lay.count():
            w = self.header_lay.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        columns = [("", 12 + 8 + 14), ("Part", NAME_WIDTH), ("Separation", BAR_WIDTH)]
        columns += [("On bird", SHARE_WIDTH)] if shares else []
        for text_, width in (*columns, (a, slots * (THUMB + 3)), (b, slots * (THUMB + 3))):
            lab = QLabel(text_, self.header)
            lab.setFixedWidth(width)
            if text_ in (a, b):
                lab.setToolTip(f"the {'strongest' if text_ == a else 'weakest'} margins (part score A − B) "
                               "among this species' test images")
            elif text_ == "On bird":
                lab.setToolTip("The share of the part's active training photos with its peak on the bird")
            self.header_lay.addWidget(lab)
            if text_ == a:
                self.header_lay.addSpacing(GAP)
        self.header_lay.addStretch(1)
        self.header.setVisible(True)

    def select(self, index: int) -> None:
        """Highlight row ``index`` (0-based) and show its crops larger; out of range: nothing changes."""
        if not -1 <= index < len(self.rows):
            return
        self.current = index
        for i, w in enumerate(self.rows):
            w.set_selected(i == index)
        row = self.rows[index].row if index >= 0 else None
        self.detail.show_row(row, self.names, CROP_SIZE, self.rows[index].place if index >= 0 else None)
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


__all__ = ["SeparationView", "PartRowWidget", "RowSelection", "species", "share_text", "place_tip", "BACKGROUND",
           "NO_PART_ON_BIRD"]
