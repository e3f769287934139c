"""The training loop's steps, each on its own (engine.training.loop): ``setup`` builds what the epochs share,
``train_one_epoch`` runs one pass, ``evaluate_epoch`` scores the test split and ``save_epoch`` writes the run
folder; and the images of a run (engine.training.images). A smallnet on toy birds (64 px) trained at 32 px."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import engine.training.distributed as ddp
from engine import runs
from engine.data import scan
from engine.data.transforms import Preprocessing, normalize
from engine.errors import Cancelled, EngineError
from engine.events import BatchEnd, Message, Progress, Started, drive
from engine.toybirds.dataset import generate
from engine.training.config import TrainConfig
from engine.training.images import failed_files, load_caches, make_loaders
from engine.training.memory import MemoryPlan
from engine.training.loop import evaluate_epoch, save_epoch, setup, train, train_one_epoch
from engine.training.state import EpochTrain, Training

CPU = ddp.Context(torch.device("cpu"))


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy") / "birds"
    generate(root, classes=3, per_class=8, size=64, seed=0)
    return root


def tiny_cfg(toy: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(toy), out=str(out), model="smallnet", method="mcloss", epochs=2, img_size=32,
                batch_size=4, seed=1, device="cpu", cache_mb=64)
    return TrainConfig(**{**base, **kw})


def set_up(cfg: TrainConfig, resume: bool = False, stop=lambda: False) -> tuple[Training, list]:
    events: list = []
    t = drive(setup(cfg, stop, resume, False, CPU), events.append)
    return t, events


def test_setup_builds_a_new_run_and_ends_with_started(toy, tmp_path):
    cfg = tiny_cfg(toy, tmp_path / "run")
    t, events = set_up(cfg)
    started = events[-1]
    assert isinstance(started, Started) and not any(isinstance(e, Started) for e in events[:-1])
    assert (started.num_train, started.num_test, started.start_epoch, started.steps_per_epoch) == (12, 12, 0, 3)
    assert any(isinstance(e, Progress) and e.stage == "decoding train images" for e in events)
    assert (t.start_epoch, t.history, t.steps) == (0, [], 3)
    assert t.report.classes == started.classes and t.split_doc is not None  # a new run saves its split first
    assert t.run == tmp_path / "run" and list(t.run.iterdir()) == []  # checked writable, nothing written yet
    assert not t.may_fail  # every image is in the cache
    assert [g["base_lr"] for g in t.optimizer.param_groups] == [cfg.lr_backbone, cfg.lr_head]
    assert t.schedule.steps_per_epoch == 3 and t.schedule.epochs == 2
    assert t.net.model is t.model and t.amp is None and not t.scaler.is_enabled()  # no autocast on the CPU
    assert t.meta["classes"] == t.report.classes and t.meta["config"] == cfg.to_dict()


def test_setup_of_a_resume_takes_the_run_state(toy, tmp_path):
    cfg = tiny_cfg(toy, tmp_path / "run", epochs=1)
    drive(train(cfg))
    saved = runs.load_resume(tmp_path / "run")
    t, events = set_up(cfg.replace(epochs=3), resume=True)
    assert (t.start_epoch, len(t.history), t.split_doc) == (1, 1, None)  # the split is on disk already
    assert t.history[0]["epoch"] == 1 and events[-1].start_epoch == 1
    assert any(isinstance(e, Message) and "re-planned for 3 epochs" in e.text for e in events)
    assert all(torch.equal(v, saved["model"][k]) for k, v in t.model.state_dict().items())
    assert t.optimizer.state_dict()["state"].keys() == saved["optimizer"]["state"].keys()
    assert t.schedule.epochs == 3


def test_train_one_epoch_steps_through_the_loader(toy, tmp_path):
    t, _ = set_up(tiny_cfg(toy, tmp_path / "run"))
    before = [p.detach().clone() for p in t.model.parameters()]
    events: list = []
    trained = drive(train_one_epoch(t, 0), events.append)
    assert all(isinstance(e, BatchEnd) for e in events)
    assert [(e.epoch, e.step, e.steps) for e in events] == [(1, s, 3) for s in (1, 2, 3)]
    assert isinstance(trained, EpochTrain) and trained.seen == 12 and trained.seconds > 0
    assert {"loss", "ce", "dis", "div"} <= set(trained.sums)
    assert trained.means()["loss"] == pytest.approx(sum(e.loss for e in events) / 3)  # equal batches of 4
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))
    for group in t.optimizer.param_groups:  # the rate of the last step, from the schedule
        assert group["lr"] == pytest.approx(group["base_lr"] * t.schedule.factor(2))
    assert t.model.training and not list(t.run.iterdir())  # trained, nothing saved


def test_train_one_epoch_stops_before_a_batch(toy, tmp_path):
    t, _ = set_up(tiny_cfg(toy, tmp_path / "run"))
    events: list = []
    t.stop = lambda: len(events) == 2
    with pytest.raises(Cancelled, match=r"stopped in epoch 2; epochs 1-1 are saved in"):
        drive(train_one_epoch(t, 1), events.append)
    assert len(events) == 2


def test_evaluate_epoch_is_top1_and_cross_entropy_on_the_test_split(toy, tmp_path):
    t, _ = set_up(tiny_cfg(toy, tmp_path / "run"))
    drive(train_one_epoch(t, 0))
    top1, loss = evaluate_epoch(t)
    assert not t.model.training
    with torch.no_grad():  # by hand, one test image at a time
        right, total = 0, 0.0
        for i in range(len(t.test_ds)):
            x, y = t.test_ds[i]
            logits = t.model(normalize(x.unsqueeze(0), t.pp)).float()
            right += int(logits.argmax(1).item() == y)
            total += float(nn.functional.cross_entropy(logits, torch.tensor([y])))
    assert top1 == pytest.approx(right / 12) and loss == pytest.approx(total / 12, rel=1e-5)
    t.test_loader = []  # no test image: nothing to score
    assert evaluate_epoch(t) == (None, None)


def test_save_epoch_writes_the_run_and_returns_its_row(toy, tmp_path, monkeypatch):
    t, _ = set_up(tiny_cfg(toy, tmp_path / "run"))
    trained = drive(train_one_epoch(t, 0))
    row = save_epoch(t, 0, trained, 0.5, 1.25, 3.0)
    assert row["epoch"] == 1 and row["test_top1"] == 0.5 and row["seconds"] == 3.0
    assert row["loss"] == pytest.approx(trained.means()["loss"]) and row["lr"] == t.optimizer.param_groups[1]["lr"]
    assert t.history == [row] and t.split_doc is None  # the split went with this save
    meta = runs.read_meta(t.run)
    assert meta["epoch"] == 1 and meta["metrics"]["test_loss"] == 1.25 and meta["metrics"]["train_loss"] == row["loss"]
    assert runs.read_history(t.run) == [row] and (t.run / runs.SPLIT).is_file()
    state = runs.load_resume(t.run)
    assert state["epoch"] == 1 and state["history"] == [row] and state["schedule"] == t.schedule.to_dict()
    assert state["base_lrs"] == [g["base_lr"] for g in t.optimizer.param_groups]

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs, "save_epoch", full)
    with pytest.raises(EngineError, match=r"cannot save epoch 2 in .*\(No space left on device\): free some space, "
                                          r"then run the same command with --resume"):
        save_epoch(t, 1, trained, 0.5, 1.25, 3.0)


def test_save_epoch_on_another_rank_writes_nothing(toy, tmp_path, monkeypatch):
    t, _ = set_up(tiny_cfg(toy, tmp_path / "run"))
    trained = EpochTrain({"loss": 8.0}, 4, 2.0, 0.0)
    monkeypatch.setattr(t, "ctx", ddp.Context(torch.device("cpu"), rank=1, world_size=2))
    row = save_epoch(t, 0, trained, None, None, 3.0)
    assert row["loss"] == 2.0 and row["images_per_s"] == 2.0 and t.history == [row]
    assert list(t.run.iterdir()) == []


def test_load_caches_skips_a_photo_that_does_not_decode(toy, tmp_path):
    shutil.copytree(toy, tmp_path / "birds")
    cfg = tiny_cfg(tmp_path / "birds", tmp_path / "run")
    report = scan(cfg.data, test_fraction=cfg.test_fraction, seed=cfg.seed)
    broken = Path(report.split("train")[0].path)
    broken.write_bytes(b"not a jpeg")  # broken after the scan
    events: list = []
    caches = drive(load_caches(cfg, report, Preprocessing.for_size(32), 64, lambda: False), events.append)
    warnings = [e.text for e in events if isinstance(e, Message)]
    assert len(warnings) == 1 and broken.name in warnings[0] and warnings[0].endswith(", skipped")
    assert len(caches["train"].samples) == 11 and len(caches["test"].samples) == 12
    assert any(broken.name in s.path for s in report.skipped)

    plan = MemoryPlan(available_mb=1024, budget_mb=512, batch=4, micro_batch=4, step_mb=1, state_mb=1, cache_mb=64,
                      eval_batch=2)
    train_ds, test_ds, sampler, train_loader, test_loader = make_loaders(cfg, caches, 4, plan, CPU)
    assert len(train_loader) == 2 and train_loader.drop_last and len(test_loader) == 6  # 11 images, batches of 4
    train_ds.failed["x"] = report.skipped[0]
    reported: set[str] = set()
    assert [e.level for e in failed_files([train_ds, test_ds], reported)] == ["warning"]
    assert list(failed_files([train_ds, test_ds], reported)) == []  # each file named once
