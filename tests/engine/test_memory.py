"""Memory follows the machine (engine.training.memory, engine.training.step): the plan against figures worked out
by hand, micro-batches that give the batch's gradients, and a run that trains in micro-batches when memory is
short."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import engine.training.memory as memory
from engine import runs
from engine.errors import ConfigError
from engine.events import Message, drive
from engine.training import distributed as ddp
from engine.training.config import TrainConfig
from engine.training.loop import train
from engine.training.step import forward_backward

from ..conftest import make_class_folders

CPU = torch.device("cpu")


class Scaled(nn.Module):
    """loss = mean(x · w): autograd saves x for the backward pass (w is a parameter, not counted), so a training
    pass saves exactly 3·S·S float32 per image: 3 MB at 512 px."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x, y):
        return (x * self.w).mean(), {}


def test_the_step_is_measured_and_the_random_state_kept():
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    per_image, params = memory.measure_step(Scaled, 512)
    assert per_image == pytest.approx(3.0) and params == 0
    assert torch.equal(torch.rand(3), want)  # building and running the probe model drew nothing for the run


def test_plan_by_hand(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    # 3 MB an image saved → a step of n images 1.8 · 3 · n MB: 32 → 173 MB, 16 → 86, 8 → 43.
    # total 8000 MB: the reserve is max(1024, 800) = 1024 MB
    p = memory.plan(32, 512, CPU, Scaled, available=2000, total=8000)
    assert (p.budget_mb, p.micro_batch, p.step_mb, p.cache_mb, p.eval_batch) == (976, 32, 173, 803, 32)
    assert p.notes() == []
    p = memory.plan(32, 512, CPU, Scaled, available=1100, total=8000)  # 76 MB: only 8 images a pass fit
    assert (p.budget_mb, p.micro_batch, p.step_mb, p.cache_mb, p.eval_batch) == (76, 8, 43, 33, 8)
    assert "micro-batches of 8" in p.notes()[0]
    assert memory.plan(32, 512, CPU, Scaled, available=2000, total=8000, cache_cap_mb=100).cache_mb == 100
    # two training processes on this machine: each gets half of the free memory and of the reserve
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    p = memory.plan(32, 512, CPU, Scaled, available=2000, total=8000)
    assert (p.budget_mb, p.micro_batch, p.cache_mb) == (488, 32, 315)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    # on CUDA the step's tensors live on the GPU: the host keeps everything for the cache
    p = memory.plan(32, 512, torch.device("cuda"), Scaled, available=2000, total=8000)
    assert (p.micro_batch, p.step_mb, p.cache_mb) == (32, 0, 976)
    with pytest.raises(ConfigError, match="one 512 px image needs about 5 MB and 1 MB are free"):
        memory.plan(32, 512, CPU, Scaled, available=1025, total=8000)


def test_micro_batches_give_the_batch_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    net = net.double()

    class WithLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, y):
            logits = self.net(x)
            return nn.functional.cross_entropy(logits, y), {"top": logits.max(1).values.mean().detach()}

    model = WithLoss()
    x, y = torch.randn(12, 3, 8, 8, dtype=torch.float64), torch.arange(12) % 3
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ctx = ddp.Context(CPU)
    results = []
    for micro in (12, 4, 5):  # 5: micro-batches of 5, 5 and 2 images
        net.zero_grad()
        loss, parts, bad = forward_backward(model, x, y, micro, scaler, None, ctx)
        results.append((loss, parts["top"], [p.grad.clone() for p in net.parameters()]))
        assert bad == []
    whole = results[0]
    with torch.no_grad():
        assert whole[0] == pytest.approx(float(nn.functional.cross_entropy(net(x), y)), abs=1e-12)
    for loss, top, grads in results[1:]:
        assert loss == pytest.approx(whole[0], abs=1e-12) and top == pytest.approx(whole[1], abs=1e-12)
        for g, h in zip(grads, whole[2]):
            assert torch.allclose(g, h, atol=1e-12, rtol=0)


def test_a_run_short_of_memory_trains_in_micro_batches(tmp_path, monkeypatch):
    data = make_class_folders(tmp_path / "data", classes=3, per_class=10, size=(36, 36))
    # 10 MB an image, 1 MB of parameters: a step of 8 would need 1.8 · 10 · 8 + 3 = 147 MB; with 80 MB free
    # (1024 kept) the largest divisor of 8 that fits is 4 (75 MB), and the cache gets the 5 MB left
    monkeypatch.setattr(memory, "measure_step", lambda build, size: (10.0, 1))
    monkeypatch.setattr(memory, "available_mb", lambda: 1104)
    monkeypatch.setattr(memory, "total_mb", lambda: 8000)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), model="smallnet", epochs=1, img_size=32,
                      batch_size=8, seed=0, device="cpu")
    events = []
    drive(train(cfg), events.append)
    saved = runs.read_meta(tmp_path / "run")["memory"]
    assert (saved["batch"], saved["micro_batch"], saved["cache_mb"], saved["eval_batch"]) == (8, 4, 5, 4)
    notes = [e.text for e in events if isinstance(e, Message) and e.level == "warning"]
    assert any("micro-batches of 4" in n for n in notes), notes
    assert runs.read_history(tmp_path / "run")[0]["loss"] > 0


def test_cache_setting_is_checked():
    with pytest.raises(ConfigError, match="cache_mb=-1"):
        TrainConfig(data="d", out="o", cache_mb=-1)
    assert TrainConfig(data="d", out="o").cache_mb is None  # sized from the free memory
