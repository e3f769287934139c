"""Help ▸ Keyboard: every key of the app, by where it works.

:data:`KEYS` is the one list; the dialog shows it as a table. Workspace keys (Ctrl+1…) follow the window's
workspaces, so the list names them from the window it opens for.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QHeaderView, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

#: (where, keys, what they do), in the order shown
KEYS: tuple[tuple[str, str, str], ...] = (
    ("Everywhere", "Ctrl+O", "Open a data folder in the Library"),
    ("Everywhere", "Ctrl+Shift+O", "Open a run folder as the active run"),
    ("Everywhere", "Ctrl+Q", "Quit"),
    ("Library", "Arrow keys", "Move through the images of the grid"),
    ("Explore", "Left / Up", "Previous image"),
    ("Explore", "Right / Down", "Next image"),
    ("Explore", "1 – 9", "All parts: show part 1–9 alone (One map: overlay map 1–9)"),
    ("Explore", "0 or Esc", "All parts: show all parts again"),
    ("Explore", "Double-click a part (legend or crop), F2", "Name the part; Enter saves, Esc cancels"),
    ("Compare", "Left / Right", "Previous / next pair of species in the pair list"),
    ("Compare", "1 – 9", "Select separating-part row 1–9 (a parts run)"),
)


def key_rows(workspaces: list[str] | None = None) -> list[tuple[str, str, str]]:
    """The rows of the dialog: :data:`KEYS` with the workspace switches (Ctrl+1 Library, …) after the global
    keys; key names in the platform's spelling (⌘ on macOS)."""
    def native(keys: str) -> str:
        if "+" not in keys or " " in keys:
            return keys
        return QKeySequence(keys).toString(QKeySequence.SequenceFormat.NativeText) or keys

    rows = [(where, native(keys), what) for where, keys, what in KEYS]
    switches = [("Everywhere", native(f"Ctrl+{i + 1}"), f"Show the {name} workspace")
                for i, name in enumerate((workspaces or [])[:9])]
    n = sum(1 for r in rows if r[0] == "Everywhere")
    return rows[:n] + switches + rows[n:]


class KeyboardDialog(QDialog):
    """A table of every key of the app."""

    def __init__(self, workspaces: list[str] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard")
        self.setObjectName("keyboardDialog")
        rows = key_rows(workspaces)
        self.table = QTableWidget(len(rows), 3, self)
        self.table.setHorizontalHeaderLabels(["Where", "Keys", "Action"])
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setWordWrap(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                self.table.setItem(r, c, QTableWidgetItem(text))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.table)
        lay.addWidget(buttons)
        row = self.fontMetrics().height() + 5  # every row in view, without scrolling
        self.resize(780, min(760, row * (len(rows) + 1) + 80))

    def rows(self) -> list[tuple[str, str, str]]:
        """The table's text (facts for tests)."""
        return [tuple(self.table.item(r, c).text() for c in range(3)) for r in range(self.table.rowCount())]
