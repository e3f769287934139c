"""The all-parts view of a shared-parts run: the K parts as one coloured map, and their legend.

:func:`render_parts` turns a :class:`~app.explore.compute.PartsLayer` into an RGBA overlay: each pixel in the colour
of the part that wins it (the shared palette, :data:`engine.fieldmarks.palette.PART_COLOURS`), its alpha the
part's probability there, the background clear. One part can be isolated (the others not drawn) or highlighted
(the others dimmed). :class:`PartLegend` lists the parts by name (:func:`engine.fieldmarks.part_label`) with their
colour swatch and key (greyed when the part is not active on the photo: its map never exceeds 0.5); a double-click
(or F2) edits a name in place and ``rename_requested`` carries the new text. A background / habitat part (the run's
on-bird shares, :mod:`engine.fieldmarks.onbird`: its peak seldom on the bird) has a hatched swatch, a "background"
tag after its name and its on-bird share in its tooltip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from PySide6.QtCore import QModelIndex, QPoint, QPointF, QRect, QSize, Qt, Signal, Slot
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPainterPath, QPalette, QPen, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QListWidget, QListWidgetItem, QStyledItemDelegate,
                               QStyleOptionViewItem, QWidget)

from engine.fieldmarks import part_label
from engine.fieldmarks.palette import part_colour as palette_colour

from ..common.pixmaps import part_colour
from .compute import PartsLayer

if TYPE_CHECKING:
    from engine.fieldmarks.onbird import PartPlace

DIM = 0.22  # alpha factor of the other parts while one is highlighted
SWATCH = 22
HATCH = 6  # spacing of a background part's hatching (its stripes leave the pixel colours() reads clear)
BACKGROUND_ROLE = Qt.ItemDataRole.UserRole + 1  # True: a background / habitat part
BACKGROUND_TAG = "background"


def palette_rgb(parts: int) -> np.ndarray:
    """The K parts' colours as (K, 3) uint8."""
    return np.array([palette_colour(k) for k in range(parts)], np.uint8).reshape(parts, 3)


def render_parts(layer: PartsLayer, isolated: int | None = None, highlight: int | None = None) -> np.ndarray:
    """The layer as an RGBA overlay (h, w, 4) uint8: every pixel in its winning part's colour with alpha = that
    part's probability, the background clear; ``isolated`` draws that part only; ``highlight`` dims the others."""
    k = layer.parts
    lut = np.zeros((k + 1, 3), np.uint8)
    lut[:k] = palette_rgb(k)
    factor = np.ones(k + 1, np.float32)
    factor[k] = 0.0
    if isolated is not None:
        factor[:k] = 0.0
        factor[isolated] = 1.0
    elif highlight is not None:
        factor[:k] = DIM
        factor[highlight] = 1.0
    out = np.empty((*layer.labels.shape, 4), np.uint8)
    out[..., :3] = lut[layer.labels]
    out[..., 3] = np.round(layer.alpha * factor[layer.labels]).astype(np.uint8)
    return out


def swatch(colour: QColor, key: str = "", side: int = SWATCH, hatched: bool = False) -> QPixmap:
    """A rounded colour square with the part's key digit in a contrasting colour; ``hatched`` (a background /
    habitat part) crosses it with diagonal stripes."""
    pm = QPixmap(side, side)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(QColor(0, 0, 0, 90))
    p.setBrush(colour)
    p.drawRoundedRect(QRect(1, 1, side - 2, side - 2), 4, 4)
    light = colour.lightnessF() > 0.55
    if hatched:
        clip = QPainterPath()
        clip.addRoundedRect(QRect(1, 1, side - 2, side - 2), 4, 4)
        if key:  # the digit keeps a plain disc of the colour behind it
            disc = QPainterPath()
            disc.addEllipse(QPointF(side / 2, side / 2), side * 0.3, side * 0.3)
            clip = clip.subtracted(disc)
        p.save()
        p.setClipPath(clip)
        p.setPen(QPen(QColor(0, 0, 0, 150) if light else QColor(255, 255, 255, 170), 2))
        for c in range(HATCH, 2 * side, HATCH):  # the lines x + y = c (the centre of pixel (3, side // 2) is
            p.drawLine(QPoint(c, 0), QPoint(0, c))  # 2.1 px from the nearest, outside the 2 px stroke)
        p.restore()
    if key:
        font = QFont(p.font())
        font.setBold(True)
        font.setPixelSize(int(side * 0.6))
        p.setFont(font)
        p.setPen(QColor("#111111") if light else QColor("#ffffff"))
        p.drawText(QRect(QPoint(0, 0), QSize(side, side)), Qt.AlignmentFlag.AlignCenter, key)
    p.end()
    return pm


class LegendDelegate(QStyledItemDelegate):
    """Draws a background / habitat part's entry with a "background" tag after its name; the editor still gets
    the name alone (the tag is only painted)."""

    def initStyleOption(self, option: QStyleOptionViewItem, index: QModelIndex) -> None:  # noqa: N802 - Qt API
        super().initStyleOption(option, index)
        if index.data(BACKGROUND_ROLE):
            option.text = f"{option.text}  · {BACKGROUND_TAG}"


def place_line(place: PartPlace | None) -> str:
    """A part's on-bird share in a sentence (its legend tooltip)."""
    if place is None:
        return ""
    if place.share is None:
        return "Background / habitat: never active on the training photos."
    where = "On the bird" if place.on_bird else "Background / habitat"
    return (f"{where}: its peak is on the bird on {100 * place.share:.0f} % of its {place.active} active training "
            "photos.")


class PartLegend(QListWidget):
    """The parts by name with their colour and key (1-9). Hovering an entry emits ``hovered(k)`` (-1: none),
    clicking one ``toggled(k)`` (isolate it, or show all again); the names edit in place. :meth:`set_places`
    marks the background / habitat parts."""

    hovered = Signal(int)
    toggled = Signal(int)
    rename_requested = Signal(int, str)  # part, the text typed

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("partLegend")
        self.setIconSize(QSize(SWATCH, SWATCH))
        self.setMouseTracking(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setToolTip("Click a part to show it alone (again: all parts); double-click to name it")
        self.setItemDelegate(LegendDelegate(self))
        self.names: dict[int, str] = {}
        self.places: dict[int, PartPlace] = {}
        self._scores: list[str] = []
        self._hover = -1
        self.itemEntered.connect(self._on_item_entered)
        self.itemClicked.connect(self._on_item_clicked)
        self.itemChanged.connect(self._on_item_changed)

    def set_parts(self, parts: int, names: dict[int, str]) -> None:
        """One entry per part, in the palette's colours, labelled by ``names``."""
        self.blockSignals(True)
        self.clear()
        self.places, self._scores = {}, []
        for k in range(parts):
            item = QListWidgetItem(QIcon(swatch(part_colour(k), str(k + 1) if k < 9 else "")), part_label(k, names))
            item.setData(Qt.ItemDataRole.UserRole, k)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            self.addItem(item)
        self.names = dict(names)
        self.blockSignals(False)
        self._fit_height()

    def set_places(self, places: Sequence[PartPlace] | None) -> None:
        """Mark the background / habitat parts (hatched swatch, "background" tag, the share in the tooltip);
        None: no marks (the shares are not known)."""
        self.places = {p.part: p for p in places or ()}
        self.blockSignals(True)
        for k in range(self.count()):
            place = self.places.get(k)
            background = place is not None and not place.on_bird
            item = self.item(k)
            item.setIcon(QIcon(swatch(part_colour(k), str(k + 1) if k < 9 else "", hatched=background)))
            item.setData(BACKGROUND_ROLE, background)
            item.setToolTip(self._tip(k))
        self.blockSignals(False)
        self.viewport().update()

    def is_background(self, k: int) -> bool:
        """Part ``k`` is marked as background / habitat."""
        return 0 <= k < self.count() and bool(self.item(k).data(BACKGROUND_ROLE))

    def shown_text(self, k: int) -> str:
        """The text entry ``k`` is drawn with (its name, and the tag of a background part)."""
        option = QStyleOptionViewItem()
        self.itemDelegate().initStyleOption(option, self.indexFromItem(self.item(k)))
        return option.text

    def _tip(self, k: int) -> str:
        lines = [t for t in (self._scores[k] if k < len(self._scores) else "", place_line(self.places.get(k))) if t]
        return "\n".join(lines)

    def set_names(self, names: dict[int, str]) -> None:
        """Relabel the entries (after a name was saved or refused)."""
        self.names = dict(names)
        self.blockSignals(True)
        for k in range(self.count()):
            self.item(k).setText(part_label(k, names))
        self.blockSignals(False)

    def set_scores(self, texts: Sequence[str], active: Sequence[bool] | None = None) -> None:
        """Each entry's tooltip: its score line (and its on-bird share); parts not ``active`` on the photo are
        greyed."""
        self.blockSignals(True)
        self._scores = list(texts)
        grey = self.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
        for k, text in enumerate(texts[:self.count()]):
            item = self.item(k)
            item.setToolTip(self._tip(k))
            on = active is None or bool(active[k])
            item.setData(Qt.ItemDataRole.ForegroundRole, None if on else grey)
        self.blockSignals(False)

    def set_isolated(self, k: int | None) -> None:
        """Mark the isolated part as the selected entry (None: no selection)."""
        self.blockSignals(True)
        self.clearSelection()
        if k is not None and 0 <= k < self.count():
            self.item(k).setSelected(True)
            self.setCurrentRow(k)
        self.blockSignals(False)

    def edit_part(self, k: int) -> None:
        """Open the inline name editor of part ``k``."""
        if 0 <= k < self.count():
            self.setCurrentRow(k)
            self.editItem(self.item(k))

    def colours(self) -> list[QColor]:
        """The entries' swatch colours (facts for tests)."""
        out = []
        for k in range(self.count()):
            image = self.item(k).icon().pixmap(SWATCH, SWATCH).toImage()
            out.append(QColor(image.pixel(3, SWATCH // 2)))
        return out

    def _fit_height(self) -> None:
        rows = max(1, self.count())
        self.setFixedHeight(min(rows, 12) * max(self.sizeHintForRow(0), SWATCH + 4) + 2 * self.frameWidth() + 4)

    # -- events ----------------------------------------------------------------------------------------------
    def leaveEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._set_hover(-1)
        super().leaveEvent(event)

    def _set_hover(self, k: int) -> None:
        if k != self._hover:
            self._hover = k
            self.hovered.emit(k)

    @Slot(QListWidgetItem)
    def _on_item_entered(self, item: QListWidgetItem) -> None:
        self._set_hover(int(item.data(Qt.ItemDataRole.UserRole)))

    @Slot(QListWidgetItem)
    def _on_item_clicked(self, item: QListWidgetItem) -> None:
        self.toggled.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    @Slot(QListWidgetItem)
    def _on_item_changed(self, item: QListWidgetItem) -> None:
        k = int(item.data(Qt.ItemDataRole.UserRole))
        text = item.text().strip()
        if text == part_label(k, self.names):
            return  # nothing changed (or the default label kept)
        self.rename_requested.emit(k, text)
