"""A job's ticket on a worker lane (no Qt here, so the jobs that take one stay Qt-free and testable with a stub).

A lane's :class:`Generation` moves on with every superseding submit; a :class:`Token` remembers the generation it
was issued in and goes stale once the lane moved on or was stopped. Jobs type their ``token`` parameter as
:class:`TokenLike`, the two calls they make.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Generator, Protocol

from engine.errors import Cancelled


class TokenLike(Protocol):
    """What a job uses of its :class:`Token`."""

    def check(self) -> None: ...

    def is_stale(self) -> bool: ...


class Generation:
    """A lane's generation, shared with its jobs (an int read and written whole, so no lock is needed)."""

    def __init__(self) -> None:
        self.value = 0


@dataclass(frozen=True)
class Token:
    """A job's ticket: stale once a newer job was submitted with ``supersede`` or the lane was stopped."""

    counter: Generation
    generation: int
    stop: threading.Event

    def is_stale(self) -> bool:
        return self.stop.is_set() or self.counter.value != self.generation

    def check(self) -> None:
        """Raise Cancelled when stale (call between steps of a job)."""
        if self.is_stale():
            raise Cancelled("superseded by a newer request")


def checked(job: Generator[Any, None, Any], token: TokenLike) -> Generator[Any, None, Any]:
    """Relay an engine job's events, checking ``token`` before each of its steps (Cancelled once stale), and
    return its value: ``result = yield from checked(job, token)`` in a lane's job. The engine's generator is closed
    whichever way this ends, which is how the engine's jobs are cancelled."""
    try:
        while True:
            token.check()
            try:
                event = next(job)
            except StopIteration as end:
                return end.value
            yield event
    finally:
        job.close()
