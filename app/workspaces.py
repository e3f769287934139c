"""The window's workspaces, in switcher order, and the one place that wires them to each other.

:class:`Workspaces` builds the five pages and connects what passes between them (the library's selection to
Explore, Explore's arrow keys back to the library). The window adds the pages with
:meth:`~app.window.MainWindow.add_workspace` and feeds its own state through the public slots :meth:`set_run`
and :meth:`set_data`; closing the window calls :meth:`shutdown`, the one path that stops every page's workers.
No page knows another page or the window: each offers ``set_run`` / ``set_data`` (those that use them) and
``shutdown`` (those that own workers).
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Slot
from PySide6.QtWidgets import QWidget

from engine.runs import RunInfo

from .compare import ComparePage
from .explore import ExplorePage
from .export import ExportPage
from .library import LibraryPage
from .state import DataState
from .train import TrainPage


class Workspaces(QObject):
    """Library, Train, Explore, Compare and Export, as children of ``parent`` (the window)."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.library = LibraryPage(parent)
        self.train = TrainPage(parent)
        self.explore = ExplorePage(parent)
        self.compare = ComparePage(parent)
        self.export = ExportPage(parent)
        self.library.selection_changed.connect(self.explore.set_selection)
        self.explore.step_requested.connect(self.library.step)

    def pages(self) -> list[tuple[str, QWidget]]:
        """(name, page) in switcher order."""
        return [("Library", self.library), ("Train", self.train), ("Explore", self.explore),
                ("Compare", self.compare), ("Export", self.export)]

    @Slot(object)
    def set_run(self, run: RunInfo) -> None:
        """Show ``run`` (the window's new active run) in every workspace that works on a run."""
        self.train.show_run(run)
        for page in (self.explore, self.compare, self.export):
            page.set_run(run)

    @Slot(object)
    def set_data(self, state: DataState) -> None:
        """Give the library's newly opened data set to the workspaces that work on it (Train trains on a
        labelled one)."""
        if state.report is not None and state.report.layout != "flat":
            self.train.set_data_folder(state.root)
        for page in (self.explore, self.compare, self.export):
            page.set_data(state.report)

    def shutdown(self) -> None:
        """Stop every page's worker threads and wait for them (the window calls it once, when it closes)."""
        for page in (self.library, self.explore, self.compare, self.export):
            page.shutdown()
