"""First start with nothing to open: the toy-birds demo is built in a child process behind a progress dialog."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPushButton

import app.demo
from engine.events import Progress
from app.demo import DemoBuilder
from app.main import _open_default

pytestmark = pytest.mark.timeout(300)


@pytest.mark.skipif(not app.demo.demo_available(), reason="this engine has no engine.demo")
def test_first_start_builds_the_demo_in_a_child_and_cancel_leaves_the_open_prompt(window, qtbot, monkeypatch,
                                                                                   tmp_path):
    monkeypatch.setenv("FIELDMARK_DEMO_DIR", str(tmp_path / "demo"))  # the child inherits it
    assert not app.demo.demo_is_built()
    _open_default(window)
    builder = window.findChild(DemoBuilder)
    assert builder is not None and builder.job.is_running()
    states: list[str] = []
    builder.job.job_changed.connect(lambda st: states.append(st.status))
    builder.job.event_received.emit(Progress("drawing toy birds", 12, 480))  # as the child streams them
    assert builder.dialog.labelText() == "Building the toy-birds demo: drawing toy birds…"
    assert (builder.dialog.value(), builder.dialog.maximum()) == (12, 480)
    assert builder.dialog.isVisible() and window.isEnabled()
    qtbot.mouseClick(builder.dialog.findChild(QPushButton), Qt.MouseButton.LeftButton)  # Cancel: a graceful stop
    qtbot.waitUntil(lambda: states and states[-1] == "stopped", timeout=60000)
    assert "stopping" in states
    assert window.library.stack.currentWidget() is window.library.prompt
    qtbot.waitUntil(lambda: window.findChild(DemoBuilder) is None, timeout=5000)  # it cleans up after itself
