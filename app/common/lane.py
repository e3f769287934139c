"""A worker lane: plain functions (or generators) run one at a time on a private thread; the newest job wins.

The pattern of napari's ``thread_worker`` (superqt): every job is a superqt worker whose ``returned`` /
``errored`` / ``yielded`` signals reach the GUI thread. The lane starts them on its own one-thread
:class:`QThreadPool`, so torch work never runs twice at once (a model is not shared between threads) and the
global pool stays free for the library's thumbnails.

Stale work: each :meth:`Lane.submit` with ``supersede=True`` moves the lane's generation on. Older jobs see their
:class:`~app.common.tokens.Token` go stale (``token.check()`` raises :class:`engine.errors.Cancelled`, so a queued
job ends before it starts and a running one at its next check), and whatever an old job still returns is dropped
on the GUI thread. Cancellation is never an error the user sees (Anki's ``Interrupted``).
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from typing import Any, Callable

import shiboken6
from PySide6.QtCore import QObject, QThreadPool
from superqt.utils import WorkerBase, create_worker

from engine.errors import Cancelled

from .tokens import Generation, Token

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """A job's RuntimeError, re-raised under another type: superqt's generator worker takes a RuntimeError for
    a deleted worker and drops it silently, so the GUI would never hear of the failure."""


def _guard_generator(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any):
        try:
            return (yield from fn(*args, **kwargs))
        except RuntimeError as exc:
            raise JobFailed(f"{type(exc).__name__}: {exc}") from exc

    return guarded


class Lane(QObject):
    """Runs jobs one at a time off the GUI thread. A job is ``fn(*args, token=Token)`` returning plain data."""

    def __init__(self, parent: QObject | None = None, name: str = "lane") -> None:
        super().__init__(parent)
        self.setObjectName(name)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self.pool.setExpiryTimeout(-1)  # keep the one thread: torch's thread-local state stays warm
        self._counter = Generation()
        self._workers: set[WorkerBase] = set()
        self._stop = threading.Event()
        self.busy = 0  # jobs submitted and not yet finished

    @property
    def generation(self) -> int:
        return self._counter.value

    def submit(self, fn: Callable[..., Any], *args: Any, on_returned: Callable[[Any], None],
               on_errored: Callable[[BaseException], None] | None = None,
               on_yielded: Callable[[Any], None] | None = None, on_finished: Callable[[], None] | None = None,
               supersede: bool = True) -> Token:
        """Queue ``fn(*args, token=...)``; ``on_returned(result)`` runs on the GUI thread unless the job went
        stale. A generator function makes ``on_yielded`` receive what it yields. Errors other than Cancelled
        go to ``on_errored`` (default: logged); ``on_finished()`` runs after either, stale or not."""
        if supersede:
            self._counter.value += 1
        token = Token(self._counter, self._counter.value, self._stop)
        if inspect.isgeneratorfunction(fn):
            fn = _guard_generator(fn)
        worker = create_worker(fn, *args, token=token, _start_thread=False, _ignore_errors=True)

        def returned(result: Any) -> None:
            if shiboken6.isValid(self) and not token.is_stale():
                on_returned(result)

        def errored(exc: BaseException) -> None:
            if isinstance(exc, Cancelled) or not shiboken6.isValid(self):
                return
            if on_errored is not None and not token.is_stale():
                on_errored(exc)
            elif not token.is_stale():
                log.error("%s job %s failed: %s", self.objectName(), getattr(fn, "__name__", fn), exc,
                          exc_info=(type(exc), exc, exc.__traceback__))

        def yielded(value: Any) -> None:
            if on_yielded is not None and shiboken6.isValid(self) and not token.is_stale():
                on_yielded(value)

        def finished() -> None:
            self._workers.discard(worker)
            if shiboken6.isValid(self):
                self.busy = max(0, self.busy - 1)
                if on_finished is not None:
                    on_finished()

        worker.returned.connect(returned)
        worker.errored.connect(errored)
        if hasattr(worker.signals, "yielded"):
            worker.yielded.connect(yielded)
        worker.finished.connect(finished)
        self._workers.add(worker)  # the pool does not keep the Python object alive
        self.busy += 1
        self.pool.start(worker)
        return token

    def cancel(self) -> None:
        """Make every queued and running job stale (they end at their next check)."""
        self._counter.value += 1

    def is_idle(self) -> bool:
        return self.busy == 0

    def shutdown(self, wait_ms: int = 5000) -> bool:
        """Cancel everything and wait for the running job; True when the lane is idle."""
        self._stop.set()
        self.cancel()
        done = self.pool.waitForDone(wait_ms)
        self._stop = threading.Event()  # usable again (a close that was refused keeps the page working)
        return done
