"""Resume continues the same run (issue 16, items 2 and 3): the learning-rate schedule, the settings and the
GradScaler travel in resume.pt; another --epochs re-plans the rest without the rate rising; DataLoader workers see
each epoch, so an epoch's augmentation with workers is the one without, and a resumed run equals an
uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, SequentialSampler

from engine import runs
from engine.errors import Cancelled, ConfigError
from engine.events import BatchEnd, Message
from engine.training.config import TrainConfig
from engine.events import drive
from engine.training.loop import train

from ..conftest import make_class_folders


def tiny_cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), model="smallnet", method="mcloss", epochs=4, img_size=32,
                batch_size=8, seed=3, device="cpu", cache_mb=64, warmup_epochs=1.5)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_class_folders(tmp_path_factory.mktemp("d"), classes=3, per_class=10, size=(36, 36))


def stop_after(batches: int):
    seen = {"n": 0}

    def count(ev):
        if isinstance(ev, BatchEnd):
            seen["n"] += 1

    return count, (lambda: seen["n"] >= batches)


def cut(cfg, batches: int) -> None:
    """Train ``cfg`` and stop it after ``batches`` batches (3 a epoch here)."""
    count, stop = stop_after(batches)
    with pytest.raises(Cancelled):
        drive(train(cfg, should_stop=stop), count)


def lrs(run) -> list[float]:
    return [h["lr"] for h in runs.read_history(run)]


@pytest.fixture
def step_lrs(monkeypatch):
    """The new layers' learning rate at every optimizer step, in order."""
    seen: list[float] = []
    original = torch.optim.SGD.step

    def step(self, *args, **kwargs):
        seen.append(self.param_groups[1]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    return seen


def test_each_epochs_learning_rate_after_a_resume_is_the_uninterrupted_ones(data, tmp_path, step_lrs):
    drive(train(tiny_cfg(data, tmp_path / "full")))
    full = list(step_lrs)
    cut(tiny_cfg(data, tmp_path / "cut"), 7)  # in epoch 3: epochs 1-2 saved, just after the warm-up
    step_lrs.clear()
    drive(train(tiny_cfg(data, tmp_path / "cut"), resume=True))
    assert step_lrs == full[6:]  # every step of epochs 3-4
    assert lrs(tmp_path / "cut") == lrs(tmp_path / "full")
    state = runs.load_resume(tmp_path / "cut")
    assert state["schedule"] == {"steps_per_epoch": 3, "warmup": 4, "total": 12, "start": 0, "scale": 1.0}
    assert state["base_lrs"] == [0.05, 0.05] and state["loss_weights"] == {"mu": 1.5, "lam": 10.0, "xi": 3,
                                                                     "mc_conc": 0.0}
    assert "scaler" in state


def test_more_epochs_on_resume_never_raise_the_learning_rate(data, tmp_path, step_lrs):
    run = tmp_path / "run"
    cut(tiny_cfg(data, run), 7)
    last_saved = step_lrs[5]  # the last step of epoch 2, the resume point
    before = lrs(run)
    step_lrs.clear()
    events: list = []
    drive(train(tiny_cfg(data, run, epochs=7), resume=True), events.append)
    assert len(step_lrs) == 15 and step_lrs[0] <= last_saved, f"the learning rate jumped up: {last_saved} -> {step_lrs}"
    assert all(b <= a for a, b in zip(step_lrs, step_lrs[1:])), f"the learning rate rose after the resume: {step_lrs}"
    after = lrs(run)
    assert after[:2] == before and len(after) == 7
    assert any(isinstance(e, Message) and "re-planned for 7 epochs instead of 4" in e.text for e in events)
    assert runs.read_meta(run)["schedule"]["total"] == 21
    # fewer epochs than done: refused, naming both
    with pytest.raises(ConfigError, match="epochs=5.*already trained 7 epochs"):
        drive(train(tiny_cfg(data, run, epochs=5), resume=True))


def test_resume_refuses_other_learning_rates_and_loss_weights(data, tmp_path):
    run = tmp_path / "run"
    drive(train(tiny_cfg(data, run, epochs=1)))
    for change, needle in [({"lr_head": 0.5}, "lr_head=0.5.*started with lr_head=0.05"),
                           ({"mu": 0.1}, "mu=0.1.*started with mu=1.5"),
                           ({"warmup_epochs": 0.5}, "warmup_epochs=0.5"), ({"batch_size": 4}, "batch_size=4")]:
        with pytest.raises(ConfigError, match=needle):
            drive(train(tiny_cfg(data, run, epochs=2, **change), resume=True))


# ----------------------------------------------------------------------------------------------- workers
def test_workers_see_the_epoch_in_the_augmentation(data):
    from engine.data import scan
    from engine.data.loader import EpochSampler, ImageCache, ImageDataset
    from engine.data.transforms import Preprocessing

    cache = ImageCache(scan(data).split("train"), Preprocessing.for_size(32), 64)
    for _ in cache.iter_load():
        pass
    ds = ImageDataset(cache, train=True, seed=1)
    sampler = EpochSampler(SequentialSampler(range(len(ds))))
    loader = DataLoader(ds, 8, sampler=sampler, num_workers=2, persistent_workers=True)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        epochs.append(torch.cat([x for x, _ in loader]))
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])
    for epoch in (0, 2):  # each one is what the same epoch gives without workers
        sampler.set_epoch(epoch)
        inline = torch.cat([x for x, _ in DataLoader(ds, 8, sampler=sampler)])
        assert torch.equal(inline, epochs[epoch])


def test_training_with_workers_is_training_without_and_resumes_the_same(data, tmp_path):
    cfg = tiny_cfg(data, tmp_path / "inline", epochs=3)
    drive(train(cfg))
    drive(train(cfg.replace(out=str(tmp_path / "workers"), workers=2)))
    inline, workers = runs.read_history(tmp_path / "inline"), runs.read_history(tmp_path / "workers")
    assert [h["loss"] for h in workers] == pytest.approx([h["loss"] for h in inline], rel=1e-5)

    cut(cfg.replace(out=str(tmp_path / "cut"), workers=2), 4)  # in epoch 2
    drive(train(cfg.replace(out=str(tmp_path / "cut"), workers=2), resume=True))
    resumed = runs.read_history(tmp_path / "cut")
    assert [h["loss"] for h in resumed] == pytest.approx([h["loss"] for h in workers], rel=1e-5)
    a = runs.load_run(tmp_path / "cut").model.state_dict()
    b = runs.load_run(tmp_path / "workers").model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-6) for k in a)


def test_resume_carries_the_gradscaler(data, tmp_path, monkeypatch):
    """float16 autocast with a GradScaler (CUDA without bfloat16; here on the CPU, which runs it too): the scale
    that overflows halved must not restart at 65536 after a resume, or steps the run took are skipped again."""
    import engine.training.loop as loop

    monkeypatch.setattr(loop, "amp_dtype", lambda device: torch.float16)
    cfg = tiny_cfg(data, tmp_path / "full", epochs=3)
    drive(train(cfg))
    cut(cfg.replace(out=str(tmp_path / "cut")), 4)  # in epoch 2
    drive(train(cfg.replace(out=str(tmp_path / "cut")), resume=True))
    assert [h["loss"] for h in runs.read_history(tmp_path / "cut")] == \
        pytest.approx([h["loss"] for h in runs.read_history(tmp_path / "full")], rel=1e-5)
    full, resumed = runs.load_resume(tmp_path / "full"), runs.load_resume(tmp_path / "cut")
    assert full["scaler"]["scale"] < 65536.0  # overflows happened: the state is worth keeping
    assert resumed["scaler"] == full["scaler"]
