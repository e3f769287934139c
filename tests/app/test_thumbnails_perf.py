"""20,000 images: the grid model, scrolling and filtering never block the GUI thread, and only visible rows are
decoded. Every row has a file of its own (hard links to a few small JPEGs), so the loader, which de-duplicates by
path, counts one request per row asked for, while decoding stays cheap and the test measures the GUI side."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QPoint
from engine.data import DataReport, Sample

from app.library import LibraryPage
from app.library.model import SampleFilter
from tests.timing import thread_cpu

N = 20_000
BUDGET_S = 0.1


def big_report(tmp_path, distinct: bool = False) -> DataReport:
    """N samples over 6 small JPEGs; with ``distinct``, each sample its own path (a hard link, or a symbolic link
    where the file system has none) to one of them."""
    rng = np.random.default_rng(1)
    files = []
    for i in range(6):
        p = tmp_path / f"img{i}.jpg"
        cv2.imwrite(str(p), rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
        files.append(str(p))
    paths = [files[i % len(files)] for i in range(N)]
    if distinct:
        (tmp_path / "rows").mkdir()
        for i in range(N):
            link = str(tmp_path / "rows" / f"{i:05d}.jpg")
            try:
                os.link(paths[i], link)
            except OSError:
                os.symlink(paths[i], link)
            paths[i] = link
    classes = [f"species_{k:02d}" for k in range(50)]
    samples = [Sample(paths[i], i % len(classes), "train" if i % 5 else "test") for i in range(N)]
    return DataReport(str(tmp_path), "class-folders", classes, samples, [], split_source="test")


def visible_cells(page) -> int:
    """How many grid cells the viewport shows at once (a part-visible row or column counts)."""
    view, cell = page.grid.viewport().size(), page.grid.gridSize()
    return (-(-view.width() // cell.width()) + 1) * (-(-view.height() // cell.height()) + 1)


def timed(fn) -> float:
    """The GUI thread's CPU seconds in ``fn`` (tests/timing.py: never the wall clock, which counts other jobs)."""
    return thread_cpu(fn)


@pytest.mark.perf
def test_20000_thumbnails_scroll_and_filter_without_blocking(qtbot, tmp_path, stall_probe):
    report = big_report(tmp_path, distinct=True)
    page = LibraryPage()
    qtbot.addWidget(page)
    page.resize(1200, 800)
    page.show()
    qtbot.waitExposed(page)
    stall_probe.start()
    assert timed(lambda: page.set_report(report)) < 0.5  # one-time: 20,000 samples into numpy arrays
    qtbot.wait(50)
    stall_probe.start()  # measure the interaction from here on
    bar = page.grid.verticalScrollBar()
    assert page.model.rowCount() == N and bar.maximum() > 0
    worst = 0.0
    screens = 1  # the first screen, then one per scroll position and filter
    for frac in (0.25, 0.5, 0.9, 1.0, 0.1, 0.0):
        worst = max(worst, timed(lambda f=frac: bar.setValue(int(bar.maximum() * f))))
        screens += 1
        qtbot.wait(30)
    for flt in (SampleFilter(7, None), SampleFilter(None, "test"), SampleFilter(3, "train"), SampleFilter()):
        worst = max(worst, timed(lambda f=flt: page.set_filter(f)))
        screens += 1
        qtbot.wait(30)
    assert page.model.rowCount() == N
    qtbot.waitUntil(page.loader.is_idle, timeout=10000)
    qtbot.wait(50)
    assert worst < BUDGET_S, f"a scroll or filter call took {worst * 1000:.0f} ms"
    stall_probe.assert_responsive(BUDGET_S)
    # only what was on screen was asked for: every row has its own path, so each row asked counts once
    bound = visible_cells(page) * screens
    print(f"thumbnails requested: {page.loader.requested} of {N} rows (bound {bound}: "
          f"{visible_cells(page)} cells x {screens} screens)")
    assert 0 < page.loader.requested <= bound
    shown = page.grid.indexAt(QPoint(page.grid.gridSize().width() // 2, page.grid.gridSize().height() // 2))
    assert shown.isValid() and page.model.data(shown, 1) is not page.loader.placeholder
    page.shutdown()


@pytest.mark.perf
def test_filtering_20000_in_the_model_is_vectorised(qtbot, tmp_path):
    report = big_report(tmp_path)
    page = LibraryPage()
    qtbot.addWidget(page)
    page.set_report(report)
    t = timed(lambda: page.set_filter(SampleFilter(12, "test")))
    assert page.model.rowCount() == sum(1 for s in report.samples if s.label == 12 and s.split == "test")
    assert t < BUDGET_S
    page.shutdown()
