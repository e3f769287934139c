"""The log panel: Python ``logging`` records, from any thread, shown in a dock on the GUI thread.

:class:`QtLogHandler` turns each record into a :class:`~app.state.LogEntry` and emits it through a Qt signal;
the signal's queued connection marshals it onto the GUI thread, so logging from a worker never touches a widget.
"""

from __future__ import annotations

import logging
import time

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtGui import QColor, QTextCharFormat
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from .state import LogEntry

log = logging.getLogger(__name__)

LEVELS = {"Debug": logging.DEBUG, "Info": logging.INFO, "Warning": logging.WARNING, "Error": logging.ERROR}


class _Emitter(QObject):
    entry_logged = Signal(object)  # LogEntry


class QtLogHandler(logging.Handler):
    """A logging handler that re-emits records as :class:`LogEntry` on the ``entry_logged`` signal."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.emitter = _Emitter()
        self.entry_logged = self.emitter.entry_logged

    def emit(self, record: logging.LogRecord) -> None:  # noqa: D401 - logging API
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self.emitter.entry_logged.emit(LogEntry(record.levelno, record.levelname, record.name, message,
                                                    record.created))
        except RuntimeError:  # the emitter's C++ side is gone (application shutting down)
            pass
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class LogPanel(QWidget):
    """A read-only, bounded text view of log entries with a level filter."""

    def __init__(self, parent: QWidget | None = None, max_lines: int = 5000) -> None:
        super().__init__(parent)
        self.view = QPlainTextEdit(self)
        self.view.setReadOnly(True)
        self.view.setMaximumBlockCount(max_lines)
        self.view.setObjectName("logView")
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.level_box = QComboBox(self)
        self.level_box.addItems(list(LEVELS))
        self.level_box.setCurrentText("Info")
        self.level_box.setToolTip("Lowest level of new messages to show")
        clear = QPushButton("Clear", self)
        clear.clicked.connect(self.view.clear)
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addStretch(1)
        bar.addWidget(self.level_box)
        bar.addWidget(clear)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 4)
        lay.addLayout(bar)
        lay.addWidget(self.view)
        self._colors = {logging.WARNING: QColor("#c77c02"), logging.ERROR: QColor("#d03b3b")}

    @property
    def min_level(self) -> int:
        return LEVELS[self.level_box.currentText()]

    @Slot(object)
    def add_entry(self, entry: LogEntry) -> None:
        """Append one entry (GUI thread only)."""
        if entry.level < self.min_level:
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(entry.created))
        fmt = QTextCharFormat()
        color = next((c for lvl, c in sorted(self._colors.items(), reverse=True) if entry.level >= lvl), None)
        if color is not None:
            fmt.setForeground(color)
        cursor = self.view.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        if not self.view.document().isEmpty():
            cursor.insertBlock()
        cursor.insertText(f"{stamp} {entry.level_name:<7} {entry.name}: {entry.message}", fmt)
        self.view.verticalScrollBar().setValue(self.view.verticalScrollBar().maximum())

    def text(self) -> str:
        return self.view.toPlainText()


def install_handler(panel: LogPanel, level: int = logging.INFO) -> QtLogHandler:
    """Attach a :class:`QtLogHandler` to the root logger, feeding ``panel``; returns it (remove it on close)."""
    handler = QtLogHandler(level)
    handler.entry_logged.connect(panel.add_entry, Qt.ConnectionType.QueuedConnection)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    return handler
