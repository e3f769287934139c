"""A large preview of one sample with zoom and pan (pyqtgraph), its box and part keypoints, and its facts."""

from __future__ import annotations

import logging
import os

import numpy as np
import pyqtgraph as pg
import shiboken6
from PySide6.QtCore import QRectF, Qt, Slot
from PySide6.QtGui import QPen
from PySide6.QtWidgets import QGraphicsRectItem, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget
from superqt.utils import create_worker

from engine.data import Sample
from engine.data.imageio import Decoded, load_image

log = logging.getLogger(__name__)


class PreviewPanel(QWidget):
    """Shows the selected sample: image (decoded off the GUI thread), bounding box, keypoints, facts."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.graphics = pg.GraphicsLayoutWidget(self)
        self.graphics.setBackground(None)
        self.view: pg.ViewBox = self.graphics.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image)
        self.box = QGraphicsRectItem()
        pen = QPen(pg.mkColor("#ffcc00"))
        pen.setWidthF(2)
        pen.setCosmetic(True)
        self.box.setPen(pen)
        self.box.setVisible(False)
        self.view.addItem(self.box)
        self.parts = pg.ScatterPlotItem(size=9, pen=pg.mkPen("#202020", width=1), brush=pg.mkBrush("#34d1bf"))
        self.view.addItem(self.parts)
        self.info = QLabel("Select an image to preview it.", self)
        self.info.setWordWrap(True)
        self.info.setObjectName("previewInfo")
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        fit = QPushButton("Fit", self)
        fit.setToolTip("Zoom to fit (wheel zooms, drag pans)")
        fit.clicked.connect(self.fit)
        bar = QHBoxLayout()
        bar.addWidget(self.info, 1)
        bar.addWidget(fit, 0, Qt.AlignmentFlag.AlignTop)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.graphics, 1)
        lay.addLayout(bar)
        self._sample: Sample | None = None
        self._class = ""
        self._part_names: list[str] = []
        self._worker = None
        self.shown_path = ""  # the path whose pixels are on screen (tests wait on it)

    def set_part_names(self, names: list[str]) -> None:
        self._part_names = list(names)

    def clear(self) -> None:
        self._sample = None
        self.image.clear()
        self.box.setVisible(False)
        self.parts.clear()
        self.shown_path = ""
        self.info.setText("Select an image to preview it.")

    def show_sample(self, sample: Sample | None, class_name: str = "") -> None:
        """Preview ``sample``; the image is decoded on a worker thread, the newest request wins."""
        if sample is None:
            self.clear()
            return
        self._sample, self._class = sample, class_name
        self._set_info(None)
        path = sample.path
        self._worker = create_worker(load_image, path, _start_thread=True, _connect={
            "returned": lambda dec: self._on_worker_returned(path, dec),
            "errored": lambda exc: self._on_worker_errored(path, exc)})

    def _on_worker_returned(self, path: str, dec: Decoded) -> None:
        if not shiboken6.isValid(self) or self._sample is None or self._sample.path != path:
            return
        img, info = dec  # the box and keypoints are on the file's grid: shown through its orientation and scale
        self.image.setImage(img, autoLevels=False, levels=(0, 255))
        self.image.setRect(QRectF(0, 0, img.shape[1], img.shape[0]))
        s = self._sample
        if s.bbox is not None:
            x, y, w, h = info.xywh_to_image(s.bbox)
            self.box.setRect(QRectF(x, y, w, h))
            self.box.setVisible(True)
        else:
            self.box.setVisible(False)
        kp = info.keypoints_to_image(s.keypoints())
        if kp is not None and len(kp):
            vis = kp[:, 2] > 0
            names = self._part_names or [f"part {i + 1}" for i in range(len(kp))]
            self.parts.setData(x=kp[vis, 0], y=kp[vis, 1],
                               data=[names[i] if i < len(names) else "" for i in np.flatnonzero(vis)])
            self.parts.setToolTip(", ".join(str(d) for d in self.parts.data["data"]))
        else:
            self.parts.clear()
        self.fit()
        self._set_info(img)
        self.shown_path = path

    def _on_worker_errored(self, path: str, exc: BaseException) -> None:
        if not shiboken6.isValid(self) or self._sample is None or self._sample.path != path:
            return
        self.image.clear()
        self.box.setVisible(False)
        self.parts.clear()
        self.info.setText(f"<b>Cannot show this image:</b> {exc}<br>{path}")
        log.warning("preview of %s failed: %s", path, exc)
        self.shown_path = path

    @Slot()
    def fit(self) -> None:
        self.view.autoRange(padding=0.02)

    def _set_info(self, img: np.ndarray | None) -> None:
        s = self._sample
        if s is None:
            return
        try:
            kb = os.path.getsize(s.path) / 1024
            size = f"{kb / 1024:.1f} MB" if kb > 1024 else f"{kb:.0f} KB"
        except OSError:
            size = "?"
        dims = f"{img.shape[1]} × {img.shape[0]} px · " if img is not None else ""
        extra = []
        if s.bbox is not None:
            extra.append("box")
        if s.parts is not None:
            extra.append(f"{sum(1 for p in s.parts if p[2] > 0)} visible parts")
        self.info.setText(f"<b>{self._class or 'no class'}</b> · {s.split or 'no split'} · {dims}{size}"
                          + (f" · {', '.join(extra)}" if extra else "")
                          + f"<br><span style='color:gray'>{s.path}</span>")
