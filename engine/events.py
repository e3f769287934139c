"""Events that long jobs yield: small dataclasses of plain data, serialisable as JSON lines (the GUI's child
process streams them), and the two helpers that run such a job: :func:`drive` (to its end) and :func:`relay`
(inside another job, its events rewritten on the way up).

A long job is a generator that yields events and *returns* its result (``Finished``, an ``EvalResult``, an
``ExportSummary``). A ``for`` loop drops that result, which is why these helpers exist.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, TypeVar

R = TypeVar("R")


@dataclass
class Started:
    run_dir: str
    device: str
    classes: list[str]
    num_train: int
    num_test: int
    start_epoch: int
    epochs: int
    steps_per_epoch: int
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Progress:
    stage: str  # "decoding", "export", ...
    done: int
    total: int


@dataclass
class BatchEnd:
    epoch: int  # 1-based
    step: int  # 1-based within the epoch
    steps: int
    loss: float
    images_per_s: float


@dataclass
class EpochEnd:
    epoch: int  # 1-based
    epochs: int
    train: dict[str, float]  # mean loss parts: loss, ce, dis, div, regions ...
    test_top1: float | None
    test_loss: float | None
    images_per_s: float
    seconds: float
    lr: float
    eta_s: float


@dataclass
class Message:
    level: str  # "info" | "warning"
    text: str


@dataclass
class Finished:
    run_dir: str
    epochs: int
    metrics: dict[str, Any]


EVENT_TYPES = {cls.__name__: cls for cls in (Started, Progress, BatchEnd, EpochEnd, Message, Finished)}


def to_dict(event: Any) -> dict[str, Any]:
    return {"type": type(event).__name__, **dataclasses.asdict(event)}


def to_json(event: Any) -> str:
    return json.dumps(to_dict(event), allow_nan=True)


def from_dict(d: dict[str, Any]) -> Any:
    d = dict(d)
    cls = EVENT_TYPES.get(d.pop("type", None))
    if cls is None:
        raise ValueError(f"unknown event {d!r}")
    return cls(**d)


def drive(job: Generator[Any, Any, R], on_event: Callable[[Any], None] | None = None) -> R:
    """Run ``job`` to its end, passing every event it yields to ``on_event``; return the job's return value."""

    def consume(event: Any) -> None:
        if on_event is not None:
            on_event(event)

    try:
        next(relay(job, consume))  # consume gives None, so the relay yields nothing: it ends with the value
    except StopIteration as end:
        return end.value
    raise AssertionError("unreachable: the relay of a consumer yields nothing")


def relay(job: Generator[Any, Any, R], convert: Callable[[Any], Any]) -> Generator[Any, None, R]:
    """Yield ``convert(event)`` as each event of ``job`` arrives (nothing where it gives None) and return the
    job's value: ``result = yield from relay(job, convert)`` inside another job."""
    while True:
        try:
            event = next(job)
        except StopIteration as end:
            return end.value
        out = convert(event)
        if out is not None:
            yield out
