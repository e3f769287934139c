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
