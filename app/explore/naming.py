"""A shared-parts run's parts on the Explore page: their names (read from the run, renamed in place, proposed from
a CUB-layout folder's keypoints by :mod:`app.explore.names_dialog`) and their on-bird shares (read from the run
folder, else computed once over the open data's training photos on a lane of their own), marked in the legend.
What they are lives in the page's :class:`~app.explore.state.ExploreState`; this object runs the work and tells
the page (``places_status`` lines, ``failed`` errors, ``names_changed``)."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from engine.errors import EngineError
from engine.events import Message
from engine.fieldmarks import read_part_names, set_part_name

from ..common.lane import Lane
from .compute import places_job
from .names_dialog import ProposeNamesDialog
from .partmap import PartLegend
from .state import ExploreState

log = logging.getLogger(__name__)


class PartNaming(QObject):
    """The names and on-bird shares of the explored run's parts; ``legend`` shows both."""

    places_status = Signal(str)  # the shares' pass: its progress, then which parts lie off the bird ("": none)
    failed = Signal(str, object)  # (what failed, the exception)
    names_changed = Signal(object)  # dict[int, str]: the names were saved (here or by the dialog)

    def __init__(self, parent: QWidget, state: ExploreState, legend: PartLegend) -> None:
        super().__init__(parent)
        self.window_parent, self.state, self.legend = parent, state, legend
        self.lane = Lane(self, "explore-places")  # the on-bird shares: a pass over the training photos
        self.dialog: ProposeNamesDialog | None = None

    # -- names -----------------------------------------------------------------------------------------------
    def read_names(self) -> None:
        """The loaded run's saved names (a parts run; a damaged file is reported and the parts stay unnamed)."""
        info = self.state.info
        if info.parts:
            try:
                self.state.part_names = read_part_names(info.run.path)
            except EngineError as exc:
                self.failed.emit("Cannot read the part names", exc)

    def rename(self, k: int, name: str) -> dict[int, str] | None:
        """Save ``name`` for part ``k`` (empty: remove the name): the run's names, or None when the engine refused
        it (its message is shown, the saved names stay as they were)."""
        run = self.state.run_path
        if not run:
            return None
        try:
            names = set_part_name(run, k, name)
        except EngineError as exc:
            self.legend.set_names(self.state.part_names)
            self.failed.emit(f"Cannot name part {k + 1} {name!r}", exc)
            box = QMessageBox(QMessageBox.Icon.Warning, "Cannot name the part",
                              f"Part {k + 1} was not named {name!r}: {exc}", QMessageBox.StandardButton.Ok,
                              self.window_parent)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()
            return None
        return names

    def cub_folder(self) -> str:
        """The folder to propose names from: the open data when it has keypoints, else one the user picks ("":
        none picked)."""
        report = self.state.report
        if report is not None and report.has_parts:
            return report.root
        return QFileDialog.getExistingDirectory(self.window_parent, "A CUB-layout folder (with parts/part_locs.txt)",
                                                str(Path.home()))

    def propose(self, data: str) -> ProposeNamesDialog:
        """Open the dialog that proposes names from the CUB-layout folder ``data`` (its job starts at once)."""
        dialog = ProposeNamesDialog(self.state.run_path, data, self.window_parent)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.names_saved.connect(self.names_changed)
        dialog.destroyed.connect(lambda _=None: setattr(self, "dialog", None))
        self.dialog = dialog
        dialog.open()
        dialog.start()
        return dialog

    # -- on-bird shares --------------------------------------------------------------------------------------
    def read_places(self) -> None:
        """The run's saved on-bird shares (a small file), marked in the legend; else computed on the lane."""
        from engine.fieldmarks.onbird import saved_places

        st = self.state
        st.places = None
        self.places_status.emit("")
        if st.info is None or not st.info.parts:
            return
        try:
            st.places = saved_places(st.info.run.path)
        except EngineError as exc:
            st.places_unreadable()
            self.failed.emit("Cannot read the on-bird shares", exc)
        self.legend.set_places(st.places)
        self.start_places()

    def start_places(self) -> None:
        """Compute the on-bird shares over the open data's training photos (once per run and data)."""
        run = self.state.places_to_compute()
        if run:
            self.lane.submit(places_job, run, self.state.report,
                             on_returned=lambda places: self._on_lane_returned(run, places),
                             on_yielded=self._on_lane_yielded, on_errored=lambda exc: self._on_lane_errored(run, exc))

    def _on_lane_yielded(self, event) -> None:
        text = self.state.places_progress(event)
        if text:
            self.places_status.emit(text)
        elif isinstance(event, Message):
            (log.warning if event.level == "warning" else log.info)("explore (on-bird shares): %s", event.text)

    def _on_lane_returned(self, run: str, places: list) -> None:
        text = self.state.places_found(run, places)
        if text is not None:
            self.legend.set_places(places)
            self.places_status.emit(text)

    def _on_lane_errored(self, run: str, exc: BaseException) -> None:
        if self.state.info is not None and self.state.info.run.path == run:
            self.failed.emit("Cannot find the parts on the bird", exc)

    def shutdown(self) -> None:
        self.lane.shutdown()
        if self.dialog is not None:
            self.dialog.lane.shutdown()
