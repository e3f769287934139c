"""Light and dark themes: the Fusion style, a palette, and ``resources/themes/<name>.qss``."""

from __future__ import annotations

import logging

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from .resources import read_text
from .state import ThemeState

log = logging.getLogger(__name__)

THEMES: dict[str, ThemeState] = {
    "light": ThemeState("light", foreground="#1f2328", background="#ffffff", accent="#2f6fbd"),
    "dark": ThemeState("dark", foreground="#d8dce2", background="#1e2126", accent="#5b9be6"),
}

_PALETTES = {
    "light": {"Window": "#f3f4f6", "WindowText": "#1f2328", "Base": "#ffffff", "AlternateBase": "#f0f2f5",
              "Text": "#1f2328", "Button": "#f6f7f9", "ButtonText": "#1f2328", "Highlight": "#2f6fbd",
              "HighlightedText": "#ffffff", "ToolTipBase": "#ffffe6", "ToolTipText": "#1f2328",
              "PlaceholderText": "#7b828c", "Link": "#2f6fbd", "Mid": "#c9cdd3", "Dark": "#a3a8b0"},
    "dark": {"Window": "#25282d", "WindowText": "#d8dce2", "Base": "#1e2126", "AlternateBase": "#272b31",
             "Text": "#d8dce2", "Button": "#2f3339", "ButtonText": "#d8dce2", "Highlight": "#3d7bd0",
             "HighlightedText": "#ffffff", "ToolTipBase": "#33373d", "ToolTipText": "#e6e8eb",
             "PlaceholderText": "#858c96", "Link": "#6aa5ee", "Mid": "#3d4249", "Dark": "#15171a"},
}


def apply_theme(app: QApplication, name: str) -> ThemeState:
    """Apply theme ``name`` ("light" or "dark"; unknown names fall back to light) to ``app``."""
    if name not in THEMES:
        log.warning("theme %r is unknown, using light", name)
        name = "light"
    app.setStyle("Fusion")
    pal = QPalette()
    for role, color in _PALETTES[name].items():
        pal.setColor(getattr(QPalette.ColorRole, role), QColor(color))
    disabled = QColor(_PALETTES[name]["PlaceholderText"])
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    app.setPalette(pal)
    app.setStyleSheet(read_text("themes", f"{name}.qss"))
    return THEMES[name]
