"""The child-process runner, without Qt: stop on stdin, events as JSON lines."""

from __future__ import annotations

import io
import json
import threading

from app.child import run_job, watch_stdin
from engine.events import Finished, Message, Progress, from_dict


def test_watch_stdin_sets_stop_on_a_stop_line_and_on_eof():
    ev = threading.Event()
    watch_stdin(ev, io.StringIO("hello\nstop\nmore\n"))
    assert ev.is_set()
    ev2 = threading.Event()
    watch_stdin(ev2, io.StringIO(""))  # the GUI went away: stop too
    assert ev2.is_set()


def test_run_job_writes_every_event_and_the_result():
    def job():
        yield Progress("decoding", 1, 2)
        yield Message("info", "half way")
        return Finished("/tmp/run", 1, {"test_top1": 0.5})

    out = io.StringIO()
    result = run_job(job(), out)
    lines = [from_dict(json.loads(line)) for line in out.getvalue().splitlines()]
    assert lines == [Progress("decoding", 1, 2), Message("info", "half way"), result]


def _niceness_after(value: str | None) -> tuple[int, str]:
    """Run lower_priority in a fresh interpreter (it changes the process for good); its niceness and stderr."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "FIELDMARK_CHILD_NICE"}
    if value is not None:
        env["FIELDMARK_CHILD_NICE"] = value
    code = "import os; from app.child import lower_priority; lower_priority(); print(os.nice(0))"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return (int(p.stdout) if p.returncode == 0 else -999), p.stderr


def test_the_child_lowers_its_priority_so_the_window_stays_fluid():
    import os

    import pytest

    if not hasattr(os, "nice"):
        pytest.skip("POSIX nice only")
    base = os.nice(0)
    assert _niceness_after(None)[0] == min(19, base + 10)  # the default
    assert _niceness_after("0")[0] == base  # 0 leaves it alone
    assert _niceness_after("3")[0] == min(19, base + 3)
    code, err = _niceness_after("fast")
    assert code == -999 and "FIELDMARK_CHILD_NICE='fast'" in err and "0 to 19" in err
    code, err = _niceness_after("40")
    assert code == -999 and "FIELDMARK_CHILD_NICE=40 is out of range" in err
