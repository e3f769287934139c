"""The one path helper for bundled resources (icons, themes), from source or from a PyInstaller bundle."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def resources_root() -> Path:
    """The ``resources/`` folder: ``sys._MEIPASS/resources`` in a frozen app, else the repository's."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def resource_path(*parts: str) -> Path:
    """Path of a resource file, e.g. ``resource_path("icons", "fieldmark.svg")``."""
    return resources_root().joinpath(*parts)


def read_text(*parts: str) -> str:
    """A text resource's content, or "" (with a warning) when it is missing."""
    path = resource_path(*parts)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        log.warning("resource %s is missing (%s)", path, exc)
        return ""


def app_icon():
    """The application icon as a QIcon (imported lazily: this module has no Qt at import)."""
    from PySide6.QtGui import QIcon

    return QIcon(str(resource_path("icons", "fieldmark.svg")))
