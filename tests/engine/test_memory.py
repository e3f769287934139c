"""Memory follows the machine (engine.training.memory, engine.training.step): the live tensors counted, a step
measured, the plan against figures worked out by hand, micro-batches that give the batch's gradients, and runs short
of memory that train their whole batch checkpointed or in micro-batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import engine.training.memory as memory
from engine import runs
from engine.errors import ConfigError
from engine.events import Message, drive
from engine.models.checkpoint import set_checkpointing
from engine.training import distributed as ddp
from engine.training.config import TrainConfig
from engine.training.loop import loss_model, train
from engine.training.step import forward_backward

from ..conftest import make_class_folders

CPU = torch.device("cpu")


class Scaled(nn.Module):
    """loss = sum(x · w): a training pass holds the input x and x · w (3·S·S float32 each an image, 3 MB at 512 px)
    at the end of the forward pass, and x and the gradient's x-sized product with x in the backward pass (the
    gradient of the sum is a view of one number): 6 MB an image at its peak, nothing fixed."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x, y):
        return (x * self.w).sum(), {}


def test_live_tensors_are_counted_until_freed():
    with memory.LiveTensors() as live:
        a = torch.ones(2 ** 18)  # 1 MB
        b = a * 2
        del a
        c = b[:10]  # a view: no new storage
        assert live.live == memory.MB
    assert live.peak == 2 * memory.MB
    del b, c
    assert live.live == 0


def test_the_step_is_measured_and_the_random_state_kept():
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    cost = memory.measure_step(Scaled, 512)
    assert cost.per_image_mb == pytest.approx(6.0, abs=1e-3) and cost.fixed_mb == pytest.approx(0.0, abs=1e-3)
    assert cost.param_mb == 0 and cost.eval_per_image_mb == 0  # no model of its own: no test pass
    assert memory.measure_step(Scaled, 512, checkpoint=True) is None  # no backbone to checkpoint
    assert torch.equal(torch.rand(3), want)  # building and running the probe model drew nothing for the run


def test_the_measured_checkpointed_step_is_smaller():
    cfg = TrainConfig(data="d", out="o", model="smallnet", method="parts", img_size=96)
    plain = memory.measure_step(lambda: loss_model(cfg, 3), 96)
    checkpointed = memory.measure_step(lambda: loss_model(cfg, 3), 96, checkpoint=True)
    # the small net's activations at 96 px: the first block's alone are most of what a plain pass keeps
    assert 0 < checkpointed.per_image_mb < 0.7 * plain.per_image_mb
    assert 0 < plain.eval_per_image_mb < plain.per_image_mb
    assert plain.param_mb == checkpointed.param_mb == 0  # 60 k parameters round to 0 MB


def _costs(plain: memory.StepCost, checkpointed: memory.StepCost | None):
    """A stand-in for measure_step: the given costs, without and with checkpointing."""
    return lambda build, size, checkpoint=False: checkpointed if checkpoint else plain


@pytest.fixture
def factors(monkeypatch):
    """Round factors for figures worked out by hand: 1.8× the live tensors, 3× checkpointed."""
    monkeypatch.setattr(memory, "STEP_FACTOR", 1.8)
    monkeypatch.setattr(memory, "CHECKPOINT_FACTOR", 3.0)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


def test_plan_by_hand(monkeypatch, factors):
    # 3 MB an image, 1 in the test pass → a step of n images 1.8 · 3 · n MB: 32 → 173 MB, 8 → 43, 4 → 22;
    # checkpointed 0.25 MB an image, 3 · 0.25 · n: 32 → 24, 16 → 12. Total 8000 MB: the reserve is 1024 MB
    plain = memory.StepCost(3.0, 0.0, 1.0, 0)
    checkpointed = memory.StepCost(0.25, 0.0, 1.0, 0, True, largest_mb=4.0)
    asked = []

    def costs(build, size, checkpoint=False):
        asked.append(checkpoint)
        return checkpointed if checkpoint else plain

    monkeypatch.setattr(memory, "measure_step", costs)
    p = memory.plan(32, 512, CPU, Scaled, available=2000, total=8000)
    assert (p.budget_mb, p.micro_batch, p.step_mb, p.cache_mb, p.eval_batch, p.checkpoint, p.own_pages_mb) == (
        976, 32, 173, 803, 32, False, 0)
    assert p.notes() == [] and asked == [False]
    p = memory.plan(32, 512, CPU, Scaled, available=1100, total=8000)  # 76 MB: micro-batches of 8 are enough
    assert (p.budget_mb, p.micro_batch, p.step_mb, p.cache_mb, p.eval_batch, p.checkpoint) == (
        76, 8, 43, 33, 8, False)
    assert "micro-batches of 8" in p.notes()[0] and "checkpointing" not in p.notes()[0]
    assert asked == [False, False]  # checkpointing not even measured
    p = memory.plan(32, 512, CPU, Scaled, available=1064, total=8000)  # 40 MB: 4 plain, the whole batch checkpointed
    assert (p.budget_mb, p.micro_batch, p.step_mb, p.cache_mb, p.checkpoint, p.full_step_mb) == (
        40, 32, 24, 16, True, 173)
    assert p.eval_batch == 13  # the test pass: 1.8 · 1 MB an image, 13 fit in the step's 24 MB
    assert p.own_pages_mb == 8  # a sixteenth of the largest tensor of 32 images of 4 MB
    assert "activation checkpointing" in p.notes()[0] and "micro-batches" not in p.notes()[0]
    assert p.to_dict()["checkpoint"] is True and asked[-1] is True  # what model.json's memory entry records
    p = memory.plan(32, 512, CPU, Scaled, available=1040, total=8000)  # 16 MB: 2 plain, 16 checkpointed
    assert (p.micro_batch, p.step_mb, p.cache_mb, p.checkpoint, p.own_pages_mb) == (16, 12, 4, True, 4)
    assert "checkpointing" in p.notes()[0] and "micro-batches of 16" in p.notes()[0]
    monkeypatch.setattr(memory, "measure_step", _costs(plain, memory.StepCost(2.0, 0.0, 1.0, 0, True)))
    p = memory.plan(32, 512, CPU, Scaled, available=1064, total=8000)  # checkpointed 6 · n: also only 4
    assert (p.micro_batch, p.step_mb, p.checkpoint) == (4, 22, False)  # a tie: no recomputation
    monkeypatch.setattr(memory, "measure_step", _costs(plain, None))
    p = memory.plan(32, 512, CPU, Scaled, available=1064, total=8000)  # nothing to checkpoint: micro-batches
    assert (p.micro_batch, p.step_mb, p.cache_mb, p.eval_batch, p.checkpoint) == (4, 22, 18, 4, False)
    assert memory.plan(32, 512, CPU, Scaled, available=2000, total=8000, cache_cap_mb=100).cache_mb == 100
    # two training processes on this machine: each gets half of the free memory and of the reserve
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    p = memory.plan(32, 512, CPU, Scaled, available=2000, total=8000)
    assert (p.budget_mb, p.micro_batch, p.cache_mb) == (488, 32, 315)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    # on CUDA the step's tensors live on the GPU: the host keeps everything for the cache
    p = memory.plan(32, 512, torch.device("cuda"), Scaled, available=2000, total=8000)
    assert (p.micro_batch, p.step_mb, p.cache_mb, p.checkpoint) == (32, 0, 976, False)
    monkeypatch.setattr(memory, "measure_step", costs)
    with pytest.raises(ConfigError, match="one 512 px image needs about 1 MB and 0 MB are free"):
        memory.plan(32, 512, CPU, Scaled, available=1024, total=8000)


def test_the_test_batch_fits_in_the_step(monkeypatch, factors):
    # a checkpointed step of 16 takes 3 · 16 · 1 = 48 MB; a test pass 1.8 · 0.5 MB an image: 53 would fit, but
    # at most max(16, 32); at 4 MB an image in the test pass only 6 images fit
    monkeypatch.setattr(memory, "measure_step", _costs(memory.StepCost(10.0, 0.0, 0.5, 0),
                                                       memory.StepCost(1.0, 0.0, 0.5, 0, True)))
    assert memory.plan(16, 448, CPU, Scaled, available=1100, total=8000).eval_batch == 32
    monkeypatch.setattr(memory, "measure_step", _costs(memory.StepCost(10.0, 0.0, 4.0, 0),
                                                       memory.StepCost(1.0, 0.0, 4.0, 0, True)))
    p = memory.plan(16, 448, CPU, Scaled, available=1100, total=8000)
    assert (p.micro_batch, p.checkpoint, p.step_mb, p.eval_batch) == (16, True, 48, 6)


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


def test_a_run_short_of_memory_trains_in_micro_batches(tmp_path, monkeypatch, factors):
    data = make_class_folders(tmp_path / "data", classes=3, per_class=10, size=(36, 36))
    # 10 MB an image, 1 MB of parameters, nothing to checkpoint: a step of 8 would need 1.8 · 10 · 8 + 4 = 148 MB;
    # with 80 MB free (1024 kept) the largest divisor of 8 that fits is 4 (76 MB), and the cache gets the 4 MB left
    monkeypatch.setattr(memory, "measure_step", _costs(memory.StepCost(10.0, 0.0, 0.0, 1), None))
    monkeypatch.setattr(memory, "available_mb", lambda: 1104)
    monkeypatch.setattr(memory, "total_mb", lambda: 8000)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), model="smallnet", epochs=1, img_size=32,
                      batch_size=8, seed=0, device="cpu")
    events = []
    drive(train(cfg), events.append)
    saved = runs.read_meta(tmp_path / "run")["memory"]
    assert (saved["batch"], saved["micro_batch"], saved["cache_mb"], saved["eval_batch"]) == (8, 4, 4, 4)
    assert saved["checkpoint"] is False
    notes = [e.text for e in events if isinstance(e, Message) and e.level == "warning"]
    assert any("micro-batches of 4" in n for n in notes), notes
    assert runs.read_history(tmp_path / "run")[0]["loss"] > 0


def test_a_run_short_of_memory_trains_its_whole_batch_checkpointed(tmp_path, monkeypatch, factors):
    data = make_class_folders(tmp_path / "data", classes=3, per_class=10, size=(36, 36))
    # 10 MB an image plain, 2 MB checkpointed, 1 MB of parameters: a step of 8 needs 148 MB plain, 3 · 2 · 8 + 4
    # = 52 MB checkpointed; with 80 MB free the whole batch runs checkpointed and the cache gets 80 - 48 - 4 = 28
    monkeypatch.setattr(memory, "measure_step", _costs(memory.StepCost(10.0, 0.0, 0.0, 1),
                                                       memory.StepCost(2.0, 0.0, 0.0, 1, True)))
    monkeypatch.setattr(memory, "available_mb", lambda: 1104)
    monkeypatch.setattr(memory, "total_mb", lambda: 8000)
    segments, pages = [], []
    monkeypatch.setattr(memory, "set_checkpointing", lambda model, on=True: segments.append(
        set_checkpointing(model, on)))
    monkeypatch.setattr(memory.allocator, "own_pages", pages.append)  # this test process keeps its allocator
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), model="smallnet", method="parts", epochs=1,
                      img_size=32, batch_size=8, seed=0, device="cpu")
    events = []
    drive(train(cfg), events.append)
    saved = runs.read_meta(tmp_path / "run")["memory"]
    assert (saved["batch"], saved["micro_batch"], saved["checkpoint"], saved["cache_mb"]) == (8, 8, True, 28)
    assert saved["full_step_mb"] == 144
    assert segments and segments[0] > 2  # the small net's body, cut before each convolution
    assert pages == [saved["own_pages_mb"]] and saved["own_pages_mb"] >= 1
    notes = [e.text for e in events if isinstance(e, Message) and e.level == "warning"]
    assert any("activation checkpointing" in n for n in notes), notes
    assert runs.read_history(tmp_path / "run")[0]["loss"] > 0


def test_cache_setting_is_checked():
    with pytest.raises(ConfigError, match="cache_mb=-1"):
        TrainConfig(data="d", out="o", cache_mb=-1)
    assert TrainConfig(data="d", out="o").cache_mb is None  # sized from the free memory


ALLOCATOR_CHECK = """
import ctypes, json
import torch
import engine.training.allocator as allocator

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info

def own_pages_of(nbytes):  # bytes on pages of their own while a tensor of nbytes lives
    before = libc.mallinfo2().hblkhd
    t = torch.empty(nbytes // 4)
    return libc.mallinfo2().hblkhd - before

MB = 2 ** 20
out = {"kept": allocator.kept_threshold(), "launcher": own_pages_of(64 * MB)}
with allocator.probing():
    out["probing"] = own_pages_of(64 * MB)
out["after"] = own_pages_of(64 * MB)
allocator.own_pages(16)
out["own_pages"] = own_pages_of(64 * MB)
out["small"] = own_pages_of(8 * MB)
print(json.dumps(out))
"""


@pytest.mark.skipif(not memory.allocator.is_glibc(), reason="glibc's mallopt only")
def test_big_blocks_get_pages_of_their_own_while_probing_and_checkpointed(tmp_path):
    # in a process with the launcher's malloc settings: a 64 MB tensor comes from the heap, except while the plan
    # probes (blocks of 1 MB and more on their own pages) and after own_pages(16); an 8 MB one stays in the heap
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000"}
    out = subprocess.run([sys.executable, "-c", ALLOCATOR_CHECK], env=env, capture_output=True, text=True,
                         cwd=str(memory.__file__).rsplit("/engine/", 1)[0], timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    mb = memory.MB
    assert got["kept"] == 4000000000
    assert got["launcher"] == 0 and got["after"] == 0  # the heap, as the launcher wants it
    assert got["probing"] >= 64 * mb and got["own_pages"] >= 64 * mb
    assert got["small"] == 0


def test_fieldmark_memory_mb_sets_the_plans_machine_and_bad_values_are_named(monkeypatch):
    monkeypatch.setenv("FIELDMARK_MEMORY_MB", "6000")
    assert memory.available_mb() == 6000 and memory.total_mb() == 6000
    for bad in ("6 GB", "-1", "100"):
        monkeypatch.setenv("FIELDMARK_MEMORY_MB", bad)
        with pytest.raises(memory.ConfigError, match=r"FIELDMARK_MEMORY_MB=.*give the memory the run may count on "
                                                     r"in MB, a whole number of at least 256") as info:
            memory.available_mb()
        assert repr(bad) in str(info.value)
    monkeypatch.delenv("FIELDMARK_MEMORY_MB")
    assert 0 < memory.available_mb() <= memory.total_mb()


def test_a_memory_cgroup_limits_what_is_available(tmp_path):
    # cgroup v2: a limit of 4 GiB with 1 GiB used leaves 3 GiB; "max" is no limit; v1's huge number is none either
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text(f"{4 * 2 ** 30}\n")
    (v2 / "memory.current").write_text(f"{2 ** 30}\n")
    assert memory._cgroup_mb(str(v2)) == (4096, 1024)
    (v2 / "memory.max").write_text("max\n")
    assert memory._cgroup_mb(str(v2)) is None
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(str(2 ** 63 - 4096))
    (v1 / "memory.usage_in_bytes").write_text("5")
    assert memory._cgroup_mb(str(tmp_path / "v1")) is None
    (v1 / "memory.limit_in_bytes").write_text(str(3 * 2 ** 30))
    assert memory._cgroup_mb(str(tmp_path / "v1")) == (3072, 0)
    assert memory._cgroup_mb(str(tmp_path / "nowhere")) is None
