"""The learning-rate schedule: linear warm-up, then cosine decay to zero, counted in optimizer steps.

A run stores its :class:`Schedule` in ``resume.pt``, so that ``--resume`` continues the very same curve. A resume
with another ``--epochs`` (or, after ``--allow-data-change``, another number of steps per epoch) re-plans only
what is left, explicitly: from the factor the schedule had reached at the resume point, a cosine down to zero at
the new last step. The learning rate therefore goes on from where it was and never rises again (a run that had
decayed to zero stays near zero: to train more at a real learning rate, start a new run from its weights).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class Schedule:
    """Factor of the base learning rates at optimizer step ``g`` (0-based, over the whole run).

    Warm-up over the first ``warmup`` steps, then cosine decay to zero at ``total``; from step ``start`` on (a
    re-planned resume) the cosine starts at ``scale`` instead of 1.
    """

    steps_per_epoch: int
    warmup: int
    total: int
    start: int = 0
    scale: float = 1.0

    @classmethod
    def plan(cls, epochs: int, steps_per_epoch: int, warmup_epochs: float) -> "Schedule":
        return cls(steps_per_epoch, int(round(warmup_epochs * steps_per_epoch)), epochs * steps_per_epoch)

    @property
    def epochs(self) -> int:
        return self.total // max(1, self.steps_per_epoch)

    def factor(self, step: int) -> float:
        if self.start == 0:
            return lr_factor(step, self.total, self.warmup)
        progress = (step - self.start) / max(1, self.total - self.start)
        return self.scale * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))

    def resumed(self, epoch: int, epochs: int, steps_per_epoch: int) -> "Schedule":
        """The schedule for going on after ``epoch`` complete epochs to ``epochs`` epochs of ``steps_per_epoch``
        steps: itself when neither changed; else a cosine from the factor reached at the resume point down to zero
        at the new end (still in the warm-up: the same warm-up, then the cosine over the new length)."""
        if epochs == self.epochs and steps_per_epoch == self.steps_per_epoch:
            return self
        here = epoch * self.steps_per_epoch
        warmup = int(round(self.warmup / max(1, self.steps_per_epoch) * steps_per_epoch))
        if here < self.warmup and self.start == 0:
            return Schedule(steps_per_epoch, warmup, epochs * steps_per_epoch)
        return Schedule(steps_per_epoch, warmup, epochs * steps_per_epoch, epoch * steps_per_epoch,
                        self.factor(here))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Schedule":
        return cls(int(d["steps_per_epoch"]), int(d["warmup"]), int(d["total"]), int(d.get("start", 0)),
                   float(d.get("scale", 1.0)))
