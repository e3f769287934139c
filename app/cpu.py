"""CPU sharing inside the window's process.

Maps, parts and comparisons run torch on worker threads of the GUI process. With torch's default of one thread per
core they would take every core, and the GUI thread (which must paint within a frame or two) would wait for a
slice. :func:`reserve_gui_core` leaves one core to it. A user's own ``OMP_NUM_THREADS`` is respected.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS tells it, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def reserve_gui_core() -> int:
    """Give torch all usable cores but one (at least one); returns the thread count now in force."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    threads = max(1, usable_cores() - 1)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        log.debug("torch uses %d thread(s) in the window's process", threads)
    return threads
