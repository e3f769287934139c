"""The photo with one explanation map (or the all-parts colour layer) overlaid, its part's peak and box, the ground-truth keypoints, and a cursor.

View coordinates are original-image pixels with pixel centres at integers (the engine's convention, see
:mod:`engine.maps.parts`): an image item covering W×H pixels sits on the rectangle (−0.5, −0.5, W, H), whatever size
it is drawn at, so a scaled-down display of a large photo still speaks in original pixels.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import QGraphicsRectItem, QWidget

from engine.maps.parts import Part

COLORMAPS = ("inferno", "viridis", "turbo", "magma")


def overlay_lut(name: str) -> np.ndarray:
    """A 256-entry RGBA lookup table: the colour map with alpha rising with the value (low values clear)."""
    lut = pg.colormap.get(name).getLookupTable(0.0, 1.0, 256, alpha=True).astype(np.uint8)
    ramp = np.clip(np.linspace(0.0, 1.0, 256) * 1.6, 0.0, 1.0)
    lut[:, 3] = np.round(ramp * 255).astype(np.uint8)
    return lut


def colorize(values: np.ndarray, name: str) -> np.ndarray:
    """Map values in [0, 1] (H, W) to RGB uint8 (H, W, 3) with colour map ``name``."""
    lut = pg.colormap.get(name).getLookupTable(0.0, 1.0, 256, alpha=False).astype(np.uint8)
    idx = np.clip(np.round(np.asarray(values, np.float32) * 255), 0, 255).astype(np.uint8)
    return lut[idx]


def _pen(color: str, width: float = 2.0, style: Qt.PenStyle = Qt.PenStyle.SolidLine) -> QPen:
    pen = QPen(QColor(color))
    pen.setWidthF(width)
    pen.setCosmetic(True)
    pen.setStyle(style)
    return pen


class MapImageView(pg.GraphicsLayoutWidget):
    """Zoomable photo (wheel zooms, drag pans) with an overlay map, a part marker and keypoints."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground(None)
        self.view: pg.ViewBox = self.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.overlay = pg.ImageItem(axisOrder="row-major")
        self.overlay.setZValue(1)
        self.box = QGraphicsRectItem()
        self.box.setPen(_pen("#39d353", 2.0))
        self.box.setZValue(3)
        self.box.setVisible(False)
        self.peak = pg.ScatterPlotItem(size=16, symbol="o", pen=pg.mkPen("#ffffff", width=2),
                                       brush=pg.mkBrush(57, 211, 83, 200))
        self.peak.setZValue(4)
        self.keypoints = pg.ScatterPlotItem(size=8, pen=pg.mkPen("#101010", width=1), brush=pg.mkBrush("#34d1bf"),
                                            hoverable=True)
        self.keypoints.setZValue(5)
        self.cursor = pg.ScatterPlotItem(size=18, symbol="+", pen=pg.mkPen("#ff3b30", width=2), brush=None)
        self.cursor.setZValue(6)
        for item in (self.image, self.overlay, self.box, self.peak, self.keypoints, self.cursor):
            self.view.addItem(item)
        self.image_size: tuple[int, int] = (0, 0)
        self.colormap = COLORMAPS[0]
        self.shown_map: np.ndarray | None = None
        self.shown_rgba: np.ndarray | None = None
        self.shown_part: Part | None = None

    # -- content ---------------------------------------------------------------------------------------------
    def clear(self) -> None:
        self.image.clear()
        self.overlay.clear()
        self.shown_map = None
        self.shown_rgba = None
        self.image_size = (0, 0)
        self.set_part(None)
        self.set_keypoints(None)
        self.set_cursor(None)

    def set_image(self, image: np.ndarray, image_size: tuple[int, int]) -> None:
        """Show ``image`` (RGB uint8, maybe scaled) as an ``image_size`` (H, W) photo; zooms to fit when the
        size changes."""
        refit = tuple(image_size) != self.image_size
        self.image_size = (int(image_size[0]), int(image_size[1]))
        rect = QRectF(-0.5, -0.5, self.image_size[1], self.image_size[0])
        self.image.setImage(image, autoLevels=False, levels=(0, 255))
        self.image.setRect(rect)
        self.overlay.setRect(rect)
        if refit:
            self.fit()

    def set_overlay(self, values: np.ndarray | None) -> None:
        """Overlay a map (values in [0, 1], any size: it is stretched over the photo); None removes it."""
        self.shown_map = values
        self.shown_rgba = None
        if values is None:
            self.overlay.clear()
            return
        self.overlay.setImage(values, autoLevels=False, levels=(0.0, 1.0), lut=overlay_lut(self.colormap))
        self.overlay.setRect(QRectF(-0.5, -0.5, self.image_size[1], self.image_size[0]))

    def set_rgba(self, rgba: np.ndarray) -> None:
        """Overlay a coloured layer (H, W, 4) uint8 as it is (the all-parts map), stretched over the photo."""
        self.shown_map = None
        self.shown_rgba = rgba
        self.overlay.setImage(rgba, autoLevels=False, levels=(0, 255), lut=None)
        self.overlay.setRect(QRectF(-0.5, -0.5, self.image_size[1], self.image_size[0]))

    def set_colormap(self, name: str) -> None:
        self.colormap = name
        if self.shown_map is not None:
            self.overlay.setLookupTable(overlay_lut(name))

    def set_opacity(self, opacity: float) -> None:
        self.overlay.setOpacity(float(opacity))

    def set_part(self, part: Part | None) -> None:
        """Mark a part's peak and box (original pixels, box edges exclusive); None hides them."""
        self.shown_part = part
        if part is None:
            self.peak.clear()
            self.box.setVisible(False)
            return
        self.peak.setData([part.peak[0]], [part.peak[1]])
        x0, y0, x1, y1 = part.box
        self.box.setRect(QRectF(x0, y0, x1 - x0, y1 - y0))
        self.box.setVisible(True)

    def set_keypoints(self, keypoints: np.ndarray | None, names: list[str] | None = None) -> None:
        """Ground-truth keypoints (N, 3) x, y, visible; only the visible ones are drawn (None hides them)."""
        if keypoints is None or len(keypoints) == 0:
            self.keypoints.clear()
            return
        kp = np.asarray(keypoints, np.float64)
        vis = kp[:, 2] > 0
        labels = [(names[i] if names and i < len(names) else f"part {i + 1}") for i in np.flatnonzero(vis)]
        self.keypoints.setData(kp[vis, 0], kp[vis, 1], data=labels, tip=lambda x, y, data: f"{data}")

    def set_cursor(self, point: tuple[float, float] | None) -> None:
        if point is None:
            self.cursor.clear()
        else:
            self.cursor.setData([point[0]], [point[1]])

    def fit(self) -> None:
        if self.image_size[0]:
            self.view.setRange(QRectF(-0.5, -0.5, self.image_size[1], self.image_size[0]), padding=0.02)

    # -- facts for tests -------------------------------------------------------------------------------------
    def keypoint_positions(self) -> np.ndarray:
        x, y = self.keypoints.getData()
        return np.stack((x, y), axis=1) if x is not None and len(x) else np.zeros((0, 2))
