"""Small widget helpers that more than one workspace uses."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTableWidgetItem


def table_item(text: object, align_right: bool = False) -> QTableWidgetItem:
    """A read-only, selectable table cell (numbers right-aligned)."""
    it = QTableWidgetItem(str(text))
    it.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if align_right:
        it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return it


def state_property(name: str) -> property:
    """A read-only property of a page that gives its ``state``'s attribute ``name`` (the page draws a Qt-free
    state object; readers of the page see the same values)."""
    return property(lambda page: getattr(page.state, name), doc=f"The page state's ``{name}`` (read-only).")
