"""Distributed training (engine.training.distributed + engine.training.loop under DDP): two gloo processes on the loopback.

The reference for "DDP trains the same model" is a single-process run with the same global batch whose
BatchNorm layers normalise each rank's share of the batch separately (``RankSplitBN``): PyTorch's SyncBatchNorm
does not run on the CPU, so under gloo each rank normalises its own half, and DDP keeps rank 0's running
statistics. With that emulation the two runs are the same computation up to the order of float sums (two
shards' gradients all-reduced vs one batch's). Both run in float64 (torch's default dtype set in every process),
so that rounding is ~1e-16 relative: in float32 it grew to 6.6e-4 on a weight over 3 epochs at lr 0.05, past any
tolerance that still means something. In float64 the largest measured difference was 1.6e-12 (a BatchNorm
running variance); the tolerances (1e-9 on the state and relative on train losses, 1e-6 relative on test losses,
whose logits go through float32) are ~600× above that,
and real bugs (a wrong shard, a missing ``set_epoch``, unreduced metrics, a wrong per-rank batch) move the losses
by percents from the first epoch on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.training import distributed as ddp
from engine import runs
from engine.cli import main as cli
from engine.training.config import TrainConfig
from engine.errors import ConfigError
from engine.events import EpochEnd, drive
from engine.training.loop import train

from ..conftest import ROOT, make_class_folders

WORLD = 2
ARGS = dict(model="smallnet", method="mcloss", epochs=3, img_size=32, batch_size=8, seed=3)

#: Installed in the workers through PYTHONPATH: float64 as torch's default dtype (FM_FLOAT64), and a log of every
#: write-like file operation under FM_AUDIT_RUN per rank.
AUDIT = '''
import os, sys
if os.environ.get("FM_FLOAT64"):
    import torch
    torch.set_default_dtype(torch.float64)
_run, _dir, _rank = os.environ.get("FM_AUDIT_RUN"), os.environ.get("FM_AUDIT_DIR"), os.environ.get("RANK")
if _run and _dir and _rank is not None:
    _log = os.path.join(_dir, "rank%s.txt" % _rank)
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    def _hook(event, args):
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            if not ((mode and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE):
                return
        elif event in ("os.rename", "os.remove", "os.mkdir"):
            path = args[1] if event == "os.rename" else args[0]
        else:
            return
        try:
            path = os.fsdecode(os.fspath(path))
        except TypeError:
            return
        if os.path.abspath(path).startswith(_run):
            with open(_log, "a") as fh:
                fh.write(event + " " + path + "\\n")
    sys.addaudithook(_hook)
'''


class RankSplitBN(nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises the samples rank r would hold (``x[r::WORLD]``) on their own and
    keeps only rank 0's running statistics: what gloo DDP does without SyncBatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        outs = [super().forward(x[0::WORLD])]
        for r in range(1, WORLD):
            outs.append(F.batch_norm(x[r::WORLD], self.running_mean.clone(), self.running_var.clone(), self.weight,
                                     self.bias, True, self.momentum or 0.0, self.eps))
        # back in the batch's order; a batch that does not split evenly (the memory plan's probe of 3 images) too
        order = torch.cat([torch.arange(r, len(x), WORLD) for r in range(WORLD)])
        return torch.cat(outs)[torch.argsort(order)]


@pytest.fixture
def one_thread():
    """One intra-op thread, as each DDP worker gets on these 2-core machines (and no spinning under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def float64():
    """torch's default dtype float64 in this process (the reference run and the loaded models), as the workers."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_class_folders(tmp_path_factory.mktemp("ddp"), classes=3, per_class=10, size=(36, 36))


def reference_run(data: Path, out: Path, monkeypatch) -> list[dict]:
    import engine.training.loop as engine_train

    real = engine_train.create_model

    def split_bn_model(*a, **kw):
        model = real(*a, **kw)
        for m in model.modules():
            if type(m) is nn.BatchNorm2d:
                m.__class__ = RankSplitBN
        return model

    monkeypatch.setattr(engine_train, "create_model", split_bn_model)
    drive(train(TrainConfig(data=str(data), out=str(out), **ARGS)))
    monkeypatch.setattr(engine_train, "create_model", real)
    return runs.read_history(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(data: Path, run: Path, audit: Path, *extra: str, torchrun: bool = False) -> subprocess.Popen:
    """`fieldmark train ... --nproc 2` (our launcher), or torchrun on 127.0.0.1 and a free port."""
    train = ["train", str(data), "--out", str(run), "--json-events", *extra,
             *[f"--{k.replace('_', '-')}={v}" for k, v in ARGS.items()]]
    if torchrun:
        argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={WORLD}",
                "--master-addr=127.0.0.1", f"--master-port={free_port()}", f"--log-dir={audit / 'torchrun'}",
                "-m", "engine", *train]
    else:
        argv = [sys.executable, "-m", "engine", *train, "--nproc", str(WORLD)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(audit), str(ROOT)]), "FM_AUDIT_RUN": str(run),
           "FM_AUDIT_DIR": str(audit), "OMP_NUM_THREADS": "1", "FM_FLOAT64": "1"}
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_two_gloo_processes_match_one_and_resume_after_a_stop(data, tmp_path, monkeypatch, one_thread, float64):
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "sitecustomize.py").write_text(AUDIT)
    run = tmp_path / "ddp-run"

    # 1. start with `fieldmark train --nproc 2`; stop the launcher (SIGTERM) once epoch 1 is reported: it stops
    #    both workers
    first = launch(data, run, audit)
    lines = []
    for line in first.stdout:
        lines.append(line)
        if '"EpochEnd"' in line:
            first.send_signal(signal.SIGTERM)
            break
    rest, err = first.communicate(timeout=120)
    ev1 = events_of("".join(lines) + rest)
    assert first.returncode == 128 + signal.SIGTERM, err
    kept = runs.read_meta(run)["epoch"]  # the run folder stays readable after the stop
    assert 1 <= kept < ARGS["epochs"]

    # 2. meanwhile (the CPU is free again), the single-process reference with rank-split BatchNorm
    ref = reference_run(data, tmp_path / "ref", monkeypatch)

    # 3. resume under torchrun (static rendezvous on the loopback): every rank reads resume.pt, the run ends
    second = launch(data, run, audit, "--resume", torchrun=True)
    out, err = second.communicate(timeout=180)
    assert second.returncode == 0, err
    ev2 = events_of(out)
    started = [e for e in ev2 if e["type"] == "Started"]
    assert len(started) == 1 and started[0]["start_epoch"] == kept and "2 processes (gloo)" in started[0]["device"]
    assert [e["epoch"] for e in ev2 if e["type"] == "EpochEnd"] == list(range(kept + 1, ARGS["epochs"] + 1))
    assert sum(e["type"] == "Started" for e in ev1) == 1  # rank 1 yields and prints nothing

    hist = runs.read_history(run)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert runs.read_meta(run)["processes"] == WORLD
    for mine, theirs in zip(hist, ref):
        for key in ("loss", "ce", "dis", "div"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-9, abs=1e-12), (mine["epoch"], key)
        assert mine["test_loss"] == pytest.approx(theirs["test_loss"], rel=1e-6), mine["epoch"]
        assert mine["test_top1"] == theirs["test_top1"]
    a, b = runs.load_run(run).model.state_dict(), runs.load_run(tmp_path / "ref").model.state_dict()
    for k in a:
        if a[k].is_floating_point():
            assert a[k].dtype == torch.float64, k
        diff = (a[k].double() - b[k].double()).abs().max().item()
        assert diff <= 1e-9, (k, diff)

    # 4. only rank 0 wrote into the run folder
    assert (audit / "rank0.txt").is_file(), "the audit hook saw no write by rank 0"
    assert not (audit / "rank1.txt").exists(), (audit / "rank1.txt").read_text()


#: Installed through PYTHONPATH: on rank FM_NAN_RANK, the FM_NAN_STEP-th training batch the loop normalises
#: becomes NaN (and so its loss).
NAN_HOOK = '''
import os
if os.environ.get("FM_NAN_RANK") == os.environ.get("RANK"):
    import engine.training.loop as _loop
    _real, _calls = _loop.normalize, [0]
    def _normalize(*args, **kwargs):
        out = _real(*args, **kwargs)
        _calls[0] += 1
        return out * float("nan") if _calls[0] == int(os.environ["FM_NAN_STEP"]) else out
    _loop.normalize = _normalize
'''


def test_a_nan_loss_on_one_rank_stops_every_rank_with_the_same_error(data, tmp_path):
    """Two gloo ranks started as torchrun would (RANK, WORLD_SIZE, MASTER_ADDR/PORT), no launcher to kill the
    survivor: rank 1's loss is NaN at step 2. Before, rank 1 raised alone and rank 0 waited in the gradient
    all-reduce (up to the process group's 30 minutes, or until gloo saw the peer's socket close, with another
    error). Both must end at once, with the same message naming the rank, epoch and step."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NAN_HOOK)
    port = free_port()
    argv = [sys.executable, "-m", "engine", "train", str(data), "--out", str(tmp_path / "run"),
            *[f"--{k.replace('_', '-')}={v}" for k, v in ARGS.items()]]
    procs = []
    try:
        for rank in range(WORLD):
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)]), "OMP_NUM_THREADS": "1",
                   "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                   "LOCAL_WORLD_SIZE": str(WORLD), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                   "FM_NAN_RANK": "1", "FM_NAN_STEP": "2"}
            procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True))
        errs = [p.communicate(timeout=150)[1] for p in procs]  # a hang guard: a rank left waiting never ends
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    last = [e.strip().splitlines()[-1] if e.strip() else "" for e in errs]
    assert [p.returncode for p in procs] == [2, 2], errs
    assert last[0].startswith("fieldmark: error: ") and last[1].startswith("fieldmark (rank 1): error: "), last
    message = last[0].split("error: ", 1)[1]
    assert last[1].split("error: ", 1)[1] == message
    assert message.startswith("the loss became nan on rank 1 of 2 in epoch 1, step 2: lower the learning rates")


def test_only_the_loss_is_checked_so_fp16_skipped_steps_train_on(data, tmp_path, monkeypatch):
    """fp16 with a GradScaler whose first scale (2^127) makes the scaled gradients overflow: it skips those steps
    and halves the scale, as it should; the finite-loss check must not take them for a diverged run."""
    import engine.training.loop as loop

    scalers = []

    class Recorded(torch.amp.GradScaler):
        def __init__(self, device, enabled=True):
            super().__init__(device, init_scale=2.0 ** 127, enabled=enabled)
            scalers.append(self)

    monkeypatch.setattr(loop, "amp_dtype", lambda device: torch.float16)  # fp16 autocast on the CPU
    monkeypatch.setattr(torch.amp, "GradScaler", Recorded)
    drive(train(TrainConfig(data=str(data), out=str(tmp_path / "run"), **{**ARGS, "epochs": 1})))
    assert scalers and scalers[0].is_enabled()
    assert scalers[0].get_scale() < 2.0 ** 127  # steps were skipped (the scale only halves on an overflow)
    assert runs.read_meta(tmp_path / "run")["epoch"] == 1


def test_process_group_timeout_is_minutes_and_can_be_set(monkeypatch):
    monkeypatch.delenv("FIELDMARK_DIST_TIMEOUT", raising=False)
    assert ddp.timeout() == ddp.TIMEOUT and ddp.TIMEOUT.total_seconds() <= 600
    monkeypatch.setenv("FIELDMARK_DIST_TIMEOUT", "1200")
    assert ddp.timeout().total_seconds() == 1200
    monkeypatch.setenv("FIELDMARK_DIST_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="FIELDMARK_DIST_TIMEOUT='soon'"):
        ddp.timeout()


def test_global_batch_is_split_and_the_shards_make_the_single_process_batches():
    cpu = torch.device("cpu")
    assert ddp.per_rank_batch(32, ddp.Context(cpu, 1, 4)) == 8
    with pytest.raises(ConfigError, match="batch_size=30 is the global batch.*multiple of 4 \\(e.g. 32\\)"):
        ddp.per_rank_batch(30, ddp.Context(cpu, 0, 4))
    items = list(range(23))
    single = ddp.train_sampler(items, ddp.Context(cpu), seed=5)
    shards = [ddp.train_sampler(items, ddp.Context(cpu, r, 2), seed=5) for r in range(2)]
    for epoch in (0, 1):
        for s in [single, *shards]:
            s.set_epoch(epoch)
        order, parts = list(single), [list(s) for s in shards]
        for step in range(len(items) // 8):  # global batch 8 = 2 x 4
            glob = sorted(order[step * 8:(step + 1) * 8])
            assert sorted(parts[0][step * 4:(step + 1) * 4] + parts[1][step * 4:(step + 1) * 4]) == glob
    single.set_epoch(0)
    first = list(single)
    single.set_epoch(1)
    assert list(single) != first and sorted(first) == items  # reshuffled per epoch, nothing lost
    test_shards = [list(ddp.ShardSampler(7, ddp.Context(cpu, r, 3))) for r in range(3)]
    assert sorted(sum(test_shards, [])) == list(range(7))  # each test image counted once, no padding


def test_not_distributed_helpers_are_no_ops(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = ddp.init_from_env("cpu")
    assert not ctx.distributed and ctx.is_main and ddp.is_main_process()
    assert ddp.all_reduce_sum([1, 2.5], ctx) == [1.0, 2.5] and ddp.any_rank(True, ctx)
    net = nn.Linear(2, 2)
    assert ddp.wrap(net, ctx) is net
    ddp.close(ctx)


def test_nproc_mistakes_are_one_line_errors(data, tmp_path, capsys):
    base = ["train", str(data), "--out", str(tmp_path / "x"), "--model", "smallnet", "--img-size", "32"]
    for extra, needle in [(["--batch-size", "7", "--nproc", "2"], "batch_size=7 is the global batch"),
                          (["--nproc", "0"], "--nproc 0"),
                          (["--nproc", "2", "--device", "cuda:1"], "cannot be shared")]:
        assert cli(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("fieldmark: error:") and needle in err[0], err
    assert not (tmp_path / "x").exists()
