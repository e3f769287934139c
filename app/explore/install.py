"""Plug the Explore, Compare and Export workspaces into the main window (one call from the window).

The pages never reach into the window: this function connects the window's ``active_run_changed`` and
``data_changed`` and the library's ``selection_changed`` to their slots, feeds them the state that already exists,
and stops their workers when the window closes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject

from .page import ExplorePage, StepRequest

if TYPE_CHECKING:
    from app.compare.page import ComparePage
    from app.export.page import ExportPage
    from app.window import MainWindow

log = logging.getLogger(__name__)


@dataclass
class Workspaces:
    """The three pages :func:`install` added."""

    explore: ExplorePage
    compare: "ComparePage"
    export: "ExportPage"

    def shutdown(self) -> None:
        for page in (self.explore, self.compare, self.export):
            page.shutdown()


class _CloseWatcher(QObject):
    """Stops the pages' workers when the window closes (an event filter: the window's own ``closeEvent`` stays
    untouched). While a training job runs the window may still refuse to close, so the pages wait for the
    second close that the window sends once the job has stopped."""

    def __init__(self, window: "MainWindow", pages: Workspaces) -> None:
        super().__init__(window)
        self.window = window
        self.pages = pages

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if event.type() == QEvent.Type.Close and obj is self.window and not self.window.train.is_running():
            self.pages.shutdown()
        return False


def step_library(window: "MainWindow", request: StepRequest) -> None:
    """Move the library's current image by ``request.delta`` rows (clamped to the visible rows)."""
    grid, model = window.library.grid, window.library.model
    rows = model.rowCount()
    if rows == 0:
        return
    cur = grid.currentIndex().row()
    row = min(max(0, (cur if cur >= 0 else 0) + request.delta), rows - 1)
    if row != cur:
        grid.setCurrentIndex(model.index(row, 0))


def install(window: "MainWindow") -> Workspaces:
    """Add Explore, Compare and Export to ``window`` and wire them to its run, data and selection."""
    from app.compare.page import ComparePage
    from app.export.page import ExportPage

    pages = Workspaces(ExplorePage(window), ComparePage(window), ExportPage(window))
    window.add_workspace("Explore", pages.explore)
    window.add_workspace("Compare", pages.compare)
    window.add_workspace("Export", pages.export)
    for page in (pages.explore, pages.compare, pages.export):
        window.active_run_changed.connect(page.set_run)
        window.data_changed.connect(lambda state, page=page: page.set_data(state.report))
    window.library.selection_changed.connect(pages.explore._on_library_selection_changed)
    pages.explore.step_requested.connect(lambda req: step_library(window, req))
    if window.active_run is not None:
        for page in (pages.explore, pages.compare, pages.export):
            page.set_run(window.active_run)
    if window.library.report is not None:
        for page in (pages.explore, pages.compare, pages.export):
            page.set_data(window.library.report)
    window.installEventFilter(_CloseWatcher(window, pages))
    return pages


def find_page(window: "MainWindow", name: str):
    """The page of workspace ``name`` ("Explore", "Compare", "Export")."""
    return window.stack.widget(window.workspace_names.index(name))
