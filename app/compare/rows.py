"""The separating parts of a pair, drawn as rows (for a ``parts`` run): per part its colour swatch (the shared
part palette, as in Explore's part map), its name, its separation as a bar with the figure, its on-bird share
(when the run's are known), and its strongest crops from species A beside those from species B; the selected
row's crops again, larger, below the rows.

By default the parts on the bird are ranked first and the background / habitat parts (:mod:`engine.fieldmarks.
onbird`: their peak seldom on the bird) follow under their own heading, ranked the same way; "Rank all parts
together" shows one ranking. A birder reads down the bars: the long ones at the top are where the two species
differ (the crown), the short ones at the bottom where they look alike (the tail).
"""

from __future__ import annotations

from typing import Sequence

from PySide6.QtCore import QSize, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from engine.fieldmarks.onbird import PartPlace

from .partrow import BAR_WIDTH, FULL_BAR, GAP, NAME_WIDTH, SHARE_WIDTH, THUMB, PartRowWidget, SelectedPart
from .separation import PairSeparation, PartRow
from .state import BACKGROUND, NO_PART_ON_BIRD, RowPlan, RowSelection, place_tip, plan_rows, share_text, species

class SeparationView(QWidget):
    """The ranked rows of a pair and the selected part, larger. ``row_selected`` carries a RowSelection.

    With the run's on-bird shares (``places``) and not ``together``, the parts on the bird come first
    (``bird_rows``), then under ``background_header`` the background / habitat parts (``background_rows``); ``rows``
    is every row in the order shown (the keys 1-9 count through both groups). The rows of a pair are filled once:
    :meth:`arrange` (new shares, the toggle) only moves them; a new pair refills the rows of the last."""

    row_selected = Signal(object)  # RowSelection

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.separation: PairSeparation | None = None
        self.names: tuple[str, str] = ("", "")
        self.rows: list[PartRowWidget] = []
        self.bird_rows: list[PartRowWidget] = []
        self.background_rows: list[PartRowWidget] = []
        self.grouped = False  # the rows are split into on the bird / background
        self.current = -1
        self._widgets: dict[int, PartRowWidget] = {}  # part -> its row, for the pair shown
        self._spare: list[PartRowWidget] = []  # rows of earlier pairs, hidden, refilled by the next pair
        self._header_for: tuple = ()
        self.title = QLabel("", self)
        self.title.setObjectName("sectionTitle")
        self.title.setWordWrap(True)
        self.note = QLabel("", self)  # no part on the bird, the shares still being computed, or why they are not
        self.note.setObjectName("promptLabel")
        self.note.setWordWrap(True)
        self.note.setVisible(False)
        self.header = QWidget(self)
        self.header_lay = QHBoxLayout(self.header)
        self.header_lay.setContentsMargins(8, 0, 8, 0)
        self.header_lay.setSpacing(8)
        self.list = QWidget(self)
        self.list_lay = QVBoxLayout(self.list)
        self.list_lay.setContentsMargins(0, 0, 0, 0)
        self.list_lay.setSpacing(2)
        self.background_header = QLabel(BACKGROUND, self.list)
        self.background_header.setObjectName("backgroundHeader")
        self.background_header.setWordWrap(True)
        self.background_header.setContentsMargins(8, 8, 8, 2)
        self.background_header.setVisible(False)
        self.scroll = QScrollArea(self)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setWidget(self.list)
        self.detail = SelectedPart(self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 4)
        lay.addWidget(self.title)
        lay.addWidget(self.note)
        lay.addWidget(self.header)
        lay.addWidget(self.scroll, 1)
        lay.addWidget(self.detail)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(1100, 700)

    def show_pair(self, separation: PairSeparation | None, names: tuple[str, str], text: str = "",
                  places: Sequence[PartPlace] | None = None, together: bool = False, note: str = "") -> None:
        """Rows for ``separation`` (None: ``text`` instead, e.g. "computing…"), laid out by :meth:`arrange`."""
        self._spare.extend(self._widgets.values())  # kept for the next pair's rows
        self._widgets, self._header_for = {}, ()
        self.separation, self.names = separation, names
        self.current = -1
        if separation is None:
            self._take_rows()
            for w in self._spare:
                w.setVisible(False)
            self.rows, self.bird_rows, self.background_rows = [], [], []
            self.title.setText(text)
            self.note.setVisible(False)
            self.header.setVisible(False)
            self.grouped = False
            self.detail.show_row(None, names)
            return
        self.arrange(places, together, note)

    def arrange(self, places: Sequence[PartPlace] | None = None, together: bool = False, note: str = "") -> None:
        """Lay the pair's rows out: grouped by ``places`` (the run's on-bird shares) unless ``together`` or
        ``places`` is None (then one ranking); ``note`` above the rows (e.g. why they are not grouped yet). The
        selected part stays selected."""
        separation = self.separation
        if separation is None:
            return
        plan = plan_rows(separation, self.names, places, together, note)
        self.grouped = plan.grouped
        self.title.setText(plan.title)
        self.note.setText(plan.note)
        self.note.setVisible(bool(plan.note))
        self._set_header(plan.a, plan.b, separation.crops, plan.shares)
        selected = self.rows[self.current].row.part if 0 <= self.current < len(self.rows) else None
        self._lay_rows(plan, max([FULL_BAR] + [r.separation for r in separation.rows]), separation.crops)
        index = next((i for i, w in enumerate(self.rows) if w.row.part == selected), -1)
        if index >= 0 and self.detail.row is self.rows[index].row:  # the same part: its crops stay
            self.current = index
            for i, w in enumerate(self.rows):
                w.set_selected(i == index)
            self.detail.set_title(self.rows[index].row, self.names, self.rows[index].place)
            self.row_selected.emit(RowSelection(index, self.rows[index].row.part))
        else:
            self.current = -1
            self.select(0 if self.rows else -1)

    def _lay_rows(self, plan: RowPlan, scale: float, slots: int) -> None:
        """Put the plan's rows in the list, on the bird first, then the background under its header (each part's
        row filled once per pair); hide the rest."""
        self._take_rows()
        self.rows, self.bird_rows, self.background_rows = [], [], []
        for group, out in ((plan.bird, self.bird_rows), (plan.background, self.background_rows)):
            if group is plan.background and plan.background:
                self.list_lay.addWidget(self.background_header)
                self.background_header.setVisible(True)
            for row in group:
                w = self._widgets.get(row.part) or self._row_widget(row, scale, slots)
                w.set_index(len(self.rows))
                w.set_place(plan.where.get(row.part), plan.shares)
                self.list_lay.addWidget(w)
                w.setVisible(True)
                self.rows.append(w)
                out.append(w)
        self.list_lay.addStretch(1)
        for w in (set(self._widgets.values()) | set(self._spare)) - set(self.rows):
            w.setVisible(False)

    def _row_widget(self, row: PartRow, scale: float, slots: int) -> PartRowWidget:
        """Part ``row``'s widget for the pair shown: a row of an earlier pair refilled (cheaper), else a new one."""
        if self._spare:
            w = self._spare.pop()
            w.set_row(row, scale, slots)
        else:
            w = PartRowWidget(len(self.rows), row, scale, slots, self.list)
            w.clicked.connect(self.select)
        self._widgets[row.part] = w
        return w

    def _take_rows(self) -> None:
        """Empty the list's layout (the rows are kept for :meth:`arrange`)."""
        while self.list_lay.count():
            self.list_lay.takeAt(0)
        self.background_header.setVisible(False)

    def _set_header(self, a: str, b: str, slots: int, shares: bool) -> None:
        if self._header_for == (a, b, slots, shares):
            self.header.setVisible(True)
            return
        self._header_for = (a, b, slots, shares)
        while self.header_lay.count():
            w = self.header_lay.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        columns = [("", 12 + 8 + 14), ("Part", NAME_WIDTH), ("Separation", BAR_WIDTH)]
        columns += [("On bird", SHARE_WIDTH)] if shares else []
        for text_, width in (*columns, (a, slots * (THUMB + 3)), (b, slots * (THUMB + 3))):
            lab = QLabel(text_, self.header)
            lab.setFixedWidth(width)
            if text_ in (a, b):
                lab.setToolTip(f"the {'strongest' if text_ == a else 'weakest'} margins (part score A − B) "
                               "among this species' test images")
            elif text_ == "On bird":
                lab.setToolTip("The share of the part's active training photos with its peak on the bird")
            self.header_lay.addWidget(lab)
            if text_ == a:
                self.header_lay.addSpacing(GAP)
        self.header_lay.addStretch(1)
        self.header.setVisible(True)

    def select(self, index: int) -> None:
        """Highlight row ``index`` (0-based) and show its crops larger; out of range: nothing changes."""
        if not -1 <= index < len(self.rows):
            return
        self.current = index
        for i, w in enumerate(self.rows):
            w.set_selected(i == index)
        row = self.rows[index].row if index >= 0 else None
        self.detail.show_row(row, self.names, self.rows[index].place if index >= 0 else None)
        if index >= 0:
            self.scroll.ensureWidgetVisible(self.rows[index])
        self.row_selected.emit(RowSelection(index, row.part if row is not None else -1))

    def relabel(self, labels: dict[int, str]) -> None:
        """Show new part names (``labels``: part → label) without recomputing."""
        for w in self.rows:
            if w.row.part in labels and labels[w.row.part] != w.row.label:
                w.set_label(labels[w.row.part])
        if self.current >= 0:
            self.select(self.current)


__all__ = ["SeparationView", "PartRowWidget", "RowSelection", "species", "share_text", "place_tip", "BACKGROUND",
           "NO_PART_ON_BIRD"]
