"""A guard against a reference-count bug of PySide6 6.12 on Python 3.11.

PySide6 6.12's bindings return ``None`` (from every void method, e.g. ``setText``, ``processEvents``) and ``True``
(from a Python signal's ``emit``) without taking a reference. On Python >= 3.12 these objects are immortal
(PEP 683), so nothing happens; on Python 3.11 each call drops one reference, and after a few thousand calls the
interpreter aborts with "Fatal Python error: none_dealloc: deallocating None". PySide6 6.11 does not have the
bug. :func:`guard_singletons` detects the leak and gives the three singletons a reference count so large that
they behave as immortal, as they do on Python 3.12.
"""

from __future__ import annotations

import logging
import platform
import sys

log = logging.getLogger(__name__)

_PINNED = 1 << 40
_applied = False


def _leaks() -> bool:
    """True when PySide6 drops references to None or True (measured on 64 calls, no QApplication needed)."""
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        poked = Signal()

    probe = _Probe()
    none0, true0 = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(64):
        probe.setObjectName("probe")
        probe.poked.emit()
    return none0 - sys.getrefcount(None) >= 32 or true0 - sys.getrefcount(True) >= 32


def guard_singletons() -> bool:
    """Apply the workaround when this interpreter and PySide6 need it; returns whether it is in force."""
    global _applied
    if _applied:
        return True
    if sys.version_info >= (3, 12) or platform.python_implementation() != "CPython":
        return False
    if not _leaks():
        return False
    import ctypes

    import PySide6

    for obj in (None, True, False):
        ref = ctypes.c_ssize_t.from_address(id(obj))  # ob_refcnt is the first field of every PyObject
        if ref.value < _PINNED:
            ref.value += _PINNED
    _applied = True
    log.warning("PySide6 %s drops references to None/True on Python %s; a workaround is in force "
                "(PySide6-Essentials < 6.12 or Python >= 3.12 do not need it)", PySide6.__version__,
                platform.python_version())
    return True
