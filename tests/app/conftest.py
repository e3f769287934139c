"""Fixtures for the desktop app's tests: offscreen Qt, private settings, no leaked windows, tiny data."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Iterator

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

if importlib.util.find_spec("PySide6") is None or importlib.util.find_spec("pytestqt") is None:
    collect_ignore_glob = ["test_*.py"]  # the engine's tests run without Qt; these need it
else:
    import cv2
    import numpy as np
    import pytest
    from PySide6.QtCore import QSettings, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from app.qtcompat import guard_singletons

    guard_singletons()  # PySide6 6.12 on Python 3.11 (see app/qtcompat.py): pytest-qt calls Qt thousands of times

    @pytest.fixture(autouse=True)
    def private_settings(tmp_path_factory, monkeypatch):
        """Point every QSettings at a temporary folder, so a test never reads or writes the user's."""
        from app import settings as app_settings

        folder = tmp_path_factory.mktemp("settings")
        QSettings.setDefaultFormat(QSettings.Format.IniFormat)
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))
        app_settings.use_settings_file(folder / "fieldmark.ini")
        monkeypatch.setenv("HOME", str(folder / "home"))
        yield folder / "fieldmark.ini"
        app_settings.use_settings_file(None)

    @pytest.fixture(autouse=True)
    def no_leaked_windows(qapp):
        """Fail a test that leaves a visible top-level window behind (and close it)."""
        before = {id(w) for w in QApplication.topLevelWidgets() if w.isVisible()}
        yield
        QApplication.processEvents()
        leaked = [w for w in QApplication.topLevelWidgets() if w.isVisible() and id(w) not in before]
        for w in leaked:
            w.close()
        if leaked:
            pytest.fail(f"test leaked top-level windows: {[type(w).__name__ for w in leaked]}")

    @pytest.fixture
    def window(qtbot):
        """The real main window, shown; closed (and its training child stopped) at the end."""
        from app.window import MainWindow

        w = MainWindow()
        w.confirm_close = False
        qtbot.addWidget(w)
        w.show()
        qtbot.waitExposed(w)
        yield w
        if w.train.job.is_running():
            w.train.job.kill()
            w.train.job.wait(15000)
            qtbot.waitUntil(lambda: not w.train.job.is_running(), timeout=15000)
        w.close()

    def make_images(root: Path, classes=("alpha", "bravo", "charlie"), per_class: int = 5, size=(40, 48),
                    seed: int = 0) -> Path:
        """Tiny JPEGs, one colour family per class, in ROOT/<class>/."""
        rng = np.random.default_rng(seed)
        for k, name in enumerate(classes):
            d = root / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
                img[..., k % 3] += 150
                cv2.imwrite(str(d / f"{name}_{i:02d}.jpg"), img)
        return root

    @pytest.fixture
    def data_dir(tmp_path) -> Path:
        """3 classes x 5 tiny JPEGs, plus a zero-byte .jpg and a text file named .jpg (both to be skipped)."""
        root = make_images(tmp_path / "birds")
        (root / "alpha" / "empty.jpg").write_bytes(b"")
        (root / "bravo" / "notes.jpg").write_text("not a picture, just text\n")
        return root

    class StallProbe:
        """A 10 ms QTimer that records the longest gap between its ticks (the event loop's worst stall).

        ``max_busy`` is the GUI thread's own CPU time between two ticks (``time.thread_time``, as
        ``tests.timing.thread_cpu``): work done on the GUI thread, what a user sees as a freeze; the checks use it.
        ``max_gap`` is the wall-clock gap, reported only: it also counts the time the OS gave other jobs.
        The test's own checks run on the GUI thread too: inside :meth:`aside` their CPU time is not counted."""

        def __init__(self) -> None:
            self.timer = QTimer()
            self.timer.setTimerType(Qt.TimerType.PreciseTimer)
            self.timer.setInterval(10)
            self.timer.timeout.connect(self._tick)
            self.start()
            self.timer.stop()

        def _tick(self) -> None:
            now, cpu = time.perf_counter(), time.thread_time()
            if self.last:
                self.max_gap = max(self.max_gap, now - self.last)
                busy = cpu - self.last_cpu - self.set_aside
                if busy > self.max_busy:
                    self.max_busy, self.gc_of_max = busy, self.gc_since
            self.last, self.last_cpu, self.set_aside, self.gc_since = now, cpu, 0.0, 0.0
            self.ticks += 1

        def _on_gc(self, phase: str, info: dict) -> None:
            """Python's collector on the GUI thread: its CPU time inside each tick, for the failure message."""
            if threading.current_thread() is not threading.main_thread():
                return
            if phase == "start":
                self.gc_start = time.thread_time()
            elif self.gc_start is not None:
                self.gc_since += time.thread_time() - self.gc_start
                self.gc_start = None

        def start(self) -> "StallProbe":
            self.last, self.last_cpu, self.max_gap, self.max_busy, self.ticks = 0.0, 0.0, 0.0, 0.0, 0
            self.set_aside, self.gc_since, self.gc_of_max, self.gc_start = 0.0, 0.0, 0.0, None
            if self._on_gc not in gc.callbacks:
                gc.callbacks.append(self._on_gc)
            self.timer.start()
            return self

        def assert_responsive(self, limit: float = 0.1) -> None:
            """The GUI thread never worked ``limit`` s without returning to the event loop: its own CPU time
            (tests/timing.py), which the other jobs on a shared machine cannot inflate; the wall-clock gap, which
            they can, is only reported."""
            self.timer.stop()
            assert self.ticks > 10, "the probe did not run"
            assert self.max_busy < limit, (f"the GUI thread worked {self.max_busy * 1000:.0f} ms without a break, "
                                           f"{self.gc_of_max * 1000:.0f} ms of it in Python's garbage collector "
                                           f"(longest gap between ticks {self.max_gap * 1000:.0f} ms wall clock)")

        @contextlib.contextmanager
        def aside(self) -> Iterator[None]:
            """The test's own work (its reference computations, its asserts): not the window's, not counted."""
            start = time.thread_time()
            try:
                yield
            finally:
                self.set_aside += time.thread_time() - start

        def stop(self) -> float:
            self.timer.stop()
            if self._on_gc in gc.callbacks:
                gc.callbacks.remove(self._on_gc)
            return self.max_gap

    @pytest.fixture
    def stall_probe():
        probe = StallProbe()
        yield probe
        probe.stop()

    @pytest.fixture(scope="session")
    def toy(tmp_path_factory):
        """A tiny toy-birds MC-Loss run (toyrun.ToyRun), trained once per session and shared by the workspaces'
        tests."""
        from toyrun import toy_run

        return toy_run(tmp_path_factory.getbasetemp())
