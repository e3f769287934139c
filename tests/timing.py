"""The one time measure of the suite's time checks: CPU time, never the wall clock.

On a shared machine the wall clock measures the other jobs as much as ours (these 2-core machines run several
test suites at once), so a wall-clock budget passes or fails with the load. CPU time counts only the work done:

:func:`thread_cpu` gives the CPU seconds of the calling thread spent in ``fn()`` (``time.thread_time``): what the
GUI thread itself did, the measure the app tests' stall probe uses for "the event loop was blocked". Timeouts that
only guard against a hang (``communicate(timeout=...)``, ``qtbot.waitUntil``) stay in wall-clock time: a hung
process uses no CPU.

Budgets measured this way are performance checks: mark their tests ``@pytest.mark.perf`` (they run in CI).
"""

from __future__ import annotations

import time
from typing import Callable


def thread_cpu(fn: Callable[[], object]) -> float:
    """CPU seconds the calling thread spent running ``fn()``."""
    start = time.thread_time()
    fn()
    return time.thread_time() - start
