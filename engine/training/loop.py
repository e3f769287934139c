"""Training as a generator of events (see :mod:`engine.events`) that returns a :class:`~engine.events.Finished`.

``for ev in train(cfg, should_stop): ...`` — the CLI prints the events, the GUI's child process streams them.
A stop request is checked between batches and raises :class:`engine.errors.Cancelled`; every finished epoch
is already on disk, and ``resume=True`` continues from the last complete epoch.

Started by torchrun (or ``fieldmark train --nproc N``), the same generator trains with DistributedDataParallel
(:mod:`engine.training.distributed`): ``batch_size`` is then the global batch, every rank trains on its share, metrics are
summed over the ranks, and only rank 0 writes the run folder and yields events (the other ranks yield nothing and
return the same :class:`Finished`). ``BatchEnd.loss`` is rank 0's own batch loss; epoch metrics are global.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Generator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import engine.training.distributed as ddp
import engine.training.memory as memory
import engine.runs as runs
from engine.training.config import PARTS_LOSS_WEIGHTS, TrainConfig
from engine.training.resume import data_changes, prepare_run, training_data
from engine.training.schedule import Schedule, lr_factor  # noqa: F401  (lr_factor: re-exported)
from engine.training.step import forward_backward
from engine.data import require_trainable, scan
from engine.data.loader import EpochSampler, ImageCache, ImageDataset, collate_decoded
from engine.data.split import carve_validation, record_split
from engine.data.transforms import Preprocessing, normalize
from engine.device import amp_dtype, describe_device, uses_channels_last
from engine.errors import Cancelled, CheckpointError, ConfigError, DataError, EngineError
from engine.events import BatchEnd, EpochEnd, Finished, Message, Progress, Started, drive, relay
from engine.losses.gain import GAINCriterion
from engine.losses.mcloss import CECriterion, MCLossCriterion
from engine.models import create_model

log = logging.getLogger(__name__)

Event = Any


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def build_criterion(cfg: TrainConfig, model: nn.Module) -> nn.Module:
    base = method_criterion(cfg, model)  # with --gain inside GAIN's attention mining (engine.losses.gain)
    return GAINCriterion(base, cfg.gain_alpha, cfg.gain_sigma, cfg.gain_omega) if cfg.gain else base


def method_criterion(cfg: TrainConfig, model: nn.Module) -> nn.Module:
    if cfg.method == "ce":
        return CECriterion()
    if cfg.method == "mcloss":
        return MCLossCriterion(model.groups, cfg.mu, cfg.lam, cfg.per_sample_mask, cfg.mc_conc)
    if cfg.method == "parts":
        from engine.losses.parts import PartsCriterion

        return PartsCriterion(**parts_loss_weights(cfg), equiv_stop_grad=not cfg.equiv_backprop)
    from engine.models.tasn import TASNCriterion

    return TASNCriterion(temperature=float(cfg.extra.get("temperature", 10.0)))


def loss_model(cfg: TrainConfig, num_classes: int) -> "LossModel":
    """A randomly initialised model of ``cfg`` with its criterion (what the memory plan measures)."""
    model = create_model(cfg.model, num_classes, cfg.xi, pretrained=None, **model_kwargs(cfg))
    return LossModel(model, build_criterion(cfg, model))


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The architecture keyword arguments beyond (name, num_classes, xi) that ``create_model`` gets."""
    if cfg.method == "tasn":
        return {"input_size": cfg.img_size, "sample_size": int(cfg.extra.get("sample_size", cfg.img_size))}
    # model.json keeps "padding" only when it is not torchvision's zeros (and "attention" only with blocks), so runs
    # saved before the option load as they were built
    padding = {"padding": cfg.padding} if cfg.padding not in (None, "zeros") else {}
    padding.update({"attention": cfg.attention} if cfg.attention not in (None, "none") else {})
    if cfg.method == "parts":
        return {"head": "parts", "parts": cfg.parts, "fine": cfg.fine,
                "part_dropout": float(cfg.extra.get("part_dropout", 0.3)), "gumbel": bool(cfg.extra.get("gumbel", False)),
                **padding, **({"zoom": cfg.zoom} if cfg.zoom else {})}
    return {"part_channels": cfg.part_channels, **({"fine": True} if cfg.fine else {}), **padding}


def parts_loss_weights(cfg: TrainConfig) -> dict[str, float]:
    """The shared-parts loss weights: the authors' (:data:`PARTS_LOSS_WEIGHTS`), each overridable by ``extra``'s
    ``w_<name>``."""
    return {k: float(cfg.extra.get(f"w_{k}", v)) for k, v in PARTS_LOSS_WEIGHTS.items()}


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.method == "parts":  # Adam as the authors: backbone + prototypes, classifier, modulation at 10x it
        backbone, head = model.param_groups(two_groups=True)
        groups = [{"params": backbone, "lr": cfg.lr_backbone, "base_lr": cfg.lr_backbone},
                  {"params": list(model.fc.parameters()), "lr": cfg.lr_head, "base_lr": cfg.lr_head},
                  {"params": [model.modulation], "lr": 10 * cfg.lr_head, "base_lr": 10 * cfg.lr_head}]
        return torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
    backbone, head = model.param_groups()
    groups = [{"params": backbone, "lr": cfg.lr_backbone, "base_lr": cfg.lr_backbone},
              {"params": head, "lr": cfg.lr_head, "base_lr": cfg.lr_head}]
    return torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)


class LossModel(nn.Module):
    """The model and its criterion as one module whose ``forward(x, y)`` returns ``(loss, parts)``: what
    DistributedDataParallel wraps, since criteria call ``forward_features`` / ``forward_head`` (which DDP's
    ``forward`` would not see) rather than ``forward``."""

    def __init__(self, model: nn.Module, criterion: nn.Module):
        super().__init__()
        self.model, self.criterion = model, criterion

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.criterion(self.model, x, y)


@torch.no_grad()
def evaluate_sums(model: nn.Module, loader: DataLoader, pp: Preprocessing, device: torch.device,
                  should_stop: Callable[[], bool] | None = None) -> tuple[int, int, float]:
    """(correct, count, summed cross-entropy) over a loader: sums, so that ranks can add theirs up."""
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    for x, y in loader:
        if should_stop is not None and should_stop():
            raise Cancelled("stopped during evaluation")
        if len(y) == 0:  # every image of the batch failed to decode (named in the log)
            continue
        x, y = normalize(x.to(device), pp), y.to(device)
        logits = model(x).float()
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    return correct, total, loss_sum


def _published_epoch(run: Path) -> int | None:
    try:
        return int(runs.read_meta(run).get("epoch", 0))
    except CheckpointError:
        return None


def train(cfg: TrainConfig, should_stop: Callable[[], bool] | None = None, resume: bool = False,
          allow_data_change: bool = False) -> Generator[Event, None, Finished]:
    """Train ``cfg``; yields events, returns :class:`Finished`. See the module docstring; what a resume keeps and
    refuses (``allow_data_change``: go on although training photos changed) is :mod:`engine.training.resume`."""
    ctx = ddp.init_from_env(cfg.device)
    try:
        gen = _train(cfg, should_stop or (lambda: False), resume, allow_data_change, ctx)
        if ctx.is_main:
            return (yield from gen)
        return drive(gen)  # other ranks train silently
    finally:
        ddp.close(ctx)


def check_writable(run: Path) -> None:
    """Fail before training rather than at the end of the first epoch when the run folder cannot be written."""
    try:
        run.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write the run folder {str(run)!r} ({exc.strerror or exc}): choose an --out "
                          "folder you can write to") from exc


def _train(cfg: TrainConfig, stop: Callable[[], bool], resume: bool, allow_data_change: bool, ctx: ddp.Context,
           ) -> Generator[Event, None, Finished]:
    run, state = prepare_run(cfg, resume)
    device = ctx.device
    rank_batch = ddp.per_rank_batch(cfg.batch_size, ctx)
    seed_everything(cfg.seed)
    data = yield from training_data(run, scan(cfg.data, test_fraction=cfg.test_fraction, seed=cfg.seed), state,
                                    allow_data_change)
    report = data.report
    if state is None:  # a new run draws its validation photos; a resume has them in its saved split
        report = carve_validation(report, cfg.validation_fraction, cfg.seed)
    require_trainable(report)
    if ctx.is_main:
        check_writable(run)
    for note in report.notes:
        yield Message("info", note)
    split_doc = record_split(report) if data.save_split and ctx.is_main else None  # saved with the next epoch
    changes = data_changes(run, data.change) if ctx.is_main else []
    if report.skipped:
        yield Message("warning", f"{len(report.skipped)} files skipped by the scan (`fieldmark scan` lists them)")
    pp = Preprocessing.for_size(cfg.img_size, cfg.crop_scale, cfg.rotate)
    mem = memory.plan(rank_batch, cfg.img_size, device, lambda: loss_model(cfg, len(report.classes)), cfg.cache_mb)
    for note in mem.notes():
        yield Message("warning", note)
    caches, room = {}, mem.cache_mb
    for split in ("train", "test"):  # the training images first: the test split takes what room is left
        cache = ImageCache(report.split(split), pp, room)
        room -= cache.est_mb if cache.enabled else 0
        if not cache.enabled and cfg.cache_mb != 0:
            yield Message("warning", f"memory: the {split} images take about {cache.est_mb:.0f} MB decoded and "
                                     f"{max(0, int(room))} MB are free for them: each is decoded at each use (slower)")
        failed = yield from _load_cache(cache, split, stop)
        for f in failed:
            report.skipped.append(f)
            yield Message("warning", f"{f.path}: {f.reason}, skipped")
        caches[split] = cache
    if not caches["train"].samples:
        raise ConfigError(f"no training image could be decoded in {cfg.data!r}")

    model = create_model(cfg.model, len(report.classes), cfg.xi, pretrained=None if state else cfg.pretrained,
                         **model_kwargs(cfg))
    if state is not None:
        if len(report.classes) != model.arch["num_classes"] or state.get("classes") != report.classes:
            raise CheckpointError(f"checkpoint has {len(state.get('classes', []))} classes, the dataset has "
                                  f"{len(report.classes)}: pick a matching checkpoint or retrain")
        model.load_state_dict(state["model"])
    model.to(device)
    if uses_channels_last(device):
        model.to(memory_format=torch.channels_last)
    criterion = build_criterion(cfg, model).to(device)
    net = ddp.wrap(LossModel(model, criterion), ctx)  # DDP (and SyncBatchNorm on CUDA) when distributed
    optimizer = make_optimizer(cfg, model)
    start_epoch, history = 0, []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        history = list(state.get("history") or runs.read_history(run)[:start_epoch])

    train_ds = ImageDataset(caches["train"], train=True, seed=cfg.seed)
    test_ds = ImageDataset(caches["test"], train=False)
    drop_last = len(train_ds) > cfg.batch_size
    sampler = EpochSampler(ddp.train_sampler(train_ds, ctx, cfg.seed))  # the epoch reaches the workers' datasets
    train_loader = DataLoader(train_ds, rank_batch, sampler=sampler, drop_last=drop_last,
                              num_workers=cfg.workers, persistent_workers=cfg.workers > 0,
                              pin_memory=device.type == "cuda", collate_fn=collate_decoded)
    test_loader = DataLoader(test_ds, mem.eval_batch, sampler=ddp.ShardSampler(len(test_ds), ctx),
                             num_workers=cfg.workers, collate_fn=collate_decoded)
    may_fail = not caches["train"].enabled  # decoded per item: a file can fail in the middle of an epoch
    steps = len(train_loader)
    schedule = Schedule.plan(cfg.epochs, steps, cfg.warmup_epochs)
    amp = amp_dtype(device) if cfg.amp else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    if state is not None:
        schedule = yield from _resumed_schedule(state, start_epoch, cfg, steps)
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    meta = {"arch": model.arch, "method": cfg.method, "classes": report.classes, "preprocessing": pp.to_dict(),
            "config": cfg.to_dict(), "epochs": cfg.epochs, "processes": ctx.world_size, "memory": mem.to_dict(),
            "data": {"root": report.root, "layout": report.layout, "counts": report.counts(),
                     "split_source": report.split_source, "split_file": runs.SPLIT, "skipped": len(report.skipped)},
            "schedule": schedule.to_dict(), "data_changes": changes}
    if state is not None and ctx.rank == 0 and _published_epoch(run) != start_epoch:
        # a kill fell between resume.pt and model.json of one save: publish the resume point before going on
        last = history[-1] if history else {}
        runs.save_epoch(run, model, {**meta, "epoch": start_epoch, "metrics": {
            "epoch": start_epoch, "test_top1": last.get("test_top1"), "test_loss": last.get("test_loss"),
            "train_loss": last.get("loss"), "images_per_s": last.get("images_per_s")}}, history, None, split_doc)
        split_doc = None
    yield Started(str(run), ddp.describe(ctx, describe_device(device)), report.classes, len(train_ds),
                  len(test_ds), start_epoch, cfg.epochs, steps, cfg.to_dict())

    t_run = time.perf_counter()
    reported: set[str] = set()
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        sampler.set_epoch(epoch)
        torch.manual_seed(cfg.seed * 7919 + epoch)  # CWA masks, TASN detail channels, dropout
        if cfg.workers > 0 and epoch > start_epoch:
            # a DataLoader draws its workers' base seed from this generator whenever it makes an iterator: every
            # epoch without workers, only the first with persistent ones. This draw keeps the training's random
            # stream the same with and without workers, and after a resume
            torch.empty((), dtype=torch.int64).random_()
        sums: dict[str, float] = {}
        seen, t0 = 0, time.perf_counter()
        for step, (x, y) in enumerate(train_loader):
            if ddp.any_rank(stop(), ctx):
                raise Cancelled(f"stopped in epoch {epoch + 1}; epochs 1-{epoch} are saved in {run}")
            if may_fail and ddp.any_rank(len(y) == 0, ctx):  # no image of a batch decoded: all ranks skip it
                continue
            g = epoch * steps + step
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * schedule.factor(g)
            x = normalize(x.to(device, non_blocking=True), pp)
            y = y.to(device, non_blocking=True)
            if uses_channels_last(device):
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            loss, parts, bad = forward_backward(net, x, y, mem.micro_batch, scaler, amp, ctx)
            if bad:  # the same on every rank: all stop at this step
                raise ConfigError(f"the loss became {ddp.describe_losses(bad, ctx)} in epoch {epoch + 1}, step "
                                  f"{step + 1}: lower the learning rates (lr_backbone={cfg.lr_backbone}, "
                                  f"lr_head={cfg.lr_head})")
            scaler.step(optimizer)
            scaler.update()
            n = len(y)
            seen += n
            sums["loss"] = sums.get("loss", 0.0) + loss * n
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v * n
            elapsed = time.perf_counter() - t0
            yield BatchEnd(epoch + 1, step + 1, steps, loss,
                           seen * ctx.world_size / max(elapsed, 1e-9))
        train_s = time.perf_counter() - t0
        keys = list(sums)  # the same order on every rank: the same code filled it
        *totals, seen = ddp.all_reduce_sum([sums[k] for k in keys] + [seen], ctx)
        if not seen:
            example = next(iter(train_ds.failed.values()), None)
            raise DataError(f"none of the {len(train_ds)} training images of {cfg.data!r} could be decoded in "
                            f"epoch {epoch + 1}" + (f" (e.g. {example.path}: {example.reason})" if example else "")
                            + ": check the files (`fieldmark scan --verify` lists them), then train again")
        sums = dict(zip(keys, totals))
        ddp.broadcast_buffers(model, ctx)  # every rank evaluates rank 0's model (BatchNorm statistics)
        correct, counted, loss_sum = ddp.all_reduce_sum(
            evaluate_sums(model, test_loader, pp, device, None if ctx.distributed else stop), ctx)
        top1, test_loss = (correct / counted, loss_sum / counted) if counted else (None, None)
        yield from _failed_files(train_ds, test_ds, reported)
        seconds = time.perf_counter() - t0
        done_here = epoch + 1 - start_epoch
        eta = (time.perf_counter() - t_run) / done_here * (cfg.epochs - epoch - 1)
        row = {"epoch": epoch + 1, **{k: v / max(seen, 1) for k, v in sums.items()}, "test_top1": top1,
               "test_loss": test_loss, "images_per_s": seen / max(train_s, 1e-9), "seconds": seconds,
               "lr": optimizer.param_groups[1]["lr"]}
        history.append(row)
        metrics = {"epoch": epoch + 1, "test_top1": top1, "test_loss": test_loss,
                   "train_loss": row["loss"], "images_per_s": row["images_per_s"]}
        if ctx.is_main:
            try:
                runs.save_epoch(run, model, {**meta, "epoch": epoch + 1, "metrics": metrics}, history,
                                {"epoch": epoch + 1, "optimizer": optimizer.state_dict(), "config": cfg.to_dict(),
                                 "classes": report.classes, "history": history, "schedule": schedule.to_dict(),
                                 "scaler": scaler.state_dict(), "base_lrs": [g["base_lr"] for g in
                                                                             optimizer.param_groups],
                                 "loss_weights": {"mu": cfg.mu, "lam": cfg.lam, "xi": cfg.xi,
                                                  "mc_conc": cfg.mc_conc}}, split_doc)
                split_doc = None
            except OSError as exc:
                raise EngineError(f"cannot save epoch {epoch + 1} in {str(run)!r} ({exc.strerror or exc}): free "
                                  "some space, then run the same command with --resume to go on from the last "
                                  "saved epoch") from exc
        yield EpochEnd(epoch + 1, cfg.epochs, {k: v / max(seen, 1) for k, v in sums.items()}, top1, test_loss,
                       row["images_per_s"], seconds, row["lr"], eta)
    ddp.barrier(ctx)  # rank 0 has written the last epoch before any rank leaves
    final = history[-1] if history else {}
    return Finished(str(run), cfg.epochs, {"test_top1": final.get("test_top1"), "test_loss": final.get("test_loss"),
                                           "images_per_s": final.get("images_per_s")})


def _failed_files(train_ds: ImageDataset, test_ds: ImageDataset, reported: set[str]):
    """A warning per file that failed to decode in this process since the last call (worker processes name
    theirs in the log)."""
    for f in list(train_ds.failed.values()) + list(test_ds.failed.values()):
        if f.path not in reported:
            reported.add(f.path)
            yield Message("warning", f"{f.path}: {f.reason}, skipped")
def _resumed_schedule(state: dict, epoch: int, cfg: TrainConfig, steps: int):
    """The schedule a resume goes on with: the saved one (runs saved without one: planned from their config),
    re-planned when --epochs or the steps per epoch changed (see :mod:`engine.training.schedule`)."""
    old = state.get("config") or {}
    saved = (Schedule.from_dict(state["schedule"]) if state.get("schedule") else Schedule.plan(
        int(old.get("epochs", cfg.epochs)), steps, float(old.get("warmup_epochs", cfg.warmup_epochs))))
    schedule = saved.resumed(epoch, cfg.epochs, steps)
    if schedule != saved:
        factor = schedule.factor(epoch * steps)
        text = (f"the learning-rate schedule is re-planned for {cfg.epochs} epochs instead of {saved.epochs}"
                + (f" ({steps} steps an epoch instead of {saved.steps_per_epoch})" if steps != saved.steps_per_epoch
                   else "") + f": it goes on from {factor:.4g} × the base rates after epoch {epoch} and decays to 0 "
                f"at epoch {cfg.epochs}, never rising")
        if factor < 1e-3:
            yield Message("warning", text + "; the run had finished its schedule, so the extra epochs will change "
                                            "little: to train on at a real learning rate, start a new run")
        else:
            yield Message("info", text)
    return schedule


def _load_cache(cache: ImageCache, split: str, stop: Callable[[], bool]):
    """Decode a split into memory, yielding Progress events (every 5 %); returns the failed files."""
    if not cache.enabled:
        return []
    total = len(cache.samples)
    every = max(1, total // 20)

    def progress(done: int) -> Progress | None:
        if done % every and done != total:
            return None
        if stop():
            raise Cancelled("stopped while decoding images")
        return Progress(f"decoding {split} images", done, total)

    return (yield from relay(cache.iter_load(), progress))
