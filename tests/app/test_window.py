"""The main window: workspaces, shortcuts, menus, status bar, log panel, themes and settings."""

from __future__ import annotations

import logging
import threading

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QMessageBox

from app import settings as app_settings


def test_workspaces_and_shortcuts(window, qtbot):
    assert window.workspace_names[:2] == ["Library", "Train"]
    assert window.current_workspace() == "Library"
    qtbot.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    assert window.current_workspace() == "Train"
    page = QLabel("a later workspace")
    n = len(window.workspace_names)
    with qtbot.waitSignal(window.workspace_changed) as blocker:
        index = window.add_workspace("Later", page)
        qtbot.keyClick(window, getattr(Qt.Key, f"Key_{n + 1}"), Qt.KeyboardModifier.ControlModifier)
    assert index == n and blocker.args[0].name == "Later"
    assert window.stack.currentWidget() is page
    assert window.switcher.actions()[index].text() == "Later"
    qtbot.keyClick(window, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    assert window.current_workspace() == "Library"


def test_every_workspace_fits_a_1024_pixel_wide_screen(window, qtbot):
    for name in window.workspace_names:
        window.set_workspace(name)
        qtbot.wait(10)
        width = window.minimumSizeHint().width()
        assert width <= 1024, f"{name}: the window cannot be narrower than {width} px"


def test_menu_shortcuts_and_status_bar(window):
    assert window.open_folder_action.shortcut().toString() == "Ctrl+O"
    assert window.open_run_action.shortcut().toString() == "Ctrl+Shift+O"
    assert window.device_label.text().startswith("Device: ")
    assert "CPU" in window.device_label.text() or "CUDA" in window.device_label.text()
    assert window.run_label.text() == "Run: none"


def test_log_panel_receives_records_from_worker_threads(window, qtbot):
    def work() -> None:
        logging.getLogger("tests.worker").warning("hello from a worker thread")

    t = threading.Thread(target=work)
    t.start()
    t.join()
    qtbot.waitUntil(lambda: "hello from a worker thread" in window.log_panel.text(), timeout=3000)


def test_theme_toggle_is_persisted(window, qtbot, private_settings):
    with qtbot.waitSignal(window.theme_changed) as blocker:
        window.dark_action.trigger()
    assert blocker.args[0].name == "dark"
    assert app_settings.get_str(app_settings.THEME) == "dark"
    assert "workspaceBar" in window.styleSheet() + qtbot_app_stylesheet()
    window.dark_action.trigger()
    assert app_settings.get_str(app_settings.THEME) == "light"
    assert private_settings.is_file()  # the test's own INI file, never the user's


def qtbot_app_stylesheet() -> str:
    from PySide6.QtWidgets import QApplication

    return QApplication.instance().styleSheet()


def test_geometry_and_recent_folders_are_kept(qtbot, data_dir, private_settings):
    from PySide6.QtCore import QSettings

    from app.window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    w.resize(w.minimumSizeHint().width() + 10, w.minimumSizeHint().height() + 10)
    with qtbot.waitSignal(w.data_changed, timeout=10000):
        w.open_folder(str(data_dir))
    w.close()
    assert app_settings.recent(app_settings.RECENT_FOLDERS)[0] == str(data_dir.resolve())
    assert app_settings.get_str(app_settings.LAST_FOLDER) == str(data_dir)
    saved = QSettings(str(private_settings), QSettings.Format.IniFormat).value("window/geometry")
    assert saved is not None and bytes(saved) == bytes(w.saveGeometry())
    w2 = MainWindow()
    qtbot.addWidget(w2)
    if w2.screen().availableGeometry().contains(w.frameGeometry()):  # restoring clamps to the screen
        assert (w2.width(), w2.height()) == (w.width(), w.height())
    w2.close()


def test_open_default_without_demo_shows_the_open_prompt(window, monkeypatch):
    import app.demo
    from app.main import _open_default

    monkeypatch.setattr(app.demo, "demo_available", lambda: False)
    _open_default(window)
    assert window.library.stack.currentWidget() is window.library.prompt
    assert "Open a folder" in window.library.prompt_label.text()


def test_open_default_reopens_the_last_folder(window, qtbot, data_dir):
    from app.main import _open_default

    app_settings.set_value(app_settings.LAST_FOLDER, str(data_dir))
    with qtbot.waitSignal(window.library.data_changed, timeout=10000):
        _open_default(window)
    assert window.library.root == str(data_dir)


def test_open_run_that_is_no_run_shows_an_error_and_keeps_working(window, qtbot, tmp_path):
    assert window.open_run(str(tmp_path)) is None
    assert "not a Fieldmark run" in window.statusBar().currentMessage()
    assert window.active_run is None
    boxes = [b for b in window.findChildren(QMessageBox) if b.isVisible()]
    assert boxes and "not a Fieldmark run" in boxes[0].text()
    boxes[0].accept()
