"""Explore's two view modes, each drawing the page's :class:`~app.explore.state.ExploreState` onto the shared
widgets (the photo, the map strip, the crop panel and the resampled views) and nothing else: the one-map view
(a map overlaid in the colour map, its part's peak, box and crop) and a shared-parts run's all-parts view (every
part in its palette colour; the isolated part alone, the hovered one highlighted)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QListWidgetItem, QWidget

from ..common.pixmaps import to_pixmap
from .image_view import colorize
from .partmap import part_colour, render_parts
from .state import ExploreState
from .ui import CROP_MAX, CROP_MIN

THUMB_BASE = 200.0  # grey of a part's thumbnail where its map is 0 (all-parts view)


def show_crop(page: QWidget, crop: np.ndarray) -> None:
    """The part's crop in the crop panel: small crops enlarged (pixels kept sharp), large ones fitted."""
    pm = to_pixmap(crop)
    side = max(crop.shape[:2])
    if side < CROP_MIN or side > CROP_MAX:
        target = CROP_MIN if side < CROP_MIN else CROP_MAX
        mode = (Qt.TransformationMode.FastTransformation if side < CROP_MIN
                else Qt.TransformationMode.SmoothTransformation)
        pm = pm.scaled(target, target, Qt.AspectRatioMode.KeepAspectRatio, mode)
    page.crop_label.setPixmap(pm)


def set_strip_row(page: QWidget, row: int) -> None:
    """Select the strip's ``row`` without the strip's signal (the page asked for it)."""
    page.strip.blockSignals(True)
    page.strip.setCurrentRow(row)
    page.strip.blockSignals(False)


def show_predictions(page: QWidget, lines: list[tuple[int, str]], selected: int) -> None:
    """The predictions list: (class index, line) of the top classes, the ``selected`` class selected."""
    page.predictions.clear()
    for i, text in lines:
        item = QListWidgetItem(text)
        item.setData(Qt.ItemDataRole.UserRole, i)
        item.setToolTip(item.text())
        page.predictions.addItem(item)
        if i == selected:
            item.setSelected(True)
    lst = page.predictions
    lst.setFixedHeight(lst.sizeHintForRow(0) * max(1, lst.count()) + 2 * lst.frameWidth() + 4)


def fill_strip(page: QWidget, items: list[tuple[QIcon, str]], row: int) -> None:
    """The map strip: one (thumbnail, name) item per map, ``row`` selected (without the strip's signal)."""
    page.strip.blockSignals(True)
    page.strip.clear()
    for icon, name in items:
        page.strip.addItem(QListWidgetItem(icon, name))
    page.strip.setCurrentRow(row)
    page.strip.blockSignals(False)


class OneMapView:
    """One map of the class at a time, overlaid in the chosen colour map."""

    def __init__(self, page: QWidget, state: ExploreState) -> None:
        self.page, self.state = page, state

    def thumb_icon(self, k: int) -> QIcon:
        return QIcon(to_pixmap(colorize(self.state.result.thumbs[k], self.page.image_view.colormap)))

    def draw(self) -> None:
        """Overlay the picked map (``state.map_index``), mark its part, show its crop and resampled views."""
        page, r, index = self.page, self.state.result, self.state.map_index
        if page.strip.currentRow() != index:
            set_strip_row(page, index)
        blank = self.state.blank_map(index)  # a map the same everywhere has nothing to overlay or point at
        page.image_view.set_overlay(None if blank else r.maps[index])
        page.image_view.set_part(None if blank else r.parts[index])
        show_crop(page, r.crops[index])
        page.crop_caption.setText(self.state.map_caption(index))
        page.resampled.set_views(r.image, r.views[index])


class AllPartsView:
    """A shared-parts run's parts as one coloured map, with the legend's scores and the focused part's crop."""

    def __init__(self, page: QWidget, state: ExploreState) -> None:
        self.page, self.state = page, state

    def thumb_icon(self, k: int) -> QIcon:
        """Part ``k``'s thumbnail: grey where its map is 0, its palette colour where it is 1."""
        rgb = np.asarray(part_colour(k).getRgb()[:3], np.float32)
        t = np.clip(self.state.result.thumbs[k], 0, 1)[..., None] ** 0.7
        return QIcon(to_pixmap(np.round(THUMB_BASE + t * (rgb - THUMB_BASE)).astype(np.uint8)))

    def draw(self) -> None:
        """Draw the all-parts map (the isolated part alone; the hovered one highlighted) and the focused part's
        crop, score and box."""
        page, st = self.page, self.state
        r = st.result
        st.clamp_isolated()
        page.image_view.set_rgba(render_parts(r.layer, st.isolated, st.hovered))
        page.legend.set_isolated(st.isolated)
        page.legend.set_scores([st.part_text(i) for i in range(r.layer.parts)], r.layer.active)
        focus = st.focused_part()
        page.image_view.set_part(r.parts[focus] if (st.hovered is not None or st.isolated is not None) else None)
        show_crop(page, r.crops[focus])
        page.crop_caption.setText(st.part_text(focus))
        set_strip_row(page, focus if st.isolated is not None else -1)
        page.resampled.set_views(r.image, r.views[focus])
