"""Compare's list of the most confused pairs: one row per :class:`~app.compare.compute.Pair` (both names, the
errors both ways, the probability the run gives each to the other), kept in step with the pair on screen."""

from __future__ import annotations

from typing import Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from .compute import Pair


class PairList(QListWidget):
    """The pairs, most confused first; ``pair_at(row)`` gives a row's Pair."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("confusablePairs")
        self.setAlternatingRowColors(True)
        self.setSpacing(1)
        self.setToolTip("Class pairs the run confuses most on the test split: click one (or press Left / Right) to "
                        "compare it")

    def show_pairs(self, pairs: Sequence[Pair], names: Sequence[str]) -> None:
        self.clear()
        for pair in pairs:
            errors = f"{pair.errors} error" + ("" if pair.errors == 1 else "s")
            item = QListWidgetItem(f"{names[pair.a]} ↔ {names[pair.b]}\n{errors} · "
                                   f"{100 * pair.soft:.1f} % probability to each other")
            item.setData(Qt.ItemDataRole.UserRole, pair)
            self.addItem(item)

    def pair_at(self, row: int) -> Pair:
        return self.item(row).data(Qt.ItemDataRole.UserRole)

    def row_of(self, a: int, b: int) -> int:
        """The row of the pair {a, b} (either order), or -1."""
        return next((row for row in range(self.count()) if {self.pair_at(row).a, self.pair_at(row).b} == {a, b}),
                    -1)

    def follow(self, a: int, b: int) -> None:
        """Make the pair {a, b} the current row, or no row when it is not listed."""
        row = self.row_of(a, b)
        if self.currentRow() != row:
            self.setCurrentRow(row)

    def step(self, delta: int, a: int, b: int) -> Pair | None:
        """The pair ``delta`` rows from the one on screen ({a, b}; from the top or bottom when it is not listed),
        made current; None at either end or when the list is empty."""
        n = self.count()
        if not n:
            return None
        row = self.row_of(a, b)
        target = min(max(row + delta, 0), n - 1) if row >= 0 else (0 if delta > 0 else n - 1)
        if target == row:
            return None
        self.setCurrentRow(target)
        return self.pair_at(target)


class PairPanel(QWidget):
    """The pair list under its title, with a status line below (the confusion's figures, or its progress)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = PairList(self)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 0, 0, 0)
        title = QLabel("Most confused pairs (test split)", self)
        title.setObjectName("sectionTitle")
        lay.addWidget(title)
        lay.addWidget(self.list, 1)
        lay.addWidget(self.status)
