"""Live training curves (pyqtgraph): loss parts per epoch with the batch loss, test top-1, images per second."""

from __future__ import annotations

import logging
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QTimer, Slot
from PySide6.QtWidgets import QVBoxLayout, QWidget

from engine.events import BatchEnd, EpochEnd

from ..state import ThemeState

log = logging.getLogger(__name__)

PART_COLORS = {"loss": "#2f6fbd", "ce": "#e07b39", "dis": "#3fa34d", "div": "#b04fc4", "regions": "#8c8c8c"}
OTHER_COLORS = ["#c9a227", "#1aa3a3", "#d0465a"]
BATCH_EVERY = 1  # keep every n-th batch point (raised as the run grows, to keep drawing cheap)
REDRAW_MS = 150  # events only mark the plots dirty; one timer redraws them (a paint costs 10-20 ms)


class TrainCurves(QWidget):
    """Three plots fed by engine events (:meth:`add_batch`, :meth:`add_epoch`) or a run's history.

    Events only append to lists; a coalescing timer redraws at most every ``REDRAW_MS``, so a burst of batch
    events never turns into a burst of repaints. (No grid: pyqtgraph's translucent grid doubles a paint's cost.)
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.graphics = pg.GraphicsLayoutWidget(self)
        self.graphics.setBackground(None)
        self.loss_plot = self.graphics.addPlot(row=0, col=0, title="Training loss")
        self.acc_plot = self.graphics.addPlot(row=0, col=1, title="Test top-1 (%)")
        self.speed_plot = self.graphics.addPlot(row=0, col=2, title="Images / s")
        self.legend = pg.LegendItem(labelTextSize="8pt", colCount=6, horSpacing=14)  # one row under the plots
        self.graphics.addItem(self.legend, row=1, col=0, colspan=3)
        for p in self.plots:
            p.setLabel("bottom", "epoch")
            p.setMenuEnabled(False)
        self.acc_plot.setYRange(0, 100, padding=0.02)
        self.batch_curve = self.loss_plot.plot(pen=pg.mkPen("#9aa5b1", width=1))  # per batch, faint
        self.acc_curve = self.acc_plot.plot(pen=pg.mkPen("#3fa34d", width=2), symbol="o", symbolSize=6,
                                            symbolBrush="#3fa34d")
        self.speed_curve = self.speed_plot.plot(pen=pg.mkPen("#e07b39", width=2))
        self.part_curves: dict[str, pg.PlotDataItem] = {}
        self._spare: dict[str, pg.PlotDataItem] = {k: self._make_curve(k) for k in PART_COLORS}
        # Lay out one legend label now: the first one loads the font, which took up to 0.3 s of the GUI thread
        # when it happened at a run's first epoch (measured by the stall probe of the tests).
        self.legend.addItem(self._spare["loss"], "loss")
        self.legend.removeItem(self._spare["loss"])
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._redraw)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.graphics)
        self.clear()

    @property
    def plots(self) -> list[pg.PlotItem]:
        return [self.loss_plot, self.acc_plot, self.speed_plot]

    def clear(self) -> None:
        """Empty every curve."""
        self.epochs: list[float] = []
        self.parts: dict[str, list[float]] = {}
        self.top1: list[tuple[float, float]] = []
        self.speed: list[float] = []
        self.batch_x: list[float] = []
        self.batch_y: list[float] = []
        self._batch_every = BATCH_EVERY
        self._batch_seen = 0
        for curve in self.part_curves.values():  # legend entries stay until the next run's keys are known
            curve.setData([], [])
        self._redraw()

    def _make_curve(self, key: str) -> pg.PlotDataItem:
        """A loss-part curve, created ahead (creating one costs tens of ms) and put in the legend when used.

        Lines without symbols: a symbol per epoch on four curves made every redraw about 30 % dearer."""
        color = PART_COLORS.get(key) or OTHER_COLORS[len(self.part_curves) % len(OTHER_COLORS)]
        return self.loss_plot.plot(pen=pg.mkPen(color, width=2))

    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    @property
    def epoch_count(self) -> int:
        return len(self.epochs)

    def add_batch(self, ev: BatchEnd) -> None:
        """Add one batch's loss to the faint live curve (thinned to at most ~2000 points)."""
        self._batch_seen += 1
        if self._batch_seen % self._batch_every:
            return
        self.batch_x.append(ev.epoch - 1 + ev.step / max(ev.steps, 1))
        self.batch_y.append(ev.loss)
        if len(self.batch_x) > 2000:
            self.batch_x, self.batch_y = self.batch_x[::2], self.batch_y[::2]
            self._batch_every *= 2
        self._schedule()

    def add_epoch(self, ev: EpochEnd) -> None:
        """Add one finished epoch."""
        self._add_row(ev.epoch, ev.train, ev.test_top1, ev.images_per_s)
        self._schedule()

    def set_history(self, rows: list[dict[str, Any]]) -> None:
        """Show a run's saved history (``metrics.jsonl`` rows)."""
        self.clear()
        skip = {"epoch", "test_top1", "test_loss", "images_per_s", "seconds", "lr"}
        for row in rows:
            parts = {k: float(v) for k, v in row.items() if k not in skip and isinstance(v, (int, float))}
            self._add_row(int(row.get("epoch", len(self.epochs) + 1)), parts, row.get("test_top1"),
                          float(row.get("images_per_s") or 0.0))
        self._redraw()

    def _add_row(self, epoch: int, parts: dict[str, float], top1: float | None, speed: float) -> None:
        self.epochs.append(float(epoch))
        for k, v in parts.items():
            self.parts.setdefault(k, [float("nan")] * (len(self.epochs) - 1)).append(float(v))
        for k, values in self.parts.items():
            if len(values) < len(self.epochs):
                values.append(float("nan"))
        if top1 is not None:
            self.top1.append((float(epoch), 100.0 * float(top1)))
        self.speed.append(float(speed))

    @Slot()
    def _redraw(self) -> None:
        self._timer.stop()
        if self.epochs:  # keys of the current run known: drop the legend entries of parts it does not have
            for name in [k for k in self.part_curves if k not in self.parts]:
                curve = self.part_curves.pop(name)
                self.legend.removeItem(curve)
                curve.setData([], [])
                self._spare[name] = curve
        for k, values in self.parts.items():
            curve = self.part_curves.get(k)
            if curve is None:
                curve = self._spare.pop(k, None) or self._make_curve(k)
                self.legend.addItem(curve, k)
                self.part_curves[k] = curve
            curve.setData(self.epochs, values, connect="finite")
        self.batch_curve.setData(self.batch_x, self.batch_y)
        self.acc_curve.setData([e for e, _ in self.top1], [a for _, a in self.top1])
        self.speed_curve.setData(self.epochs, self.speed)

    def apply_theme(self, theme: ThemeState) -> None:
        """Axis and title colours that read on the theme's background."""
        for p in self.plots:
            for side in ("left", "bottom"):
                axis = p.getAxis(side)
                axis.setPen(pg.mkPen(theme.foreground))
                axis.setTextPen(pg.mkPen(theme.foreground))
            p.setTitle(p.titleLabel.text, color=theme.foreground, size="10pt")
        self.legend.setLabelTextColor(theme.foreground)
