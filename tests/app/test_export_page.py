"""The Export workspace on a tiny toy-birds run: export, cancel part-way, resume to the end, open the folder."""

from __future__ import annotations

import csv

import pytest
from PySide6.QtCore import Qt

from app.export import page as export_page
from app.export.page import CANCELLED, FAILED, FINISHED, default_out
from toyrun import open_toy

pytestmark = pytest.mark.timeout(240)

SLOW = 60_000


@pytest.fixture
def export(window, qtbot, toy):
    open_toy(window, qtbot, toy)
    window.set_workspace("Export")
    return window.workspaces.export


def click(qtbot, button) -> None:
    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_export_cancel_and_resume(export, qtbot, toy, tmp_path, monkeypatch):
    page = export
    assert page.out.text() == default_out(str(toy.run))
    out = tmp_path / "parts"
    page.out.setText(str(out))
    page.batch_size = 2  # 16 test images: 8 batches, so a cancel lands part-way
    page.crop_size.setValue(64)

    def cancel_after_first_batch(state) -> None:
        if state.status == "running" and state.done > 0:
            page.cancel()

    page.export_changed.connect(cancel_after_first_batch)
    with qtbot.waitSignal(page.export_changed, timeout=SLOW, check_params_cb=lambda s: s.status == CANCELLED):
        click(qtbot, page.export_button)
        assert not page.export_button.isEnabled() and page.cancel_button.isEnabled()
        assert not page.out.isEnabled()
    page.export_changed.disconnect(cancel_after_first_batch)
    done, total = page.state.done, page.state.total
    assert total == 16 and 0 < done < total
    assert "export again to resume" in page.summary.text() and page.export_button.text() == "Resume"
    assert (out / ".fieldmark-export" / "done.jsonl").is_file() and not (out / "parts.csv").exists()

    with qtbot.waitSignal(page.export_changed, timeout=SLOW, check_params_cb=lambda s: s.status == FINISHED):
        click(qtbot, page.export_button)
    summary = page.state.summary
    assert summary.resumed >= done and summary.resumed + summary.exported == total
    with open(out / "parts.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert summary.total_images == total and rows
    assert f"{summary.exported} images" in page.summary.text()
    assert len(list(out.glob("*/part_*/*.jpg"))) == len(rows)  # one crop per part row, none lost to the cancel

    opened = []
    monkeypatch.setattr(export_page.QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()))
    qtbot.waitUntil(page.open_button.isEnabled, timeout=5000)
    click(qtbot, page.open_button)
    assert opened == [str(out)]


def test_export_refuses_a_foreign_folder(export, qtbot, tmp_path):
    page = export
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's\n")
    page.out.setText(str(out))
    with qtbot.waitSignal(page.export_changed, timeout=SLOW, check_params_cb=lambda s: s.status == FAILED):
        click(qtbot, page.export_button)
    assert "not empty" in page.summary.text()
    qtbot.waitUntil(page.export_button.isEnabled, timeout=5000)  # once the worker has wound up


def test_export_names_a_changed_photo_of_the_runs_split(window, qtbot, toy, tmp_path):
    """The Export page shows (and logs) what the engine says about the data against the run's saved split."""
    import json
    import shutil

    from toyrun import ToyRun

    data, run = tmp_path / "birds", tmp_path / "run"
    shutil.copytree(toy.data, data)
    shutil.copytree(toy.run, run)
    test = sorted(json.loads((run / "split.json").read_text())["test"])
    shutil.copyfile(data / test[1], data / test[0])  # another photo's bytes under this name
    open_toy(window, qtbot, ToyRun(data, run))
    window.set_workspace("Export")
    page = window.workspaces.export
    page.out.setText(str(tmp_path / "parts"))
    with qtbot.waitSignal(page.export_changed, timeout=SLOW, check_params_cb=lambda s: s.status == FINISHED):
        click(qtbot, page.export_button)
    assert "1 photo of the run's test split changed" in page.summary.text() and test[0] in page.summary.text()
