"""The main window: a workspace switcher, menus and shortcuts, a status bar, a log dock, themes and settings.

The pages come from :class:`app.workspaces.Workspaces` and plug in with :meth:`MainWindow.add_workspace`; the window
owns the application state that crosses workspaces (the open data set, the active run), announces it with
``data_changed`` / ``active_run_changed`` (connected to the workspaces' public slots), and stops them in
:meth:`closeEvent`, the one shutdown path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QThreadPool, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (QApplication, QDialog, QDockWidget, QFileDialog, QLabel, QMainWindow, QMenu, QMessageBox,
                               QStackedWidget, QToolBar, QWidget)

from engine.errors import EngineError
from engine.runs import RunInfo, is_run

from . import settings as app_settings
from .cpu import reserve_gui_core
from .logpanel import LogPanel, install_handler
from .qtcompat import guard_singletons
from .resources import app_icon
from .state import DataState, ThemeState, WorkspaceState
from .theme import apply_theme
from .train.process import JobState
from .workspaces import Workspaces

log = logging.getLogger(__name__)


def device_text() -> str:
    """The device training would use ("CPU (2 threads)", "CUDA: NVIDIA H100")."""
    from engine.device import describe_device, resolve_device

    try:
        return describe_device(resolve_device("auto"))
    except EngineError as exc:  # pragma: no cover - "auto" always resolves
        return f"unknown ({exc})"


class MainWindow(QMainWindow):
    """Fieldmark's window. Set ``confirm_close = False`` to close without asking while a job runs (tests)."""

    workspace_changed = Signal(object)  # WorkspaceState
    active_run_changed = Signal(object)  # RunInfo
    data_changed = Signal(object)  # DataState
    theme_changed = Signal(object)  # ThemeState

    def __init__(self, parent: QWidget | None = None) -> None:
        guard_singletons()
        device = device_text()  # what a training child gets (read before this process gives one core to the GUI)
        reserve_gui_core()
        super().__init__(parent)
        self.setWindowTitle("Fieldmark")
        self.setWindowIcon(app_icon())
        self.confirm_close = True
        self.active_run: RunInfo | None = None
        self._closing = False
        self.stack = QStackedWidget(self)
        self.setCentralWidget(self.stack)
        self.switcher = QToolBar("Workspaces", self)
        self.switcher.setObjectName("workspaceBar")
        self.switcher.setMovable(False)
        self.switcher.setFloatable(False)
        self.switcher.setIconSize(QSize(18, 18))
        self.switcher.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.switcher)
        self._workspace_group = QActionGroup(self)
        self._workspace_group.setExclusive(True)
        self._workspace_names: list[str] = []

        self.log_panel = LogPanel(self)
        self.log_dock = QDockWidget("Log", self)
        self.log_dock.setObjectName("logDock")
        self.log_dock.setWidget(self.log_panel)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)
        self._log_handler = install_handler(self.log_panel)

        self.device_label = QLabel(f"Device: {device}", self)
        self.run_label = QLabel("Run: none", self)
        self.run_label.setMaximumWidth(520)
        self.job_label = QLabel("", self)
        for w in (self.job_label, self.run_label, self.device_label):
            w.setObjectName("statusField")
            self.statusBar().addPermanentWidget(w)

        self.workspaces = Workspaces(self)
        self.library, self.train = self.workspaces.library, self.workspaces.train
        for name, page in self.workspaces.pages():
            self.add_workspace(name, page)
        self.active_run_changed.connect(self.workspaces.set_run)
        self.data_changed.connect(self.workspaces.set_data)
        self.library.data_changed.connect(self._on_library_data_changed)
        self.train.run_open_requested.connect(self._on_train_run_open_requested)
        self.train.job_changed.connect(self._on_train_job_changed)
        self.theme_changed.connect(self.train.apply_theme)

        self._build_menus()
        self.theme = app_settings.get_str(app_settings.THEME, "light")
        self.set_theme(self.theme)
        self._restore_geometry()

    # -- workspaces ------------------------------------------------------------------------------------------
    def add_workspace(self, name: str, widget: QWidget) -> int:
        """Add a workspace page with a switcher button and the shortcut Ctrl+<n>; returns its index."""
        index = self.stack.addWidget(widget)
        action = QAction(name, self)
        action.setCheckable(True)
        action.setData(index)
        if index < 9:
            action.setShortcut(QKeySequence(f"Ctrl+{index + 1}"))
            action.setToolTip(f"{name} ({QKeySequence(f'Ctrl+{index + 1}').toString(QKeySequence.SequenceFormat.NativeText)})")
        action.triggered.connect(lambda _=False, i=index: self.set_workspace(i))
        self._workspace_group.addAction(action)
        self.switcher.addAction(action)
        self._workspace_names.append(name)
        if index == 0:
            action.setChecked(True)
        if hasattr(self, "view_menu"):
            self._workspace_menu.addAction(action)
        return index

    def set_workspace(self, which: int | str) -> None:
        """Show a workspace, by index or name."""
        index = self._workspace_names.index(which) if isinstance(which, str) else int(which)
        self.stack.setCurrentIndex(index)
        for action in self._workspace_group.actions():
            if action.data() == index:
                action.setChecked(True)
        self.workspace_changed.emit(WorkspaceState(index, self._workspace_names[index]))

    @property
    def workspace_names(self) -> list[str]:
        return list(self._workspace_names)

    def current_workspace(self) -> str:
        return self._workspace_names[self.stack.currentIndex()]

    # -- menus -----------------------------------------------------------------------------------------------
    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_folder_action = file_menu.addAction("Open &Folder…", QKeySequence("Ctrl+O"), self.choose_folder)
        self.open_run_action = file_menu.addAction("Open &Run…", QKeySequence("Ctrl+Shift+O"), self.choose_run)
        self.recent_folders_menu = file_menu.addMenu("Recent Folders")
        self.recent_runs_menu = file_menu.addMenu("Recent Runs")
        self.recent_folders_menu.aboutToShow.connect(
            lambda: self._fill_recent(self.recent_folders_menu, app_settings.RECENT_FOLDERS, self.open_folder))
        self.recent_runs_menu.aboutToShow.connect(
            lambda: self._fill_recent(self.recent_runs_menu, app_settings.RECENT_RUNS, self.open_run))
        file_menu.addSeparator()
        quit_action = file_menu.addAction("&Quit", QKeySequence("Ctrl+Q"), self.close)
        quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        self.view_menu = self.menuBar().addMenu("&View")
        self._workspace_menu = self.view_menu.addMenu("Workspace")
        for action in self._workspace_group.actions():
            self._workspace_menu.addAction(action)
        self.dark_action = self.view_menu.addAction("&Dark Theme")
        self.dark_action.setCheckable(True)
        self.dark_action.toggled.connect(lambda on: self.set_theme("dark" if on else "light"))
        self.view_menu.addAction(self.log_dock.toggleViewAction())
        help_menu = self.menuBar().addMenu("&Help")
        self.keyboard_action = help_menu.addAction("&Keyboard", self.show_keyboard)
        help_menu.addAction("&About Fieldmark", self._about)

    def _fill_recent(self, menu: QMenu, key: str, opener) -> None:
        menu.clear()
        items = app_settings.recent(key)
        for path in items:
            menu.addAction(path, lambda p=path: opener(p))
        if not items:
            menu.addAction("(none)").setEnabled(False)

    def show_keyboard(self) -> QDialog:
        """Help ▸ Keyboard: the table of every key (non-modal)."""
        from .keyboard import KeyboardDialog

        dialog = KeyboardDialog(self.workspace_names, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def _about(self) -> None:
        from engine import __version__

        QMessageBox.about(self, "About Fieldmark",
                          f"<b>Fieldmark {__version__}</b><br>Find the field marks of bird species without part "
                          "annotation (MC-Loss, TASN).")

    # -- opening things --------------------------------------------------------------------------------------
    @Slot()
    def choose_folder(self) -> None:
        self.set_workspace("Library")
        self.library.choose_folder()

    @Slot()
    def choose_run(self) -> None:
        start = app_settings.recent(app_settings.RECENT_RUNS)
        folder = QFileDialog.getExistingDirectory(self, "Open a run folder",
                                                  str(Path(start[0]).parent) if start else str(Path.home()))
        if folder:
            self.open_run(folder)

    def open_path(self, path: str) -> None:
        """Open a run folder as the active run (and its data), or a data folder in the library."""
        if is_run(path):
            self.open_run(path)
        else:
            self.open_folder(path)

    def open_folder(self, folder: str) -> None:
        """Scan ``folder`` into the library (off the GUI thread)."""
        self.set_workspace("Library")
        self.library.open_folder(folder)

    def open_run(self, path: str, open_data: bool = True) -> RunInfo | None:
        """Make the run at ``path`` the active run; also open its data folder when nothing is open."""
        try:
            ref = RunInfo.read(os.path.abspath(os.path.expanduser(path)))
        except EngineError as exc:
            self.show_error("Cannot open the run", str(exc))
            return None
        self.set_active_run(ref)
        if open_data and not self.library.root and ref.data and Path(ref.data).is_dir():
            self.library.open_folder(ref.data)
        return ref

    def set_active_run(self, ref: RunInfo) -> None:
        """Set the active run (status bar, settings) and emit ``active_run_changed`` (the workspaces show it)."""
        self.active_run = ref
        self.run_label.setText(f"Run: {ref.summary()}")
        self.run_label.setToolTip(ref.path)
        app_settings.add_recent(app_settings.RECENT_RUNS, ref.path)
        app_settings.set_value(app_settings.LAST_RUN, ref.path)
        log.info("active run: %s", ref.path)
        self.active_run_changed.emit(ref)

    def show_error(self, title: str, text: str) -> None:
        """Log an error and show it in a non-blocking message box."""
        log.error("%s: %s", title, text)
        self.statusBar().showMessage(f"{title}: {text}", 10000)
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    # -- theme -----------------------------------------------------------------------------------------------
    def set_theme(self, name: str) -> ThemeState:
        """Apply and remember the light or dark theme."""
        theme = apply_theme(QApplication.instance(), name)
        self.theme = theme.name
        self.dark_action.blockSignals(True)
        self.dark_action.setChecked(theme.name == "dark")
        self.dark_action.blockSignals(False)
        app_settings.set_value(app_settings.THEME, theme.name)
        self.theme_changed.emit(theme)
        return theme

    # -- slots -----------------------------------------------------------------------------------------------
    @Slot(object)
    def _on_library_data_changed(self, state: DataState) -> None:
        app_settings.add_recent(app_settings.RECENT_FOLDERS, state.root)
        app_settings.set_value(app_settings.LAST_FOLDER, state.root)
        self.setWindowTitle(f"Fieldmark — {Path(state.root).name}")
        self.data_changed.emit(state)

    @Slot(object)
    def _on_train_run_open_requested(self, ref: RunInfo) -> None:
        self.set_active_run(ref)

    @Slot(object)
    def _on_train_job_changed(self, state: JobState) -> None:
        self.job_label.setText(f"Training: {state.status}" if state.active else "")
        if self._closing and not state.active:
            QTimer.singleShot(0, self.close)

    # -- geometry and closing --------------------------------------------------------------------------------
    def _restore_geometry(self) -> None:
        s = app_settings.settings()
        geometry = s.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1400, 900)
        window_state = s.value("window/state")
        if window_state is not None:
            self.restoreState(window_state)
        else:
            self.resizeDocks([self.log_dock], [140], Qt.Orientation.Vertical)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        """Ask to stop a running training job, wait for it, then save the geometry and stop the workers."""
        if self.train.is_running():
            if self.confirm_close and not self._closing:
                answer = QMessageBox.question(
                    self, "Training is running",
                    "A training run is in progress. Stop it and quit? Every finished epoch is saved.",
                    QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
                if answer != QMessageBox.StandardButton.Yes:
                    event.ignore()
                    return
            self._closing = True
            self.statusBar().showMessage("Stopping the training run before quitting…")
            self.train.stop()
            event.ignore()
            return
        s = app_settings.settings()
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.sync()
        self.workspaces.shutdown()
        QThreadPool.globalInstance().waitForDone(3000)
        logging.getLogger().removeHandler(self._log_handler)
        super().closeEvent(event)
