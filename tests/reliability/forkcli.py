"""A fork server for `fieldmark` commands: ``python -m tests.reliability.forkcli`` imports the engine once, then
reads JSON requests on stdin, one per line, and answers each with one JSON line:

* ``{"op": "run", "argv": [...], "stdout": FILE, "stderr": FILE}`` forks a child that runs
  ``engine.cli.main(argv)`` with its output in the two files and exits with its status; answers ``{"pid": N}``.
  With ``"kill": {"at": U, "delay": D}`` (0 <= U < 1, D seconds) a training child SIGKILLs itself: it picks batch
  ``T = 1 + floor(U * (R - 1))`` of the R batches it has left, kills itself D seconds after batch T ends (in batch
  T + 1, or in the epoch's evaluation and save when T ends an epoch), and never gets past the end of batch T + 1,
  so the kill always lands before the run can finish (see :func:`_arm_kill`);
* ``{"op": "wait", "pid": N}`` reaps that child; answers ``{"status": S}`` (the exit status, or -signal).

The server is single-threaded and has run no torch computation when it forks, so the children start clean (one
intra-op thread each, as the DataLoader does in its workers). Used by the reliability tests that SIGKILL training.
"""

from __future__ import annotations

import json
import os
import sys


def _arm_kill(at: float, delay: float) -> None:
    """Wrap ``engine.training.loop.train`` (the CLI looks it up at each call) so that this process SIGKILLs itself
    as the "kill" request of :func:`serve` says. The kill comes from a timer thread; the training generator waits
    at the end of batch T + 1 until it lands, so it never comes too late."""
    import signal
    import threading
    import time

    import engine.training.loop as loop
    from engine.events import BatchEnd, Started

    real = loop.train

    def train(*args, **kwargs):
        gen = real(*args, **kwargs)
        target, done = None, 0
        while True:
            try:
                ev = next(gen)
            except StopIteration as end:
                return end.value
            if isinstance(ev, Started):
                remaining = (ev.epochs - ev.start_epoch) * ev.steps_per_epoch
                target = 1 + int(at * (remaining - 1)) if remaining >= 2 else None
            elif isinstance(ev, BatchEnd) and target is not None:
                done += 1
                if done == target:
                    threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
                elif done == target + 1:
                    while True:  # the timer's kill ends this process here at the latest
                        time.sleep(1)
            yield ev

    loop.train = train


def _child(argv: list[str], stdout: str, stderr: str, kill: dict | None = None) -> None:
    code = 1
    try:
        out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        import torch

        torch.set_num_threads(1)
        if kill is not None:
            _arm_kill(float(kill["at"]), float(kill["delay"]))
        from engine.cli import main

        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:  # noqa: BLE001 - report, never return into the server's loop
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    import engine.cli  # noqa: F401  (the imports every child would otherwise repeat)
    import engine.cli.explain  # noqa: F401
    import engine.cli.train  # noqa: F401
    import engine.export.crops  # noqa: F401
    import engine.training.loop  # noqa: F401

    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "run":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(req["argv"], req["stdout"], req["stderr"], req.get("kill"))
            reply = {"pid": pid}
        elif req["op"] == "wait":
            _, status = os.waitpid(int(req["pid"]), 0)
            reply = {"status": os.waitstatus_to_exitcode(status)}
        else:
            reply = {"error": f"unknown op {req['op']!r}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
