"""The one time measure of the suite's time checks: CPU time, never the wall clock.

On a shared machine the wall clock measures the other jobs as much as ours (these 2-core machines run several
test suites at once), so a wall-clock budget passes or fails with the load. CPU time counts only the work done:

* :func:`thread_cpu` — CPU seconds of the calling thread spent in ``fn()`` (``time.thread_time``): what the GUI
  thread itself did, the measure the app tests' stall probe uses for "the event loop was blocked";
* :class:`CpuClock` — CPU seconds of this process and of its children once they have been waited for
  (``resource.getrusage``): the cost of a job that starts subprocesses.

Budgets measured this way are performance checks: mark their tests ``@pytest.mark.perf`` (they run in CI).
"""

from __future__ import annotations

import resource
import time
from typing import Callable


def thread_cpu(fn: Callable[[], object]) -> float:
    """CPU seconds the calling thread spent running ``fn()``."""
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def process_cpu() -> float:
    """User + system CPU seconds of this process and of its children that have been waited for."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class CpuClock:
    """CPU seconds since creation, of this process and its waited-for children: ``CpuClock().seconds()``."""

    def __init__(self) -> None:
        self.start = process_cpu()

    def seconds(self) -> float:
        return process_cpu() - self.start
