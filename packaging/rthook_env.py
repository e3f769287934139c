"""PyInstaller runtime hook: the frozen app starts with the environment the ``./fm`` launcher gives.

glibc's malloc reads ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` once, when the process starts; keeping
the large activation buffers instead of unmapping them after every pass is 2-3x on CPU (DESIGN.md, "Performance
facts"). When they are not set, set them and execute the same program again, before anything heavy is imported.
``FIELDMARK_NO_MALLOC_TUNING=1`` turns this off. Child processes (training jobs) inherit the environment.
"""

import os
import sys

_TUNING = {"MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000"}


def _reexec_with_malloc_tuning() -> None:
    if not sys.platform.startswith("linux") or os.environ.get("FIELDMARK_NO_MALLOC_TUNING") == "1":
        return
    missing = {k: v for k, v in _TUNING.items() if k not in os.environ}
    if not missing:
        return
    os.environ.update(missing)
    try:
        os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
    except OSError:  # cannot re-execute (unusual file system): go on untuned rather than fail
        pass


_reexec_with_malloc_tuning()
