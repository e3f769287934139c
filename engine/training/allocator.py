"""The C library's allocator where it is glibc (Linux): where big blocks come from, and freed memory given back.

The launcher (``./fm``) and the benchmarks set ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` to 4 GB:
glibc then keeps every freed block in the process's heap and serves later allocations from it, which makes CPU
training 2-3× faster (docs/RESULTS.md#launcher), and the heap grows to the largest extent that the blocks' layout
ever needed. For a plain training step that is 1.2-1.45× the peak of its live tensors; for a step with the backbone
checkpointed 2.4-3.3×, since a recomputed stage and its gradients do not fit in the blocks that the stages before
it freed (docs/RESULTS.md#memory). Serving the big blocks from pages of their own instead (``mmap``, given back to
the machine when freed) keeps a checkpointed step near 1.5×, for about 75 % more computation a step (the fresh
pages' faults).

So while the memory plan measures a step (:func:`probing`), big blocks get pages of their own, and the heap the
probe used is given back afterwards; a run whose plan checkpoints keeps big blocks on their own pages
(:func:`own_pages`). Elsewhere than glibc (macOS, Windows: their allocators give big blocks back anyway) and under
glibc's own settings (no ``MALLOC_MMAP_THRESHOLD_``: blocks over 32 MB get pages of their own) nothing changes
during the probe.
"""

from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager
from typing import Iterator

MB = 2 ** 20
M_MMAP_THRESHOLD = -3  # mallopt's parameter (malloc.h)
#: The smallest block that gets pages of its own while the plan's probe runs.
PROBE_THRESHOLD_MB = 1


def _libc() -> ctypes.CDLL | None:
    """glibc, or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # musl and other C libraries: no mallopt / malloc_trim
        return None


def is_glibc() -> bool:
    """Whether this process's allocator is glibc's, which the functions here steer."""
    return _libc() is not None


def kept_threshold() -> int | None:
    """The mmap threshold in bytes that the environment set above glibc's own ceiling of 32 MB (the launcher's 4 GB:
    every freed block stays in the heap), or None (glibc decides, or not glibc)."""
    try:
        value = int(os.environ.get("MALLOC_MMAP_THRESHOLD_", ""))
    except ValueError:
        return None
    return value if value > 32 * MB and _libc() is not None else None


def set_threshold(nbytes: int) -> bool:
    """Blocks of at least ``nbytes`` get pages of their own from now on; False where it cannot be set."""
    libc = _libc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, max(0, min(int(nbytes), 2 ** 31 - 1))))


def give_back() -> None:
    """Give the heap's free pages back to the machine (``malloc_trim``); nothing elsewhere than glibc."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@contextmanager
def probing() -> Iterator[None]:
    """Around the plan's probe: under the launcher's settings its big blocks get pages of their own (so that the
    heap does not keep a step's worth of them), and afterwards the threshold is the environment's again and the
    heap's free pages are given back."""
    kept = kept_threshold()
    if kept is not None:
        set_threshold(PROBE_THRESHOLD_MB * MB)
        # the heap's free top first: a block that fits there is served from it whatever the threshold says
        give_back()
    try:
        yield
    finally:
        if kept is not None:
            set_threshold(kept)
        give_back()


def own_pages(threshold_mb: int) -> bool:
    """A checkpointed run: blocks of at least ``threshold_mb`` MB get pages of their own for the rest of the
    process, and the heap's free pages are given back. False where it cannot be set (not glibc)."""
    done = set_threshold(threshold_mb * MB)
    give_back()
    return done


__all__ = ["PROBE_THRESHOLD_MB", "is_glibc", "kept_threshold", "set_threshold", "give_back", "probing", "own_pages"]
