"""The Export workspace: :func:`engine.export.crops.export_parts` with its options, a progress bar with Cancel, and a
summary with a button that opens the output folder.

The export runs on a worker thread (it is I/O-bound and checks ``should_stop`` between batches). Cancelling keeps
every finished batch, and running the same export again resumes where it stopped (the engine's ``done.jsonl``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Generator

from PySide6.QtCore import QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from engine.data import DataReport
from engine.events import Message, Progress
from engine.export.crops import ExportSummary
from engine.runs import RunInfo

from ..common.lane import Lane
from ..common.text import error_text
from ..common.tokens import TokenLike

log = logging.getLogger(__name__)

IDLE, RUNNING, CANCELLING, CANCELLED, FINISHED, FAILED = ("idle", "running", "cancelling", "cancelled", "finished",
                                                           "failed")


@dataclass(frozen=True)
class ExportOptions:
    """One export, as the form describes it."""

    run: str
    out: str
    split: str = "test"
    crop_size: int = 128
    min_score: float = 0.0
    append: bool = False
    method: str = "channels"
    batch_size: int = 8


@dataclass(frozen=True)
class ExportState:
    """The export job: its status, progress and, once finished, its summary."""

    status: str
    done: int = 0
    total: int = 0
    summary: ExportSummary | None = None
    error: str = ""


def export_job(options: ExportOptions, report: DataReport,
               token: TokenLike) -> Generator[Progress | Message, None, ExportSummary]:
    """The worker's job: load the run and drive :func:`engine.export.crops.export_parts` (Cancelled when stale),
    which exports from the run's saved split and says in Message events how the data differs from it."""
    from engine.export.crops import export_parts
    from engine.runs import load_run

    run = load_run(options.run)
    return (yield from export_parts(run, report, options.out, split=options.split, crop_size=options.crop_size,
                                    min_score=options.min_score, append=options.append, method=options.method,
                                    batch_size=options.batch_size, should_stop=token.is_stale))


def default_out(run: str) -> str:
    """The default output folder: ``<run folder>-parts`` beside the run."""
    p = Path(run)
    return str(p.parent / f"{p.name}-parts")


class ExportPage(QWidget):
    """Export the active run's parts for the library's data set."""

    export_changed = Signal(object)  # ExportState

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lane = Lane(self, "export")
        self.run: RunInfo | None = None
        self.report: DataReport | None = None
        self._notes: list[str] = []  # the running export's lines about the data (the run's saved split)
        self.state = ExportState(IDLE)
        self.batch_size = 8

        self.run_label = QLabel("none", self)
        self.data_label = QLabel("none", self)
        for lab in (self.run_label, self.data_label):
            lab.setWordWrap(True)
        self.split = QComboBox(self)
        for text, value in (("Test", "test"), ("Train", "train"), ("All images", "all")):
            self.split.addItem(text, value)
        self.crop_size = QSpinBox(self)
        self.crop_size.setRange(0, 1024)
        self.crop_size.setValue(128)
        self.crop_size.setSuffix(" px")
        self.crop_size.setSpecialValueText("own size")
        self.min_score = QDoubleSpinBox(self)
        self.min_score.setRange(0.0, 1.0)
        self.min_score.setSingleStep(0.05)
        self.min_score.setDecimals(2)
        self.min_score.setToolTip("Skip parts whose peak is below this share of the image's strongest part")
        self.out = QLineEdit(self)
        self.out.setPlaceholderText("Output folder")
        self.out.textChanged.connect(lambda _text: self._update())
        self.choose_button = QPushButton("Choose…", self)
        self.choose_button.clicked.connect(self._on_choose_button_clicked)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out, 1)
        out_row.addWidget(self.choose_button)
        self.append = QCheckBox("Add to an existing export in this folder", self)
        form = QFormLayout()
        form.addRow("Run", self.run_label)
        form.addRow("Data", self.data_label)
        form.addRow("Split", self.split)
        form.addRow("Crop size", self.crop_size)
        form.addRow("Minimum score", self.min_score)
        form.addRow("Output folder", out_row)
        form.addRow("", self.append)
        self.export_button = QPushButton("Export", self)
        self.export_button.setObjectName("primaryButton")
        self.export_button.clicked.connect(self._on_export_button_clicked)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.clicked.connect(self._on_cancel_button_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        self.progress = QProgressBar(self)
        self.summary = QLabel("", self)
        self.summary.setWordWrap(True)
        self.open_button = QPushButton("Open Folder", self)
        self.open_button.clicked.connect(self._on_open_button_clicked)
        title = QLabel("Export the discovered parts as a data set", self)
        title.setObjectName("sectionTitle")
        hint = QLabel("Crops go to <i>folder/class/part_k/</i>, with <i>parts.csv</i> and COCO keypoints in "
                      "<i>parts_coco.json</i>. A cancelled export keeps what it wrote; export again to resume.", self)
        hint.setWordWrap(True)
        box = QWidget(self)
        box.setMaximumWidth(720)
        bl = QVBoxLayout(box)
        bl.addWidget(title)
        bl.addWidget(hint)
        bl.addLayout(form)
        bl.addLayout(buttons)
        bl.addWidget(self.progress)
        bl.addWidget(self.summary)
        bl.addWidget(self.open_button)
        bl.addStretch(1)
        lay = QHBoxLayout(self)
        lay.addWidget(box, 1)
        lay.addStretch(0)
        self._update()

    # -- inputs ----------------------------------------------------------------------------------------------
    def set_run(self, ref: RunInfo | None) -> None:
        self.run = ref
        self.run_label.setText(ref.summary() if ref else "none")
        if ref is not None and self.state.status not in (RUNNING, CANCELLING):
            self.out.setText(default_out(ref.path))
        self._update()

    def set_data(self, report: DataReport | None) -> None:
        self.report = report
        self.data_label.setText(f"{report.root} ({report.layout}, {len(report.samples):,} images)" if report
                                else "none")
        self._update()

    def options(self) -> ExportOptions:
        """The export the form describes (the run must be set)."""
        method = self.run.method if self.run is not None and self.run.method in ("tasn", "racnn") else "channels"
        return ExportOptions(self.run.path if self.run else "", self.out.text().strip(), self.split.currentData(),
                             self.crop_size.value(), round(self.min_score.value(), 4), self.append.isChecked(),
                             method, self.batch_size)

    def problem(self) -> str:
        """Why the export cannot start now ("" when it can)."""
        if self.run is None:
            return "Open a run first (Train, or File ▸ Open Run…)."
        if self.report is None:
            return "Open the data folder to export in the Library."
        if not self.out.text().strip():
            return "Choose an output folder."
        return ""

    # -- the job ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or resume) the export described by the form."""
        why = self.problem()
        if why or self.report is None or self.is_running():
            self.summary.setText(why)
            return
        opts = self.options()
        log.info("export of %s to %s", opts.run, opts.out)
        self._notes = []
        self._set_state(ExportState(RUNNING))
        self.lane.submit(export_job, opts, self.report, on_yielded=self._on_lane_yielded,
                         on_returned=self._on_lane_returned, on_errored=self._on_lane_errored,
                         on_finished=self._on_lane_finished)

    def cancel(self) -> None:
        if self.state.status == RUNNING:
            self.lane.cancel()
            self._set_state(ExportState(CANCELLING, self.state.done, self.state.total))

    def is_running(self) -> bool:
        return not self.lane.is_idle()

    def shutdown(self) -> None:
        self.lane.shutdown()

    def _set_state(self, state: ExportState) -> None:
        self.state = state
        s = state
        if s.total:
            self.progress.setRange(0, s.total)
            self.progress.setValue(s.done)
        if s.status == RUNNING:
            self.summary.setText(f"Exporting… {s.done} of {s.total} images" if s.total else "Exporting…")
        elif s.status == CANCELLING:
            self.summary.setText("Cancelling after the current batch…")
        elif s.status == CANCELLED:
            self.summary.setText(f"Cancelled after {s.done} of {s.total} images. The finished images are kept: "
                                 "export again to resume.")
        elif s.status == FAILED:
            self.summary.setText(f"Export failed: {s.error}")
        elif s.status == FINISHED and s.summary is not None:
            m = s.summary
            failed = f", {len(m.failed)} images could not be read" if m.failed else ""
            self.summary.setText(f"Exported {m.exported} images ({m.crops} crops) to {m.out}; {m.resumed} were done "
                                 f"before{failed}. The folder now holds {m.total_images} images."
                                 + "".join(f"\n{note}" for note in self._notes))
        self._update()
        self.export_changed.emit(state)

    def _update(self) -> None:
        running = self.state.status in (RUNNING, CANCELLING) or not self.lane.is_idle()
        self.export_button.setEnabled(not running and not self.problem())
        self.export_button.setToolTip(self.problem())
        self.export_button.setText("Resume" if self.state.status == CANCELLED else "Export")
        self.cancel_button.setEnabled(self.state.status == RUNNING)
        for w in (self.split, self.crop_size, self.min_score, self.out, self.choose_button, self.append):
            w.setEnabled(not running)
        self.open_button.setEnabled(bool(self.out.text().strip()) and Path(self.out.text().strip()).is_dir())

    # -- slots -----------------------------------------------------------------------------------------------
    def _on_lane_yielded(self, event: Progress | Message) -> None:
        if isinstance(event, Message):  # how the data differs from the run's saved split
            (log.warning if event.level == "warning" else log.info)("export: %s", event.text)
            self._notes.append(event.text)
        if isinstance(event, Progress) and self.state.status == RUNNING:
            self._set_state(ExportState(RUNNING, event.done, event.total))

    def _on_lane_returned(self, summary: ExportSummary) -> None:
        self._set_state(ExportState(FINISHED, self.state.total, self.state.total, summary))

    def _on_lane_errored(self, exc: BaseException) -> None:
        text = error_text(exc)
        log.error("export failed: %s", text)
        self._set_state(ExportState(FAILED, self.state.done, self.state.total, error=text))

    def _on_lane_finished(self) -> None:
        if self.state.status in (RUNNING, CANCELLING):  # ended without a result: it was cancelled
            self._set_state(ExportState(CANCELLED, self.state.done, self.state.total))
        else:
            self._update()

    @Slot()
    def _on_export_button_clicked(self) -> None:
        self.start()

    @Slot()
    def _on_cancel_button_clicked(self) -> None:
        self.cancel()

    @Slot()
    def _on_choose_button_clicked(self) -> None:
        start = self.out.text().strip() or (str(Path(self.run.path).parent) if self.run else str(Path.home()))
        folder = QFileDialog.getExistingDirectory(self, "Export the parts to", start)
        if folder:
            self.out.setText(folder)
            self._update()

    @Slot()
    def _on_open_button_clicked(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(self.out.text().strip()))
