"""QSettings in one place: organisation "Fieldmark", application "Fieldmark"; recent folders and runs.

Tests and tools point the settings at a private INI file with :func:`use_settings_file` so that they never touch
the user's own settings.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QSettings

log = logging.getLogger(__name__)

ORGANISATION = "Fieldmark"
APPLICATION = "Fieldmark"
MAX_RECENT = 8
RECENT_FOLDERS = "recent/folders"
RECENT_RUNS = "recent/runs"
LAST_FOLDER = "session/folder"
LAST_RUN = "session/run"
THEME = "view/theme"

_override: str | None = None


def use_settings_file(path: str | Path | None) -> None:
    """Read and write settings in the INI file ``path`` from now on (None: back to the user's settings)."""
    global _override
    _override = None if path is None else str(path)


def settings() -> QSettings:
    """A QSettings for Fieldmark (the override file when one is set)."""
    if _override is not None:
        return QSettings(_override, QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANISATION, APPLICATION)


def get_str(key: str, default: str = "") -> str:
    value = settings().value(key, default)
    return str(value) if value is not None else default


def set_value(key: str, value: object) -> None:
    s = settings()
    s.setValue(key, value)
    s.sync()


def recent(key: str) -> list[str]:
    """The recent list under ``key``, newest first, without entries that no longer exist on disk."""
    value = settings().value(key, [])
    if isinstance(value, str):
        value = [value] if value else []
    return [str(v) for v in (value or []) if v and Path(str(v)).exists()]


def add_recent(key: str, path: str) -> list[str]:
    """Put ``path`` first in the recent list under ``key``; returns the new list."""
    path = str(Path(path).expanduser().resolve())
    items = [path] + [p for p in recent(key) if p != path]
    items = items[:MAX_RECENT]
    set_value(key, items)
    return items
