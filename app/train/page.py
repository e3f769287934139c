"""The Train workspace: the config form, Start / Stop / Resume, progress and live curves, and past runs.

The run executes in a child process (:class:`~app.train.process.JobProcess` running :mod:`app.child`), so the
window never freezes and a crash or a kill of the child only ends the job.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (QCheckBox, QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton,
                               QScrollArea, QSplitter, QVBoxLayout, QWidget)

from engine.events import BatchEnd, EpochEnd, Finished, Message, Progress, Started
from engine.runs import RunInfo, read_history

from .. import settings as app_settings
from ..state import ThemeState
from .curves import TrainCurves
from .form import ConfigState, TrainForm
from .process import FAILED, FINISHED, JobProcess, JobState
from .runs_panel import RunsPanel

log = logging.getLogger(__name__)

RUNS_FOLDER_KEY = "train/runs_folder"


def default_runs_folder() -> str:
    """The runs folder: the last one used (QSettings), else ~/Fieldmark/runs."""
    return app_settings.get_str(RUNS_FOLDER_KEY) or str(Path.home() / "Fieldmark" / "runs")


def _fmt_s(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class TrainPage(QWidget):
    """Edit a TrainConfig and train it in a child process; list and open past runs."""

    run_open_requested = Signal(object)  # RunInfo
    job_changed = Signal(object)  # JobState

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.job = JobProcess(self)
        self.job.job_changed.connect(self._on_job_job_changed)
        self.job.event_received.connect(self._on_job_event_received)
        self.form = TrainForm(self)
        self.form.config_changed.connect(self._on_form_config_changed)
        scroll = self._build_settings()
        self._build_job_panel()

        right_top = QWidget(self)
        rl = QVBoxLayout(right_top)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.status)
        rl.addWidget(self.progress)
        rl.addWidget(self.error_box)
        rl.addWidget(self.curves, 1)
        right = QSplitter(Qt.Orientation.Vertical, self)
        right.addWidget(right_top)
        right.addWidget(self.runs)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 1)
        main = QSplitter(Qt.Orientation.Horizontal, self)
        main.addWidget(scroll)
        main.addWidget(right)
        main.setStretchFactor(1, 1)
        main.setSizes([470, 1030])  # the settings form at its natural width (GAIN row, file buttons)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(main)

        self.runs_folder = default_runs_folder()
        self._config_state: ConfigState = self.form.state
        self._run_t0 = 0.0
        self._started: Started | None = None
        self._last_status = 0.0
        self.runs.set_folder(self.runs_folder)
        self._update_buttons()

    def _build_settings(self) -> QScrollArea:
        """The left side: the training form with its Start / Stop / Resume buttons, scrollable."""
        self.start_button = QPushButton("Start", self)
        self.start_button.setObjectName("primaryButton")
        self.stop_button = QPushButton("Stop", self)
        self.resume_button = QPushButton("Resume", self)
        self.allow_data_change = QCheckBox("Allow changed data", self)
        self.allow_data_change.setToolTip("Resume even though training photos were removed or changed since the run "
                                          "saved its split (recorded in the run). Photos added since are left out "
                                          "either way. Applies to the next Resume only.")
        self.new_button = QPushButton("New Folder", self)
        self.new_button.setToolTip("Pick a new, unused output folder in the runs folder")
        self.start_button.clicked.connect(lambda: self.start(resume=False))
        self.resume_button.clicked.connect(lambda: self.start(resume=True))
        self.stop_button.clicked.connect(self.stop)
        self.new_button.clicked.connect(self._on_new_button_clicked)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.stop_button, self.resume_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.new_button)
        resume_row = QHBoxLayout()  # its own line: the settings stay as narrow as the form
        resume_row.addStretch(1)
        resume_row.addWidget(self.allow_data_change)

        left = QWidget(self)
        ll = QVBoxLayout(left)
        title = QLabel("Training settings", left)
        title.setObjectName("sectionTitle")
        ll.addWidget(title)
        ll.addWidget(self.form)
        ll.addLayout(buttons)
        ll.addLayout(resume_row)
        ll.addStretch(1)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(left)
        scroll.setMinimumWidth(360)
        return scroll

    def _build_job_panel(self) -> None:
        """The job's widgets on the right: its status, progress, the error box, the curves and the past runs."""
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.status = QLabel("Not running.", self)
        self.status.setObjectName("jobStatus")
        self.error_box = QFrame(self)
        self.error_box.setObjectName("errorBox")
        self.error_title = QLabel(self.error_box)
        self.error_title.setWordWrap(True)
        self.error_details = QPlainTextEdit(self.error_box)
        self.error_details.setReadOnly(True)
        self.error_details.setMaximumHeight(110)
        el = QVBoxLayout(self.error_box)
        el.addWidget(self.error_title)
        el.addWidget(self.error_details)
        self.error_box.setVisible(False)
        self.curves = TrainCurves(self)
        self.runs = RunsPanel(self)
        self.runs.run_open_requested.connect(self.run_open_requested)

    # -- public API ------------------------------------------------------------------------------------------
    def set_data_folder(self, folder: str) -> None:
        """Train on ``folder`` (the library's); suggests a new output folder when none is set."""
        if self.job.is_running():
            return
        current = self.form.data.text().strip()
        if current and os.path.abspath(os.path.expanduser(current)) == os.path.abspath(folder):
            return  # e.g. the data of a run just opened: keep its output folder, so Resume stays possible
        self.form.set_data(folder)
        if not self.form.out.text().strip() or not self._config_state.can_start:
            self.form.set_out(self.form.suggest_out(self.runs_folder))

    def set_runs_folder(self, folder: str) -> None:
        self.runs_folder = folder
        self.runs.set_folder(folder)

    def show_run(self, ref: RunInfo) -> None:
        """Show an opened run: its curves and, when idle, its settings (so Resume continues it)."""
        if self.job.is_running():
            return
        self.curves.set_history(read_history(Path(ref.path)))
        try:
            from engine.runs import read_meta

            cfg = dict(read_meta(ref.path).get("config") or {})
        except Exception as exc:  # noqa: BLE001 - a damaged run only loses the form fill
            log.warning("cannot read the settings of %s: %s", ref.path, exc)
            cfg = {}
        if cfg:
            cfg["out"] = ref.path
            self.form.set_config(cfg)
        self.set_runs_folder(str(Path(ref.path).parent))
        self.status.setText(f"Showing {ref.summary()}")

    def start(self, resume: bool = False) -> None:
        """Start (or resume) training the form's config in a child process."""
        state = self._config_state
        cfg = state.config
        if cfg is None or self.job.is_running() or not (state.can_resume if resume else state.can_start):
            return
        self.error_box.setVisible(False)
        if not resume:
            self.curves.clear()
        else:
            self.curves.set_history(read_history(Path(cfg.out)))
        parent = str(Path(cfg.out).expanduser().parent)
        app_settings.set_value(RUNS_FOLDER_KEY, parent)
        self.set_runs_folder(parent)
        self._started = None
        self._run_t0 = time.monotonic()
        self.progress.setRange(0, 0)
        allow = resume and self.allow_data_change.isChecked()
        self.allow_data_change.setChecked(False)  # one Resume at a time: a change is always accepted on purpose
        args = (["train", "--config", json.dumps(cfg.to_dict())] + (["--resume"] if resume else [])
                + (["--allow-data-change"] if allow else []))
        log.info("%s training %s (%s) -> %s%s", "resuming" if resume else "starting", cfg.model, cfg.method, cfg.out,
                 " (changed data allowed)" if allow else "")
        self.job.start(args, "train", cfg.out)

    @Slot()
    def stop(self) -> None:
        """Ask the running job to stop gracefully."""
        self.job.stop()

    def is_running(self) -> bool:
        return self.job.is_running()

    def apply_theme(self, theme: ThemeState) -> None:
        self.curves.apply_theme(theme)

    # -- slots -----------------------------------------------------------------------------------------------
    @Slot(object)
    def _on_form_config_changed(self, state: ConfigState) -> None:
        self._config_state = state
        self._update_buttons()

    @Slot()
    def _on_new_button_clicked(self) -> None:
        self.form.set_out(self.form.suggest_out(self.runs_folder))

    @Slot(object)
    def _on_job_job_changed(self, state: JobState) -> None:
        self._update_buttons()
        if state.active:
            self.status.setText(state.message or "Starting the training process…")
        else:
            self.progress.setRange(0, 1000)
            if state.status == FINISHED:
                self.progress.setValue(1000)
            self.status.setText(f"Training {state.status}: {state.message}")
            if state.status == FAILED:
                self.error_title.setText(f"<b>Training failed:</b> {state.message} "
                                         f"(exit {'signal ' + str(-state.exit_code) if (state.exit_code or 0) < 0 else state.exit_code})")
                self.error_details.setPlainText("\n".join(state.stderr_tail[-15:]) or "(the process wrote nothing)")
                self.error_box.setVisible(True)
            self.runs.refresh()
            self.form.revalidate()
        self.job_changed.emit(state)

    @Slot(object)
    def _on_job_event_received(self, ev: object) -> None:
        if isinstance(ev, BatchEnd):
            self.curves.add_batch(ev)
            self._show_batch(ev)
        elif isinstance(ev, EpochEnd):
            self.curves.add_epoch(ev)
            top1 = f"{ev.test_top1 * 100:.1f}%" if ev.test_top1 is not None else "–"
            log.info("epoch %d/%d: loss %.4f, test top-1 %s, %.1f img/s", ev.epoch, ev.epochs,
                     ev.train.get("loss", float("nan")), top1, ev.images_per_s)
        elif isinstance(ev, Progress):
            self.progress.setRange(0, max(ev.total, 1))
            self.progress.setValue(ev.done)
            self.status.setText(f"{ev.stage.capitalize()}: {ev.done}/{ev.total}")
        elif isinstance(ev, Started):
            self._started = ev
            self._run_t0 = time.monotonic()
            self.progress.setRange(0, 1000)
            self.progress.setValue(0)
            self.status.setText(f"Training on {ev.device}: {len(ev.classes)} classes, {ev.num_train} train / "
                                f"{ev.num_test} test images" + (f", from epoch {ev.start_epoch + 1}"
                                                               if ev.start_epoch else ""))
        elif isinstance(ev, Message):
            (log.warning if ev.level == "warning" else log.info)("%s", ev.text)
        elif isinstance(ev, Finished):
            log.info("training finished: %s", ev.run_dir)
            self.runs.refresh()
            try:
                self.run_open_requested.emit(RunInfo.read(ev.run_dir))
            except Exception as exc:  # noqa: BLE001
                log.warning("cannot open the finished run %s: %s", ev.run_dir, exc)

    def _show_batch(self, ev: BatchEnd) -> None:
        st = self._started
        if st is None:
            return
        span = max(1, (st.epochs - st.start_epoch) * max(ev.steps, 1))
        done = (ev.epoch - 1 - st.start_epoch) * ev.steps + ev.step
        frac = min(1.0, done / span)
        self.progress.setValue(int(1000 * frac))
        now = time.monotonic()
        if now - self._last_status < 0.1 and ev.step != ev.steps:
            return
        self._last_status = now
        elapsed = now - self._run_t0
        eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
        self.status.setText(f"Epoch {ev.epoch}/{st.epochs} · step {ev.step}/{ev.steps} · loss {ev.loss:.3f} · "
                            f"{ev.images_per_s:.1f} img/s · ETA {_fmt_s(eta)}")

    def _update_buttons(self) -> None:
        running = self.job.is_running()
        st = self._config_state
        self.start_button.setEnabled(not running and st.can_start)
        self.resume_button.setEnabled(not running and st.can_resume)
        self.allow_data_change.setEnabled(not running and st.can_resume)
        self.stop_button.setEnabled(running and self.job.state.status != "stopping")
        self.new_button.setEnabled(not running)
        self.form.setEnabled(not running)
