"""The desktop app's Library page opens the bad-input corpus: every broken file is listed with its reason, every
usable image is in the grid, and decoding every thumbnail (the bad-CRC PNG included, which only decoding finds)
neither crashes nor stalls. Offscreen Qt, the app tests' private settings and window-leak fixtures; skipped when
PySide6 / pytest-qt are not installed (the engine's tests never need them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6", reason="the Library page needs PySide6 (pip install fieldmark[gui])")
pytest.importorskip("pytestqt", reason="the GUI tests need pytest-qt")

from tests.app.conftest import no_leaked_windows, private_settings  # noqa: E402,F401  (fixtures, autouse)


def test_library_page_opens_the_corpus(qtbot, corpus):
    from app.library.page import LibraryPage

    page = LibraryPage()
    qtbot.addWidget(page)
    try:
        with qtbot.waitSignal(page.data_changed, timeout=30000):
            page.open_folder(str(corpus.root))
        table = page.report_panel.skipped
        shown = {table.item(r, 0).text(): table.item(r, 1).text() for r in range(table.rowCount())}
        scan_found = {k: v for k, v in corpus.bad.items() if k not in corpus.decode_only}  # decoding finds these
        for name, reason in scan_found.items():
            assert shown.get(name) == reason, (name, shown)
        assert shown.get(corpus.loop) == "symlink loop"
        paths = {Path(page.model.sample(r).path).relative_to(corpus.root).as_posix()
                 for r in range(page.model.rowCount())}
        assert paths == set(corpus.usable()) | set(corpus.decode_only)
        for r in range(page.model.rowCount()):  # ask for every thumbnail, broken ones too
            page.model.data(page.model.index(r, 0), 1)
        qtbot.waitUntil(page.loader.is_idle, timeout=30000)
        bad = str(corpus.root / "bravo" / "bad crc.png")
        assert page.loader.error(bad), "the undecodable PNG has no error recorded"
        assert not page.loader.error(str(corpus.root / "alpha" / "wide 20000px.jpg"))
    finally:
        page.shutdown()
