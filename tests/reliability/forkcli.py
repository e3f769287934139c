"""A fork server for `fieldmark` commands: ``python -m tests.reliability.forkcli`` imports the engine once, then
reads JSON requests on stdin, one per line, and answers each with one JSON line:

* ``{"op": "run", "argv": [...], "stdout": FILE, "stderr": FILE}`` forks a child that runs
  ``engine.cli.main(argv)`` with its output in the two files and exits with its status; answers ``{"pid": N}``;
* ``{"op": "wait", "pid": N}`` reaps that child; answers ``{"status": S}`` (the exit status, or -signal).

The server is single-threaded and has run no torch computation when it forks, so the children start clean (one
intra-op thread each, as the DataLoader does in its workers). Used by the reliability tests that SIGKILL training.
"""

from __future__ import annotations

import json
import os
import sys


def _child(argv: list[str], stdout: str, stderr: str) -> None:
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
                _child(req["argv"], req["stdout"], req["stderr"])
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
