"""What the epochs of a run share (:class:`Training`, built by :func:`engine.training.loop.setup`) and what one
training pass returns (:class:`EpochTrain`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

import engine.training.distributed as ddp
import engine.training.memory as memory
from engine.data.loader import EpochSampler, ImageDataset
from engine.data.records import DataReport
from engine.data.transforms import Preprocessing
from engine.training.config import TrainConfig
from engine.training.schedule import Schedule


@dataclass
class Training:
    """What the epochs of a run share: the run and its data, the model (``net``: it with its criterion,
    DDP-wrapped when distributed), the loaders, optimizer, learning-rate schedule and AMP scaler, the epochs done
    (``start_epoch``, ``history``: one metrics row each) and what the next save writes."""

    cfg: TrainConfig
    ctx: ddp.Context
    stop: Callable[[], bool]
    run: Path
    report: DataReport
    pp: Preprocessing
    mem: memory.MemoryPlan
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    train_ds: ImageDataset
    test_ds: ImageDataset
    sampler: EpochSampler
    train_loader: DataLoader
    test_loader: DataLoader
    schedule: Schedule
    amp: torch.dtype | None
    scaler: torch.amp.GradScaler
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # model.json's entries, less the epoch and its metrics
    split_doc: dict[str, Any] | None = None  # the split to save with the next epoch, then None
    reported: set[str] = field(default_factory=set)  # the files already named as failed to decode
    compiled: Any = None  # --compile's engine.training.speed.Compiled (None: eager)

    @property
    def steps(self) -> int:
        return len(self.train_loader)

    @property
    def may_fail(self) -> bool:
        """Training images decoded per item: a file can fail in the middle of an epoch."""
        return not self.train_ds.cache.enabled


@dataclass
class EpochTrain:
    """One training pass, summed over the ranks: each loss (``loss`` and its parts) summed over the images,
    the images seen, the seconds of the steps, and when the pass began (``time.perf_counter``)."""

    sums: dict[str, float]
    seen: float
    seconds: float
    started: float

    def means(self) -> dict[str, float]:
        return {k: v / max(self.seen, 1) for k, v in self.sums.items()}
