"""Thumbnails decoded off the GUI thread, newest request first, kept in an LRU cache keyed by path.

The model asks :meth:`ThumbnailLoader.pixmap` from ``data()``, which Qt calls only for the rows it paints, so
only visible rows are requested. Requests wait in a bounded stack: when the user scrolls fast, the newest (the
rows now on screen) are decoded first and the oldest are dropped.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap

from engine.errors import DecodeError
from engine.data.imageio import read_image

from ..common.caches import trim_oldest
from ..common.pixmaps import to_qimage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Thumbnail:
    """A decoded thumbnail (``image`` is None when the file could not be decoded; ``error`` says why)."""

    path: str
    image: QImage | None
    error: str = ""


def decode_thumbnail(path: str, size: int) -> QImage:
    """Decode ``path`` and fit it in ``size`` x ``size`` pixels (any thread; raises DecodeError)."""
    rgb = read_image(path, max_side=max(4 * size, 512))
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return to_qimage(rgb)


def placeholder_pixmap(size: int, color: str = "#8a909a", alpha: int = 60) -> QPixmap:
    """A rounded grey square shown until a thumbnail is decoded."""
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pm)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    c = QColor(color)
    c.setAlpha(alpha)
    painter.setBrush(c)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.drawRoundedRect(4, 4, size - 8, size - 8, 8, 8)
    painter.end()
    return pm


class _Emitter(QObject):
    decoded = Signal(object)  # Thumbnail, emitted from worker threads, delivered on the GUI thread


class _DecodeTask(QRunnable):
    """Pops requests from the loader's stack until it is empty (runs on a pool thread, touches no widget)."""

    def __init__(self, loader: "ThumbnailLoader") -> None:
        super().__init__()
        self.loader = loader

    def run(self) -> None:
        loader = self.loader
        while True:
            path = loader._next_request()
            if path is None:
                return
            try:
                thumb = Thumbnail(path, decode_thumbnail(path, loader.size))
            except DecodeError as exc:
                thumb = Thumbnail(path, None, f"{exc.reason} {exc.detail}".strip())
            except Exception as exc:  # noqa: BLE001 - a bad file must never kill the worker
                log.exception("thumbnail of %s failed", path)
                thumb = Thumbnail(path, None, str(exc))
            try:
                loader._emitter.decoded.emit(thumb)
            except RuntimeError:  # the loader was deleted while we decoded
                return


class ThumbnailLoader(QObject):
    """Decodes thumbnails on its own thread pool; ``thumbnail_changed`` says when one is ready."""

    thumbnail_changed = Signal(object)  # Thumbnail

    def __init__(self, size: int = 128, cache_size: int = 1500, max_pending: int = 256, threads: int = 2,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.size = size
        self.cache_size = cache_size
        self.max_pending = max_pending
        self.placeholder = placeholder_pixmap(size)
        self.broken = placeholder_pixmap(size, "#d03b3b", 90)
        self._cache: OrderedDict[str, QPixmap] = OrderedDict()
        self._failed: dict[str, str] = {}
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._inflight: set[str] = set()
        self._lock = threading.Lock()
        self._running = 0
        self._closed = False
        self.requested = 0  # how many decodes were asked (tests check that only visible rows ask)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max(1, threads))
        self._emitter = _Emitter()
        self._emitter.decoded.connect(self._on_emitter_decoded, Qt.ConnectionType.QueuedConnection)

    # -- GUI thread -------------------------------------------------------------------------------------------
    def pixmap(self, path: str) -> QPixmap:
        """The cached thumbnail of ``path``; otherwise the placeholder, and a decode request is queued."""
        pm = self._cache.get(path)
        if pm is not None:
            self._cache.move_to_end(path)
            return pm
        if path in self._failed:
            return self.broken
        self.request(path)
        return self.placeholder

    def error(self, path: str) -> str:
        return self._failed.get(path, "")

    def request(self, path: str) -> None:
        """Queue ``path`` (newest first); start a pool task if fewer than the pool's threads are running."""
        with self._lock:
            if self._closed or path in self._inflight:
                return
            if path in self._pending:
                self._pending.move_to_end(path)
            else:
                self._pending[path] = None
                self.requested += 1
                trim_oldest(self._pending, self.max_pending)
            start = self._running < self.pool.maxThreadCount()
            if start:
                self._running += 1
        if start:
            self.pool.start(_DecodeTask(self))

    def clear_pending(self) -> None:
        """Forget every queued request (e.g. when the folder or the filter changes)."""
        with self._lock:
            self._pending.clear()

    def is_idle(self) -> bool:
        with self._lock:
            return not self._pending and not self._inflight

    def close(self, wait_ms: int = 3000) -> None:
        """Stop taking requests and wait for the decoding threads."""
        with self._lock:
            self._closed = True
            self._pending.clear()
        self.pool.waitForDone(wait_ms)

    @Slot(object)
    def _on_emitter_decoded(self, thumb: Thumbnail) -> None:
        with self._lock:
            self._inflight.discard(thumb.path)
        if thumb.image is None:
            self._failed[thumb.path] = thumb.error
        else:
            self._cache[thumb.path] = QPixmap.fromImage(thumb.image)
            trim_oldest(self._cache, self.cache_size)
        self.thumbnail_changed.emit(thumb)

    # -- pool threads -----------------------------------------------------------------------------------------
    def _next_request(self) -> str | None:
        with self._lock:
            if self._closed or not self._pending:
                self._running -= 1
                return None
            path, _ = self._pending.popitem(last=True)
            self._inflight.add(path)
            return path
