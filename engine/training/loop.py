"""Training as a generator of events (see :mod:`engine.events`) that returns a :class:`~engine.events.Finished`.

``for ev in train(cfg, should_stop): ...`` — the CLI prints the events, the GUI's child process streams them.
A stop request is checked between batches and raises :class:`engine.errors.Cancelled`; every finished epoch
is already on disk, and ``resume=True`` continues from the last complete epoch.

Started by torchrun (or ``fieldmark train --nproc N``), the same generator trains with DistributedDataParallel
(:mod:`engine.training.distributed`): ``batch_size`` is then the global batch, every rank trains on its share, metrics are
summed over the ranks, and only rank 0 writes the run folder and yields events (the other ranks yield nothing and
return the same :class:`Finished`). ``BatchEnd.loss`` is rank 0's own batch loss; epoch metrics are global.

A run reads top to bottom in ``_train``: :func:`setup` builds what the epochs share (a
:class:`~engine.training.state.Training`: the data of :mod:`engine.training.images`, the model, a resume's state,
the loaders, optimizer, schedule and AMP scaler), then each epoch is :func:`train_one_epoch`, :func:`evaluate_epoch`
and :func:`save_epoch`.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable, Generator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import engine.training.distributed as ddp
import engine.training.memory as memory
import engine.runs as runs
from engine.training.config import PARTS_LOSS_WEIGHTS, TrainConfig
from engine.training.images import failed_files, load_caches, make_loaders, run_data
from engine.training.resume import prepare_run, published_epoch, resumed_schedule
from engine.training.schedule import Schedule, lr_factor  # noqa: F401  (lr_factor: re-exported)
from engine.training.state import EpochTrain, Training
from engine.training.step import forward_backward
from engine.data.records import DataReport
from engine.data.transforms import Preprocessing, normalize
from engine.device import amp_dtype, describe_device, uses_channels_last
from engine.errors import Cancelled, CheckpointError, ConfigError, DataError, EngineError
from engine.events import BatchEnd, EpochEnd, Finished, Message, Started, drive
from engine.losses.gain import GAINCriterion
from engine.losses.mcloss import CECriterion, MCLossCriterion
from engine.models import create_model
from engine.models.freeze import apply_freezing, describe_frozen
from engine.training.speed import EpochClock, compile_backbone, describe_schedule, epoch_sizes, tests_after

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
    if cfg.method == "racnn":
        from engine.models.racnn import APN_GRADIENT, APN_WARMUP, MARGIN, RACNNCriterion

        return RACNNCriterion(float(cfg.extra.get("margin", MARGIN)), int(cfg.extra.get("apn_warmup", APN_WARMUP)),
                              str(cfg.extra.get("apn_gradient", APN_GRADIENT)))
    from engine.models.tasn import TASNCriterion

    return TASNCriterion(temperature=float(cfg.extra.get("temperature", 10.0)))


def loss_model(cfg: TrainConfig, num_classes: int) -> "LossModel":
    """A randomly initialised model of ``cfg`` with its criterion (what the memory plan measures)."""
    model = create_model(cfg.model, num_classes, cfg.xi, pretrained=None, **model_kwargs(cfg))
    apply_freezing(model, cfg.freeze_bn, cfg.freeze_stages)  # frozen layers keep no activations for backward
    return LossModel(model, build_criterion(cfg, model))


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The architecture keyword arguments beyond (name, num_classes, xi) that ``create_model`` gets."""
    if cfg.method == "tasn":
        return {"input_size": cfg.img_size, "sample_size": int(cfg.extra.get("sample_size", cfg.img_size))}
    if cfg.method == "racnn":  # torchvision's padding; the scales at the input's size unless --scale-size
        kw = {"scale_size": int(cfg.extra["scale_size"])} if "scale_size" in cfg.extra else {}
        return {**kw, "apn_half": float(cfg.extra["apn_half"])} if "apn_half" in cfg.extra else kw
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
    """The method's optimizer over the trainable parameters (``--freeze-stages`` leaves the frozen ones out)."""
    if cfg.method == "parts":  # Adam as the authors: backbone + prototypes, classifier, modulation at 10x it
        backbone, head = model.param_groups(two_groups=True)
        backbone = [p for p in backbone if p.requires_grad]
        groups = [{"params": backbone, "lr": cfg.lr_backbone, "base_lr": cfg.lr_backbone},
                  {"params": list(model.fc.parameters()), "lr": cfg.lr_head, "base_lr": cfg.lr_head},
                  {"params": [model.modulation], "lr": 10 * cfg.lr_head, "base_lr": 10 * cfg.lr_head}]
        return torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
    backbone, head = model.param_groups()
    backbone = [p for p in backbone if p.requires_grad]
    groups = [{"params": backbone, "lr": cfg.lr_backbone, "base_lr": cfg.lr_backbone},
              {"params": head, "lr": cfg.lr_head, "base_lr": cfg.lr_head}]
    if cfg.method == "racnn":  # the APNs at their own rate (at the head's they ran to the photo's edge)
        from engine.models.racnn import APN_LR

        apns = {id(p) for p in model.apns.parameters()}
        groups[1]["params"] = [p for p in head if id(p) not in apns]
        rate = float(cfg.extra.get("apn_lr", APN_LR))
        groups.append({"params": list(model.apns.parameters()), "lr": rate, "base_lr": rate})
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


def _train(cfg: TrainConfig, stop: Callable[[], bool], resume: bool, allow_data_change: bool, ctx: ddp.Context,
           ) -> Generator[Event, None, Finished]:
    """The run: its setup, then for each epoch left the training pass, the evaluation and the save."""
    t = yield from setup(cfg, stop, resume, allow_data_change, ctx)
    tests = tuple(tests_after(e, cfg.epochs, cfg.test_every) for e in range(cfg.epochs))
    clock = EpochClock(epoch_sizes(cfg.size_schedule, cfg.img_size, cfg.epochs), tests, len(t.train_ds),
                       len(t.test_ds))
    for epoch in range(t.start_epoch, cfg.epochs):
        trained = yield from train_one_epoch(t, epoch)
        t_test = time.perf_counter()
        top1, test_loss = evaluate_epoch(t) if tests[epoch] else (None, None)
        clock.record(epoch, t_test - trained.started, time.perf_counter() - t_test if tests[epoch] else None)
        yield from failed_files([t.train_ds, t.test_ds], t.reported)
        seconds = time.perf_counter() - trained.started
        eta = clock.eta(epoch)
        row = save_epoch(t, epoch, trained, top1, test_loss, seconds)
        yield EpochEnd(epoch + 1, cfg.epochs, trained.means(), top1, test_loss, row["images_per_s"], seconds,
                       row["lr"], eta)
    ddp.barrier(ctx)  # rank 0 has written the last epoch before any rank leaves
    final = t.history[-1] if t.history else {}
    return Finished(str(t.run), cfg.epochs, {"test_top1": final.get("test_top1"), "test_loss": final.get("test_loss"),
                                             "images_per_s": final.get("images_per_s")})


def setup(cfg: TrainConfig, stop: Callable[[], bool], resume: bool, allow_data_change: bool,
          ctx: ddp.Context) -> Generator[Event, None, Training]:
    """Everything the epochs need, in this order: the run folder (a resume's saved state), the data in the run's
    split, the memory plan, the images decoded, the model (a resume's weights and optimizer), the loaders, the
    learning-rate schedule and the AMP scaler (a resume's, re-planned when --epochs changed). Yields the messages
    on the way and, last, :class:`Started`."""
    run, state = prepare_run(cfg, resume)
    device = ctx.device
    rank_batch = ddp.per_rank_batch(cfg.batch_size, ctx)
    seed_everything(cfg.seed)
    data = yield from run_data(cfg, run, state, allow_data_change, ctx)
    report = data.report
    pp = Preprocessing.for_size(cfg.img_size, cfg.crop_scale, cfg.rotate)
    mem = memory.plan(rank_batch, cfg.img_size, device, lambda: loss_model(cfg, len(report.classes)), cfg.cache_mb)
    for note in mem.notes():
        yield Message("warning", note)
    caches = yield from load_caches(cfg, report, pp, mem.cache_mb, stop)
    model, net, optimizer = build_model(cfg, report, state, ctx)
    compiled, note = compile_backbone(model, device) if cfg.compile else (None, None)
    for level, text in (("info", describe_frozen(model)), ("info", describe_schedule(cfg)),
                        ("info" if compiled else "warning", note)):
        if text:
            yield Message(level, text)
    memory.apply(mem, model)  # checkpointing of the backbone's stages when the plan chose it
    start_epoch, history = 0, []
    if state is not None:
        start_epoch = int(state["epoch"])
        history = list(state.get("history") or runs.read_history(run)[:start_epoch])
    train_ds, test_ds, sampler, train_loader, test_loader = make_loaders(cfg, caches, rank_batch, mem, ctx)
    steps = len(train_loader)
    schedule = Schedule.plan(cfg.epochs, steps, cfg.warmup_epochs)
    amp = amp_dtype(device) if cfg.amp else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    if state is not None:
        schedule = yield from resumed_schedule(state, start_epoch, cfg, steps)
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    meta = {"arch": model.arch, "method": cfg.method, "classes": report.classes, "preprocessing": pp.to_dict(),
            "config": cfg.to_dict(), "epochs": cfg.epochs, "processes": ctx.world_size, "memory": mem.to_dict(),
            "data": {"root": report.root, "layout": report.layout, "counts": report.counts(),
                     "split_source": report.split_source, "split_file": runs.SPLIT, "skipped": len(report.skipped)},
            "schedule": schedule.to_dict(), "data_changes": data.changes}
    t = Training(cfg, ctx, stop, run, report, pp, mem, model, net, optimizer, train_ds, test_ds, sampler,
                 train_loader, test_loader, schedule, amp, scaler, start_epoch, history, meta, data.split_doc)
    t.compiled = compiled
    if state is not None and ctx.rank == 0 and published_epoch(run) != start_epoch:
        publish_resume_point(t)
    yield Started(str(run), ddp.describe(ctx, describe_device(device)), report.classes, len(train_ds),
                  len(test_ds), start_epoch, cfg.epochs, steps, cfg.to_dict())
    return t


def build_model(cfg: TrainConfig, report: DataReport, state: dict | None,
                ctx: ddp.Context) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
    """The model on the device (a resume's weights; else ``cfg.pretrained``), ``net`` (it with its criterion,
    DDP-wrapped when distributed) and the optimizer (a resume's state)."""
    model = create_model(cfg.model, len(report.classes), cfg.xi, pretrained=None if state else cfg.pretrained,
                         **model_kwargs(cfg))
    if state is not None:
        if len(report.classes) != model.arch["num_classes"] or state.get("classes") != report.classes:
            raise CheckpointError(f"checkpoint has {len(state.get('classes', []))} classes, the dataset has "
                                  f"{len(report.classes)}: pick a matching checkpoint or retrain")
        model.load_state_dict(state["model"])
    apply_freezing(model, cfg.freeze_bn, cfg.freeze_stages)  # after the weights: frozen layers copy what they hold
    model.to(ctx.device)
    if uses_channels_last(ctx.device, cfg.model):
        model.to(memory_format=torch.channels_last)
    criterion = build_criterion(cfg, model).to(ctx.device)
    net = ddp.wrap(LossModel(model, criterion), ctx)  # DDP (and SyncBatchNorm on CUDA) when distributed
    optimizer = make_optimizer(cfg, model)
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # e.g. an RA-CNN run saved before its APNs had a group of their own (--apn-lr)
            log.warning("the checkpoint's optimizer state does not fit this version's parameter groups (%s): the "
                        "run goes on from the weights of epoch %s, the optimizer's momentum starts afresh", exc,
                        state.get("epoch"))
    return model, net, optimizer


def train_one_epoch(t: Training, epoch: int) -> Generator[BatchEnd, None, EpochTrain]:
    """One pass over this rank's share of the training images (``epoch`` 0-based), a :class:`BatchEnd` after
    each step. Stops on every rank alike: :class:`Cancelled` when any rank is asked to stop (checked before each
    batch), ConfigError when a loss is not finite, DataError when no image of the epoch could be decoded."""
    cfg, ctx, device, optimizer, steps = t.cfg, t.ctx, t.ctx.device, t.optimizer, t.steps
    t.net.train()
    t.sampler.set_epoch(epoch)
    torch.manual_seed(cfg.seed * 7919 + epoch)  # CWA masks, TASN detail channels, dropout
    if cfg.workers > 0 and epoch > t.start_epoch:
        # a DataLoader draws its workers' base seed from this generator whenever it makes an iterator: every
        # epoch without workers, only the first with persistent ones. This draw keeps the training's random
        # stream the same with and without workers, and after a resume
        torch.empty((), dtype=torch.int64).random_()
    sums: dict[str, float] = {}
    seen, t0 = 0, time.perf_counter()
    for step, (x, y) in enumerate(t.train_loader):
        if ddp.any_rank(t.stop(), ctx):
            raise Cancelled(f"stopped in epoch {epoch + 1}; epochs 1-{epoch} are saved in {t.run}")
        if t.may_fail and ddp.any_rank(len(y) == 0, ctx):  # no image of a batch decoded: all ranks skip it
            continue
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * t.schedule.factor(epoch * steps + step)
        x = normalize(x.to(device, non_blocking=True), t.pp)
        y = y.to(device, non_blocking=True)
        if uses_channels_last(device, cfg.model):
            x = x.contiguous(memory_format=torch.channels_last)

        def step_once(x: torch.Tensor = x, y: torch.Tensor = y) -> tuple[float, dict[str, float], list]:
            optimizer.zero_grad(set_to_none=True)
            return forward_backward(t.net, x, y, t.mem.micro_batch, t.scaler, t.amp, ctx)

        loss, parts, bad = step_once() if t.compiled is None else t.compiled.step(step_once)  # --compile's fallback
        if t.compiled is not None and t.compiled.notice:
            yield Message("warning", t.compiled.notice)
            t.compiled.notice = None
        if bad:  # the same on every rank: all stop at this step
            raise ConfigError(f"the loss became {ddp.describe_losses(bad, ctx)} in epoch {epoch + 1}, step "
                              f"{step + 1}: lower the learning rates (lr_backbone={cfg.lr_backbone}, "
                              f"lr_head={cfg.lr_head})")
        t.scaler.step(optimizer)
        t.scaler.update()
        n = len(y)
        seen += n
        sums["loss"] = sums.get("loss", 0.0) + loss * n
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v * n
        elapsed = time.perf_counter() - t0
        yield BatchEnd(epoch + 1, step + 1, steps, loss, seen * ctx.world_size / max(elapsed, 1e-9))
    seconds = time.perf_counter() - t0
    keys = list(sums)  # the same order on every rank: the same code filled it
    *totals, seen = ddp.all_reduce_sum([sums[k] for k in keys] + [seen], ctx)
    if not seen:
        example = next(iter(t.train_ds.failed.values()), None)
        raise DataError(f"none of the {len(t.train_ds)} training images of {cfg.data!r} could be decoded in "
                        f"epoch {epoch + 1}" + (f" (e.g. {example.path}: {example.reason})" if example else "")
                        + ": check the files (`fieldmark scan --verify` lists them), then train again")
    return EpochTrain(dict(zip(keys, totals)), seen, seconds, t0)


def evaluate_epoch(t: Training) -> tuple[float | None, float | None]:
    """Top-1 and mean cross-entropy on the test split over all ranks (None, None when it has no image), every
    rank with rank 0's model. A stop request ends it only in a single process (ranks would not agree)."""
    ddp.broadcast_buffers(t.model, t.ctx)  # every rank evaluates rank 0's model (BatchNorm statistics)
    correct, counted, loss_sum = ddp.all_reduce_sum(
        evaluate_sums(t.model, t.test_loader, t.pp, t.ctx.device, None if t.ctx.distributed else t.stop), t.ctx)
    return (correct / counted, loss_sum / counted) if counted else (None, None)


def save_epoch(t: Training, epoch: int, trained: EpochTrain, top1: float | None, test_loss: float | None,
               seconds: float) -> dict[str, Any]:
    """Add epoch ``epoch`` (0-based) to the history and, on rank 0, write the run folder with it (model, model.json
    with its metrics, metrics.jsonl, resume.pt, the split when due). Returns its metrics row; a failed write is an
    EngineError that says how to go on."""
    cfg, done = t.cfg, epoch + 1
    row = {"epoch": done, **trained.means(), "test_top1": top1, "test_loss": test_loss,
           "images_per_s": trained.seen / max(trained.seconds, 1e-9), "seconds": seconds,
           "lr": t.optimizer.param_groups[1]["lr"]}
    t.history.append(row)
    if not t.ctx.is_main:
        return row
    metrics = {"epoch": done, "test_top1": top1, "test_loss": test_loss, "train_loss": row["loss"],
               "images_per_s": row["images_per_s"]}
    state = {"epoch": done, "optimizer": t.optimizer.state_dict(), "config": cfg.to_dict(),
             "classes": t.report.classes, "history": t.history, "schedule": t.schedule.to_dict(),
             "scaler": t.scaler.state_dict(), "base_lrs": [g["base_lr"] for g in t.optimizer.param_groups],
             "loss_weights": {"mu": cfg.mu, "lam": cfg.lam, "xi": cfg.xi, "mc_conc": cfg.mc_conc}}
    try:
        runs.save_epoch(t.run, t.model, {**t.meta, "epoch": done, "metrics": metrics}, t.history, state, t.split_doc)
        t.split_doc = None
    except OSError as exc:
        raise EngineError(f"cannot save epoch {done} in {str(t.run)!r} ({exc.strerror or exc}): free some space, "
                          "then run the same command with --resume to go on from the last saved epoch") from exc
    return row


def publish_resume_point(t: Training) -> None:
    """A kill fell between resume.pt and model.json of one save: publish the resume point (model.json and the
    model of ``t.start_epoch``) before going on."""
    last = t.history[-1] if t.history else {}
    runs.save_epoch(t.run, t.model, {**t.meta, "epoch": t.start_epoch, "metrics": {
        "epoch": t.start_epoch, "test_top1": last.get("test_top1"), "test_loss": last.get("test_loss"),
        "train_loss": last.get("loss"), "images_per_s": last.get("images_per_s")}}, t.history, None, t.split_doc)
    t.split_doc = None
