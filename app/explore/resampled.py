"""The original, structure-preserved and detail-preserved views side by side, with a linked cursor; for an RA-CNN
run's squares, its zoom views in the two places (Fu et al., CVPR 2017): scale 2's and scale 3's crops, the squares
drawn on the photo (and scale 3's in scale 2's view).

The two resampled views come from TASN's attention sampler (Zheng et al., CVPR 2019, §3.2) driven by the
selected map. Pointing at a spot in any view marks the same spot in the others: a point of a resampled view goes
back to original pixels through its sampling grid (:func:`engine.models.sampler.resampled_to_original`), and an
original point goes into a view with :func:`engine.models.sampler.original_to_resampled`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
import torch
from PySide6.QtCore import QPointF, QRectF, Signal, Slot
from PySide6.QtWidgets import QWidget

from .compute import MapView

VIEWS = ("original", "structure", "detail")
TITLES = {"original": "Original", "structure": "Structure-preserved", "detail": "Detail-preserved"}
BOX_COLOURS = ("#ffcc00", "#34c759")  # the squares of scales 2 and 3

Point = tuple[float, float]


@dataclass(frozen=True)
class CursorState:
    """The linked cursor: the same spot in original pixels and in each resampled view (None: no cursor)."""

    source: str
    original: Point | None
    structure: Point | None
    detail: Point | None


def link_point(view: MapView, source: str, point: Point) -> CursorState:
    """Where ``point`` of view ``source`` ("original", "structure" or "detail") lies in every view."""
    if source not in VIEWS:
        raise ValueError(f"source={source!r}: use one of {', '.join(VIEWS)}")
    grids = {"structure": torch.from_numpy(view.structure_grid)[None].double(),
             "detail": torch.from_numpy(view.detail_grid)[None].double()}
    p = torch.tensor([[point]], dtype=torch.float64)
    if source == "original":
        original = p
    else:
        from engine.models.sampler import resampled_to_original

        original = resampled_to_original(p, grids[source], view.in_size)
    from engine.models.sampler import original_to_resampled

    out = {"original": original}
    for name, grid in grids.items():
        out[name] = p if name == source else original_to_resampled(original, grid, view.in_size)
    pts = {k: (float(v[0, 0, 0]), float(v[0, 0, 1])) for k, v in out.items()}
    return CursorState(source, pts["original"], pts["structure"], pts["detail"])


class ResampledPanel(pg.GraphicsLayoutWidget):
    """Three linked image views; ``cursor_changed`` carries a :class:`CursorState` whenever the cursor moves."""

    cursor_changed = Signal(object)  # CursorState

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground(None)
        self.views: dict[str, pg.ViewBox] = {}
        self.images: dict[str, pg.ImageItem] = {}
        self.markers: dict[str, pg.ScatterPlotItem] = {}
        self.titles: dict[str, pg.LabelItem] = {}
        self.boxes: dict[str, list[pg.PlotDataItem]] = {name: [] for name in VIEWS}
        for col, name in enumerate(VIEWS):
            self.titles[name] = self.addLabel(TITLES[name], row=0, col=col)
            vb = self.addViewBox(row=1, col=col, lockAspect=True, invertY=True, enableMenu=False)
            vb.setMouseEnabled(False, False)
            img = pg.ImageItem(axisOrder="row-major")
            marker = pg.ScatterPlotItem(size=20, symbol="+", pen=pg.mkPen("#ff3b30", width=2), brush=None)
            marker.setZValue(2)
            vb.addItem(img)
            vb.addItem(marker)
            self.views[name], self.images[name], self.markers[name] = vb, img, marker
        self.ci.layout.setRowStretchFactor(1, 1)
        self.view: MapView | None = None
        self.cursor: CursorState | None = None
        self.scene().sigMouseMoved.connect(self._on_scene_mouse_moved)

    def set_views(self, original: np.ndarray, view: MapView | None) -> None:
        """Show ``original`` (RGB, maybe scaled; its true size is ``view.in_size``) and the two resampled views."""
        self.view = view
        self._draw_boxes(view)
        if view is None:
            for img in self.images.values():
                img.clear()
            self.set_cursor(None)
            return
        for name, title in zip(VIEWS[1:], view.titles):
            self.titles[name].setText(title)
        h, w = view.in_size
        arrays = {"original": (original, (h, w)), "structure": (view.structure, view.structure.shape[:2]),
                  "detail": (view.detail, view.detail.shape[:2])}
        for name, (arr, (hh, ww)) in arrays.items():
            img = self.images[name]
            img.setImage(arr, autoLevels=False, levels=(0, 255))
            rect = QRectF(-0.5, -0.5, ww, hh)
            img.setRect(rect)
            self.views[name].setRange(rect, padding=0.0)
        if self.cursor is not None and self.cursor.original is not None:
            self.point_at("original", self.cursor.original)

    def _draw_boxes(self, view: MapView | None) -> None:
        """The view's squares (an RA-CNN run's zoom views), scale 2's and scale 3's in their colours."""
        for name, items in self.boxes.items():
            for item in items:
                self.views[name].removeItem(item)
            items.clear()
            for k, (x0, y0, x1, y1) in enumerate(view.boxes.get(name, ()) if view is not None else ()):
                colour = BOX_COLOURS[(k + (name == "structure")) % len(BOX_COLOURS)]
                item = pg.PlotDataItem([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], pen=pg.mkPen(colour, width=2))
                item.setZValue(1)
                self.views[name].addItem(item)
                items.append(item)

    def box_count(self, name: str) -> int:
        """How many squares view ``name`` draws now."""
        return len(self.boxes[name])

    def point_at(self, source: str, point: Point | None) -> CursorState | None:
        """Put the cursor at ``point`` of view ``source`` and mark the same spot in the other views."""
        if point is None or self.view is None:
            self.set_cursor(None)
            return None
        state = link_point(self.view, source, point)
        self.set_cursor(state)
        return state

    def set_cursor(self, state: CursorState | None) -> None:
        self.cursor = state
        for name, marker in self.markers.items():
            p = getattr(state, name) if state is not None else None
            if p is None:
                marker.clear()
            else:
                marker.setData([p[0]], [p[1]])
        self.cursor_changed.emit(state if state is not None else CursorState("", None, None, None))

    def marker_position(self, name: str) -> Point | None:
        x, y = self.markers[name].getData()
        return (float(x[0]), float(y[0])) if x is not None and len(x) else None

    @Slot(object)
    def _on_scene_mouse_moved(self, pos: QPointF) -> None:
        if self.view is None:
            return
        for name, vb in self.views.items():
            if vb.sceneBoundingRect().contains(pos):
                p = vb.mapSceneToView(pos)
                img = self.images[name]
                rect = img.mapRectToView(img.boundingRect())
                if rect.contains(p):
                    self.point_at(name, (p.x(), p.y()))
                return
