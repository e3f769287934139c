"""SIGKILL during training, five times at random batches, then `--resume` each time: the run finishes, every kill
loses at most the epoch in progress, the run folder stays readable throughout, and the result is the one an
uninterrupted run gives."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from engine import runs
from engine.training.config import TrainConfig
from engine.events import drive
from engine.training.loop import train

from ..conftest import make_class_folders

EPOCHS = 6
KILLS = 5


def train_argv(data, run, *extra: str) -> list[str]:
    return ["train", str(data), "--out", str(run), "--model", "smallnet", "--img-size", "32", "--batch-size", "4",
            "--epochs", str(EPOCHS), "--seed", "2", "--json-events", *extra]


def test_sigkill_at_random_batches_then_resume(fork_cli, tmp_path):
    data = make_class_folders(tmp_path / "data", classes=3, per_class=6, size=(36, 36))
    run = tmp_path / "run"
    seed = int(os.environ.get("FIELDMARK_KILL_SEED", time.time_ns() % 100000))
    rng = random.Random(seed)
    why = f"(FIELDMARK_KILL_SEED={seed} replays this test)"
    kills = 0

    ref = fork_cli.start(*train_argv(data, tmp_path / "ref"))  # the uninterrupted run, for the final comparison
    for kill in range(KILLS):
        resume = (run / runs.RESUME).exists()
        # the child kills itself at a random batch of those it has left, up to 50 ms after it ends: anywhere in the
        # next batch, or in an epoch's evaluation and save; it cannot finish first (forkcli._arm_kill)
        child = fork_cli.start(*train_argv(data, run, *(["--resume"] if resume else [])),
                               kill=(rng.random(), rng.random() * 0.05))
        done_epoch, batch_epoch = 0, 0
        for ev in child.events():
            if ev["type"] == "Started":
                # resume.pt is the resume point; a resumed run republishes model.json when a kill fell between the
                # two writes of one save, so both agree when training goes on
                assert ev["start_epoch"] == (runs.read_meta(run)["epoch"] if resume else 0), why
                assert not resume or ev["start_epoch"] == runs.load_resume(run)["epoch"], why
                assert ev["start_epoch"] < EPOCHS, f"kill {kill}: the run had finished {why}"
            elif ev["type"] == "BatchEnd":
                batch_epoch = ev["epoch"]
            elif ev["type"] == "EpochEnd":
                done_epoch = ev["epoch"]
        code = child.wait()
        assert code == -signal.SIGKILL, f"kill {kill + 1}: exit {code} {why}: {child.err.read_text()[-2000:]}"
        if (run / runs.MODEL_JSON).exists():
            meta = runs.read_meta(run)  # readable after every kill
            runs.load_run(run)
            saved = meta["epoch"]
        else:
            saved = 0
        assert saved >= done_epoch, f"kill {kill + 1}: epoch {done_epoch} was reported done, {saved} is saved {why}"
        assert saved >= batch_epoch - 1, f"kill {kill + 1} in epoch {batch_epoch} lost more than that epoch {why}"
        assert saved < EPOCHS, f"kill {kill + 1} came after the last save {why}"
        # a kill inside an atomic write can leave its hidden temporary file (nothing runs after SIGKILL); it never
        # replaces a real file, and the next --resume removes it (checked after the final run below)
        assert all(p.name.startswith(".") for p in run.glob("*.tmp")), why
        kills += 1

    assert kills == KILLS, why
    final = fork_cli.start(*train_argv(data, run, "--resume"))
    ends = [ev["epoch"] for ev in final.events() if ev["type"] == "EpochEnd"]
    assert final.wait() == 0, final.err.read_text()
    assert ends and ends[-1] == EPOCHS, why  # no kill lands after the last save: the last resume has work left
    assert ref.wait() == 0, ref.err.read_text()

    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp")), why
    lines = (run / runs.METRICS).read_text().splitlines()
    assert len(lines) == EPOCHS, why
    hist, ref_hist = runs.read_history(run), runs.read_history(tmp_path / "ref")
    assert [h["epoch"] for h in hist] == list(range(1, EPOCHS + 1)), why
    assert runs.read_meta(run)["epoch"] == EPOCHS
    for mine, theirs in zip(hist, ref_hist):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4), (mine["epoch"], why)
        assert mine["test_top1"] == theirs["test_top1"], (mine["epoch"], why)


def test_a_kill_between_the_epoch_files_loses_no_metrics_line(tmp_path):
    """The window a SIGKILL can hit inside one epoch's save: resume.pt of epoch 2 is written, metrics.jsonl still
    holds one line. Resuming must still end with one line per epoch (resume.pt carries the history)."""
    data = make_class_folders(tmp_path / "data", classes=2, per_class=5, size=(36, 36))
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), model="smallnet", img_size=32, batch_size=4,
                      epochs=2, seed=1)
    drive(train(cfg))
    metrics = tmp_path / "run" / runs.METRICS
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
    drive(train(cfg.replace(epochs=3), resume=True))
    assert [h["epoch"] for h in runs.read_history(tmp_path / "run")] == [1, 2, 3]
