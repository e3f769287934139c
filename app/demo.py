"""The built-in toy-birds demo: opened when the app starts with nothing to open and no last session.

:mod:`engine.demo` (``demo_paths()``, ``build_demo()``) builds it; here it is built in a child process
(:mod:`app.child` ``demo``) behind a progress dialog, so the window stays responsive.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, Slot
from PySide6.QtWidgets import QProgressDialog

from engine.events import EpochEnd, Progress
from engine.runs import is_run

from .library.page import PROMPT
from .train.process import FINISHED, JobProcess, JobState

if TYPE_CHECKING:
    from .window import MainWindow

log = logging.getLogger(__name__)


def demo_available() -> bool:
    """True when the engine ships :mod:`engine.demo`."""
    try:
        return importlib.util.find_spec("engine.demo") is not None
    except (ImportError, ValueError):
        return False


def demo_paths() -> tuple[str, str]:
    """(data folder, run folder) of the demo, as :func:`engine.demo.demo_paths` gives them."""
    from engine.demo import demo_paths as paths  # type: ignore[import-not-found]

    data, run = paths()
    return str(data), str(run)


def demo_is_built() -> bool:
    data, run = demo_paths()
    return Path(data).is_dir() and is_run(run)


class DemoBuilder(QObject):
    """Builds the demo in a child process with a progress dialog, then opens its data and run in ``window``."""

    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.window = window
        self.job = JobProcess(self, stop_timeout_ms=5000)  # a cancelled build resumes next time: no need to wait
        self.job.event_received.connect(self._on_job_event_received)
        self.job.job_changed.connect(self._on_job_job_changed)
        self.dialog = QProgressDialog("Building the toy-birds demo…", "Cancel", 0, 0, window)
        self.dialog.setWindowTitle("Fieldmark demo")
        self.dialog.setWindowModality(Qt.WindowModality.WindowModal)
        self.dialog.setMinimumDuration(0)
        self.dialog.setAutoClose(False)
        self.dialog.setAutoReset(False)
        self.dialog.canceled.connect(self.job.stop)

    def start(self) -> None:
        log.info("building the toy-birds demo (first start)")
        self.window.library.show_prompt("<h2>Preparing the toy-birds demo…</h2>First start: drawing toy birds and "
                                        "training a small model on them (a few minutes on a CPU).<br>"
                                        "Cancel to open a folder of your own instead.")
        self.dialog.show()
        self.job.start(["demo"], "demo")

    @Slot(object)
    def _on_job_event_received(self, ev: object) -> None:
        if isinstance(ev, Progress):
            self.dialog.setLabelText(f"Building the toy-birds demo: {ev.stage}…")
            self.dialog.setRange(0, max(ev.total, 1))
            self.dialog.setValue(ev.done)
        elif isinstance(ev, EpochEnd):
            self.dialog.setLabelText(f"Training the demo model: epoch {ev.epoch}/{ev.epochs}")
            self.dialog.setRange(0, ev.epochs)
            self.dialog.setValue(ev.epoch)

    @Slot(object)
    def _on_job_job_changed(self, state: JobState) -> None:
        if state.active:
            return
        self.dialog.close()
        self.dialog.deleteLater()
        if state.status == FINISHED:
            data, run = demo_paths()
            self.window.open_folder(data)
            self.window.open_run(run, open_data=False)
        else:
            if state.status != "stopped":
                self.window.show_error("The demo could not be built", state.message)
            self.window.library.show_prompt(PROMPT)
        self.deleteLater()
