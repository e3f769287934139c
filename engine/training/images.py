"""The images a run trains and tests on: the scan in the run's split (a resume's saved one,
:mod:`engine.training.resume`), a new run's validation photos carved from its training photos, and each split
decoded once into memory (:class:`engine.data.loader.ImageCache`) as far as the memory plan leaves room, and the
loaders over them.

Each step is a generator of :class:`~engine.events.Message` (and :class:`~engine.events.Progress`) events that
returns its result, as the training loop (:mod:`engine.training.loop`) yields them on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator

from torch.utils.data import DataLoader

import engine.training.distributed as ddp
import engine.training.memory as memory
from engine.data import require_trainable, scan
from engine.data.loader import EpochSampler, ImageCache, ImageDataset, collate_decoded
from engine.data.records import DataReport
from engine.data.split import carve_validation, record_split
from engine.data.transforms import Preprocessing
from engine.errors import Cancelled, ConfigError
from engine.events import Message, Progress, relay
from engine.training.config import TrainConfig
from engine.training.resume import check_writable, data_changes, training_data
from engine.training.speed import epoch_sizes


@dataclass
class RunData:
    """What a run trains on: the report in its split, the split to save with the next epoch (rank 0 of a new run,
    a run saved before splits were kept, an allowed data change; else None) and the run's recorded data changes
    (``model.json``'s ``data_changes``; rank 0 only)."""

    report: DataReport
    split_doc: dict[str, Any] | None
    changes: list[dict[str, Any]]


def run_data(cfg: TrainConfig, run: Path, state: dict | None, allow_data_change: bool,
             ctx: ddp.Context) -> Generator[Message, None, RunData]:
    """Scan ``cfg.data`` into the run's split; refuses data it cannot train on and a run folder it cannot write
    (rank 0). Yields the scan's notes and the count of files it skipped."""
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
    return RunData(report, split_doc, changes)


def load_caches(cfg: TrainConfig, report: DataReport, pp: Preprocessing, room: float,
                stop: Callable[[], bool]) -> Generator[Message | Progress, None, dict[str, ImageCache]]:
    """The train and test splits' caches, decoded in ``room`` MB (the training images first: the test split takes
    what room is left; a split that does not fit is decoded at each use). A file that fails to decode is added to
    ``report.skipped`` with a warning; no training image decoded is a ConfigError."""
    caches = {}
    for split in ("train", "test"):
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
    return caches


def make_loaders(cfg: TrainConfig, caches: dict[str, ImageCache], rank_batch: int, mem: memory.MemoryPlan,
                 ctx: ddp.Context) -> tuple[ImageDataset, ImageDataset, EpochSampler, DataLoader, DataLoader]:
    """The train and test datasets over their caches, the training sampler (this rank's share, reshuffled each
    epoch) and the two loaders: ``rank_batch`` training images a step, the memory plan's batch for testing."""
    train_ds = ImageDataset(caches["train"], train=True, seed=cfg.seed,
                            sizes=epoch_sizes(cfg.size_schedule, cfg.img_size, cfg.epochs))  # --size-schedule
    test_ds = ImageDataset(caches["test"], train=False)
    drop_last = len(train_ds) > cfg.batch_size
    sampler = EpochSampler(ddp.train_sampler(train_ds, ctx, cfg.seed))  # the epoch reaches the workers' datasets
    train_loader = DataLoader(train_ds, rank_batch, sampler=sampler, drop_last=drop_last,
                              num_workers=cfg.workers, persistent_workers=cfg.workers > 0,
                              pin_memory=ctx.device.type == "cuda", collate_fn=collate_decoded)
    test_loader = DataLoader(test_ds, mem.eval_batch, sampler=ddp.ShardSampler(len(test_ds), ctx),
                             num_workers=cfg.workers, collate_fn=collate_decoded)
    return train_ds, test_ds, sampler, train_loader, test_loader


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


def failed_files(datasets: list[ImageDataset], reported: set[str]) -> Generator[Message, None, None]:
    """A warning per file that failed to decode in this process since the last call (worker processes name
    theirs in the log); ``reported`` holds the files already named."""
    for f in [f for ds in datasets for f in ds.failed.values()]:
        if f.path not in reported:
            reported.add(f.path)
            yield Message("warning", f"{f.path}: {f.reason}, skipped")
