"""Training from the window with the real engine in a child process (model smallnet, 32 px, a dozen images)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from engine.events import EpochEnd
from engine.runs import read_history, read_meta

pytestmark = pytest.mark.timeout(300)

SLOW = 120_000  # ms; a child needs a few seconds to import torch on a busy 2-core machine


def configure(window, data_dir: Path, out: Path, epochs: int, seed: int = 0) -> None:
    window.set_workspace("Train")
    form = window.train.form
    form.set_data(str(data_dir))
    form.method.setCurrentIndex(form.method.findData("mcloss"))
    form.model.setCurrentText("smallnet")
    form.img_size.setValue(32)
    form.batch_size.setValue(4)
    form.epochs.setValue(epochs)
    form.device.setCurrentText("cpu")
    form.seed.setValue(seed)
    form.set_out(str(out))
    assert form.state.error == "", form.state.error


def click(qtbot, button) -> None:
    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def wait_status(qtbot, page, status: str, timeout: int = SLOW) -> None:
    """Wait for the job to end, and check it ended as ``status`` (showing the child's stderr if not)."""
    qtbot.waitUntil(lambda: page.job.state.status not in ("starting", "running", "stopping"), timeout=timeout)
    st = page.job.state
    assert st.status == status, f"{st.status}: {st.message}\n" + "\n".join(st.stderr_tail[-12:])


@pytest.mark.perf  # the window stays responsive while a run trains (a budget)
def test_train_watch_stop_resume_and_open_the_run(window, qtbot, data_dir, tmp_path, stall_probe):
    page = window.train
    with qtbot.waitSignal(window.library.data_changed, timeout=15000):
        window.open_folder(str(data_dir))
    out = tmp_path / "runs" / "tiny"
    configure(window, data_dir, out, epochs=40)
    epochs_seen: list[int] = []
    page.job.event_received.connect(lambda ev: epochs_seen.append(ev.epoch) if isinstance(ev, EpochEnd) else None)
    stall_probe.start()
    click(qtbot, page.start_button)
    assert not page.start_button.isEnabled() and not page.form.isEnabled()
    qtbot.waitUntil(lambda: page.curves.epoch_count >= 2, timeout=SLOW)
    assert page.stop_button.isEnabled()
    qtbot.waitUntil(lambda: "loss" in page.curves.part_curves  # curves are made and redrawn by a timer
                    and len(page.curves.part_curves["loss"].xData) >= 2, timeout=2000)
    assert len(page.curves.speed_curve.xData) >= 2
    assert set(page.curves.part_curves) >= {"loss", "ce", "dis", "div"}
    click(qtbot, page.stop_button)
    wait_status(qtbot, page, "stopped")
    saved = len(read_history(out))
    assert 2 <= saved < 40 and epochs_seen[:2] == [1, 2]
    assert not page.start_button.isEnabled() and page.resume_button.isEnabled()  # the folder holds a run now

    page.form.epochs.setValue(saved + 1)
    click(qtbot, page.resume_button)
    wait_status(qtbot, page, "finished")
    assert len(read_history(out)) == saved + 1 and epochs_seen[-1] == saved + 1
    assert page.curves.epoch_count == saved + 1  # the resumed curves continue the saved ones
    stall_probe.assert_responsive(0.1)

    row = page.runs.row_of(str(out))
    assert row >= 0 and page.runs.table.item(row, 3).text() == f"{saved + 1}/{saved + 1}"
    page.runs.table.selectRow(row)
    with qtbot.waitSignal(window.active_run_changed) as blocker:
        click(qtbot, page.runs.open_button)
    ref = blocker.args[0]
    assert Path(ref.path) == out and ref.model == "smallnet" and ref.epoch == saved + 1
    assert window.active_run == ref and "tiny" in window.run_label.text()


def test_child_errors_and_kills_are_shown_and_the_window_keeps_working(window, qtbot, data_dir, tmp_path):
    page = window.train
    configure(window, data_dir, tmp_path / "runs" / "a", epochs=500)
    page.form.pretrained.setCurrentText(str(tmp_path / "missing.pth"))
    click(qtbot, page.start_button)
    wait_status(qtbot, page, "failed")
    assert page.error_box.isVisible() and "missing.pth" in page.error_title.text()
    assert page.job.state.exit_code == 2

    page.form.pretrained.setCurrentIndex(0)  # from scratch
    click(qtbot, page.start_button)
    qtbot.waitUntil(lambda: len(page.curves.batch_x) > 0, timeout=SLOW)
    os.kill(page.job.pid, signal.SIGKILL)  # a crash / the out-of-memory killer, from outside
    wait_status(qtbot, page, "failed", timeout=30000)
    assert page.error_box.isVisible() and "SIGKILL" in page.error_title.text()
    assert page.job.state.exit_code == -signal.SIGKILL
    assert window.isVisible() and page.form.isEnabled() and page.new_button.isEnabled()

    click(qtbot, page.new_button)  # a fresh output folder: start again works
    click(qtbot, page.start_button)
    qtbot.waitUntil(lambda: len(page.curves.batch_x) > 0, timeout=SLOW)
    assert not page.error_box.isVisible()
    window.close()  # asks the job to stop (confirm_close is off in tests), waits, then closes
    assert window.isVisible()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=SLOW)
    assert page.job.state.status == "stopped"


def test_the_gui_trains_the_same_model_as_the_cli(window, qtbot, data_dir, tmp_path):
    page = window.train
    gui_out, cli_out = tmp_path / "gui", tmp_path / "cli"
    configure(window, data_dir, gui_out, epochs=2, seed=3)
    cli = subprocess.Popen([sys.executable, "-m", "engine", "train", str(data_dir), "--out", str(cli_out),
                            "--model", "smallnet", "--method", "mcloss", "--epochs", "2", "--img-size", "32",
                            "--batch-size", "4", "--device", "cpu", "--seed", "3"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        click(qtbot, page.start_button)
        wait_status(qtbot, page, "finished")
        _, err = cli.communicate(timeout=SLOW / 1000)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, err
    gui_cfg, cli_cfg = read_meta(gui_out)["config"], read_meta(cli_out)["config"]
    assert gui_cfg.pop("out") == str(gui_out) and cli_cfg.pop("out") == str(cli_out)
    assert json.dumps(gui_cfg, sort_keys=True) == json.dumps(cli_cfg, sort_keys=True)
    gui_hist, cli_hist = read_history(gui_out), read_history(cli_out)
    assert len(gui_hist) == len(cli_hist) == 2
    for g, c in zip(gui_hist, cli_hist):
        for key in ("test_top1", "test_loss", "loss", "ce", "dis", "div"):
            assert g[key] == pytest.approx(c[key], rel=1e-5, abs=1e-7), key
    assert (gui_out / "model.safetensors").read_bytes() == (cli_out / "model.safetensors").read_bytes()


def test_resume_with_allow_changed_data_tells_the_child_once(window, qtbot, data_dir, tmp_path, monkeypatch):
    from engine.training.config import TrainConfig
    from engine.events import drive
    from engine.training.loop import train

    out = tmp_path / "runs" / "tiny"
    drive(train(TrainConfig(data=str(data_dir), out=str(out), model="smallnet", epochs=1, img_size=32,
                            batch_size=4, device="cpu", cache_mb=64)))
    configure(window, data_dir, out, epochs=2)
    page = window.train
    started: list[list[str]] = []
    monkeypatch.setattr(page.job, "start", lambda args, *rest: started.append(args))
    assert page.resume_button.isEnabled() and page.allow_data_change.isEnabled()
    page.allow_data_change.setChecked(True)
    click(qtbot, page.resume_button)
    assert started[-1][-2:] == ["--resume", "--allow-data-change"] and not page.allow_data_change.isChecked()
    click(qtbot, page.resume_button)  # the next Resume accepts no change unless ticked again
    assert started[-1][-1] == "--resume"
