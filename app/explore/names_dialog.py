"""Propose part names from a CUB-layout folder's keypoints, and let the user accept or edit each one.

The job (:func:`app.explore.compute.propose_job`) drives :func:`engine.fieldmarks.propose_names` on a worker lane: for each part, the
CUB keypoint nearest its centroid most often over the training images, with how often. The dialog shows its
progress with Cancel, then one row per part (part, keypoint, share of the images where it was active), a name
to edit (the keypoint, or the name the part already has) and an Accept box, ticked as
:func:`engine.fieldmarks.accepted_names` would name the parts (unnamed parts only, a keypoint once); Save writes
the accepted names with :func:`engine.fieldmarks.write_part_names`, the others keep their current names. A
background / habitat part (its peak seldom on the bird) gets no proposal: its row says so and why, unticked.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QHBoxLayout, QHeaderView, QLabel,
                               QProgressBar, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from engine.errors import EngineError
from engine.events import Message, Progress
from engine.fieldmarks import accepted_names, part_label, read_part_names, write_part_names
from engine.fieldmarks.names import NEVER_ACTIVE

from ..common.lane import Lane
from ..common.text import error_text
from .compute import propose_job

if TYPE_CHECKING:
    from engine.fieldmarks import NameProposal

log = logging.getLogger(__name__)

COLUMNS = ("Accept", "Part", "Nearest keypoint", "Share", "Name")


class ProposeNamesDialog(QDialog):
    """Propose names for the parts of the run at ``run`` from the CUB-layout folder ``data``; ``names_saved``
    carries the run's new names once the user saves."""

    names_saved = Signal(object)  # dict[int, str]

    def __init__(self, run: str, data: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Propose part names")
        self.setObjectName("proposeNamesDialog")
        self.run, self.data = run, data
        self.lane = Lane(self, "names")
        self.proposals: list[NameProposal] = []
        self.error = ""
        self.intro = QLabel(f"Each part on the bird gets the CUB keypoint nearest its centre most often over the "
                            f"training images of {data} (a background / habitat part gets none). Accept or edit "
                            "each name, then save.", self)
        self.intro.setWordWrap(True)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 0)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.clicked.connect(self._on_cancel_button_clicked)
        row = QHBoxLayout()
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        self.message = QLabel("Looking at the training images…", self)
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setEnabled(False)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Close,
                                        self)
        self.save_button = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        self.save_button.setEnabled(False)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.intro)
        lay.addLayout(row)
        lay.addWidget(self.message)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.buttons)
        self.resize(620, 420)

    def start(self) -> None:
        """Start the proposal job (progress in the bar; Cancel stops it)."""
        self.cancel_button.setEnabled(True)
        self.lane.submit(propose_job, self.run, self.data, on_returned=self._on_lane_returned,
                         on_errored=self._on_lane_errored, on_yielded=self._on_lane_yielded,
                         on_finished=self._on_lane_finished)

    def is_idle(self) -> bool:
        return self.lane.is_idle()

    # -- the rows --------------------------------------------------------------------------------------------
    def _fill(self, proposals: list[NameProposal], names: dict[int, str]) -> list[str]:
        """One row per proposal: ticked where :func:`engine.fieldmarks.accepted_names` would name the part (an
        unnamed part whose keypoint no other part takes with a larger share); returns its notes."""
        filled, notes = accepted_names(proposals, names)
        self.table.setRowCount(len(proposals))
        for row, p in enumerate(proposals):
            accept = QTableWidgetItem()
            accept.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
            new = p.part not in names and p.part in filled
            accept.setCheckState(Qt.CheckState.Checked if new else Qt.CheckState.Unchecked)
            background = p.background
            if p.keypoint:
                found, share = p.keypoint, f"{100 * p.share:.0f} % of {p.images}"
            elif background:
                found, share = "— background / habitat", f"on the bird {100 * (p.on_bird or 0.0):.0f} %"
            else:
                found, share = "—", "never active" if p.reason == NEVER_ACTIVE else "no visible keypoint"
            cells = [accept, QTableWidgetItem(f"{p.part + 1}  {part_label(p.part, names)}"), QTableWidgetItem(found),
                     QTableWidgetItem(share), QTableWidgetItem(names.get(p.part) or filled.get(p.part) or p.keypoint)]
            for col, item in enumerate(cells):
                if col in (1, 2, 3):
                    item.setFlags(Qt.ItemFlag.ItemIsEnabled)
                if p.reason:
                    item.setToolTip(f"No name proposed: {p.reason}")
                self.table.setItem(row, col, item)
        self.table.setEnabled(True)
        return notes

    def accepted_names(self) -> dict[int, str]:
        """The run's names after a save: the current ones, with each accepted row's edited name."""
        names = read_part_names(self.run)
        for row, p in enumerate(self.proposals):
            if self.table.item(row, 0).checkState() == Qt.CheckState.Checked:
                names[p.part] = self.table.item(row, 4).text().strip()
        return names

    @Slot()
    def save(self) -> None:
        """Write the accepted names; an error (a name twice, a bad character) is shown and the dialog stays."""
        try:
            names = self.accepted_names()
            write_part_names(self.run, names)
            saved = read_part_names(self.run)
        except EngineError as exc:
            self.error = str(exc)
            self.message.setText(f"Not saved: {exc} Edit the name and save again.")
            return
        log.info("part names of %s: %s", self.run, saved)
        self.names_saved.emit(saved)
        self.accept()

    # -- the job ---------------------------------------------------------------------------------------------
    @Slot()
    def _on_cancel_button_clicked(self) -> None:
        self.lane.cancel()
        self.message.setText("Cancelled: no names were proposed.")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.cancel_button.setEnabled(False)

    def _on_lane_yielded(self, event) -> None:
        if isinstance(event, Message):
            log.warning("proposing part names: %s", event.text)
        elif isinstance(event, Progress) and event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)
            self.message.setText(f"Looking at the training images… {event.done} of {event.total}")

    def _on_lane_returned(self, proposals: list[NameProposal]) -> None:
        self.proposals = sorted(proposals, key=lambda p: p.part)
        try:
            names = read_part_names(self.run)
        except EngineError as exc:
            self.message.setText(f"{exc}")
            return
        notes = self._fill(self.proposals, names)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.message.setText(" ".join(["Tick the names to keep and edit any of them; the unticked parts keep their "
                                       "names.", *(f"{n[0].upper()}{n[1:]}." for n in notes)]))
        self.save_button.setEnabled(bool(self.proposals))

    def _on_lane_errored(self, exc: BaseException) -> None:
        self.error = error_text(exc)
        log.error("cannot propose part names: %s", self.error)
        self.message.setText(f"Cannot propose names: {self.error}")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def _on_lane_finished(self) -> None:
        self.cancel_button.setEnabled(False)

    def done(self, result: int) -> None:  # noqa: D102 - QDialog API: stop the job when the dialog closes
        self.lane.shutdown()
        super().done(result)
