"""Small helpers of the Train form: a number field that may be empty, and a row of widgets."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLineEdit, QWidget

from engine.errors import ConfigError

def optional_number(edit: QLineEdit, name: str, empty: str) -> float | None:
    """The number in ``edit``; None when it is empty (``empty`` says what that means). ConfigError names ``name``."""
    text = edit.text().strip()
    try:
        return float(text) if text else None
    except ValueError:
        raise ConfigError(f"{name}={text!r}: not a number (leave it empty for {empty})") from None


def widget_row(first: QWidget, *rest: QWidget) -> QWidget:
    """``first`` stretched, then ``rest``, in one row (a path and its button; GAIN's check box, then α, σ, ω)."""
    w = QWidget()
    lay = QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(first, 1)
    for widget in rest:
        lay.addWidget(widget)
    return w
