"""Numpy images to Qt images: the one place that wraps an RGB array's memory in a QImage; and a shared part's
colour as a QColor (Explore's part map and legend, Compare's rows)."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QColor, QImage, QPixmap

from engine.fieldmarks.palette import part_colour as palette_colour


def to_qimage(rgb: np.ndarray) -> QImage:
    """An RGB uint8 array (H, W, 3) as a QImage that owns a copy of the pixels (any thread)."""
    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, rgb.strides[0], QImage.Format.Format_RGB888).copy()


def to_pixmap(rgb: np.ndarray) -> QPixmap:
    """An RGB uint8 array (H, W, 3) as a QPixmap (copied, so the array may go away; GUI thread)."""
    return QPixmap.fromImage(to_qimage(rgb))


def part_colour(k: int) -> QColor:
    """Part ``k``'s colour (0-based) in the shared palette (:mod:`engine.fieldmarks.palette`, cycling past its
    end)."""
    return QColor(*palette_colour(k))
