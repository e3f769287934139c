"""The child-process runner the GUI starts for long jobs (training, building the demo). No Qt here.

    python -m app.child train --config '<TrainConfig as JSON>' [--resume [--allow-data-change]]
    python -m app.child demo [--out DIR]

Every engine event goes to stdout as one JSON line (:func:`engine.events.to_json`), the job's result last;
stray prints and logging go to stderr. A line ``stop`` on stdin (or stdin closing, when the GUI is gone) asks the
job to stop between batches. Exit status: 0 done, 130 stopped, 2 a user-facing error (``error: ...`` on stderr),
1 a crash (traceback on stderr).

The child lowers its own scheduling priority (``FIELDMARK_CHILD_NICE``, default 10; 0 keeps it): training uses every
core, and at equal priority the window's paints would queue behind it; at a lower one the desktop stays fluid while
training loses next to nothing, since the GUI sleeps almost all of the time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import traceback
from typing import Any, Callable, Generator, TextIO

EXIT_OK, EXIT_CRASH, EXIT_ERROR, EXIT_STOPPED = 0, 1, 2, 130

log = logging.getLogger(__name__)

DEFAULT_NICE = 10


def lower_priority(env: dict[str, str] | None = None) -> int:
    """Lower this process's priority by ``FIELDMARK_CHILD_NICE`` (POSIX nice; below-normal class on Windows).

    Returns the increment applied (0 when none). A bad value is an error naming it; a platform that refuses is
    only logged, since the job runs either way."""
    raw = (os.environ if env is None else env).get("FIELDMARK_CHILD_NICE", str(DEFAULT_NICE)).strip()
    try:
        inc = int(raw)
    except ValueError:
        raise SystemExit(f"error: FIELDMARK_CHILD_NICE={raw!r} is not a whole number; use 0 to 19 (0 = no change)")
    if not 0 <= inc <= 19:
        raise SystemExit(f"error: FIELDMARK_CHILD_NICE={inc} is out of range; use 0 to 19 (0 = no change)")
    if inc == 0:
        return 0
    try:
        if hasattr(os, "nice"):
            os.nice(inc)
        elif sys.platform == "win32":  # pragma: no cover - Windows only
            import ctypes
            below_normal = 0x4000
            kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
            kernel32.SetPriorityClass(kernel32.GetCurrentProcess(), below_normal)
        else:  # pragma: no cover
            return 0
    except OSError as exc:  # pragma: no cover - e.g. a sandbox that forbids it
        log.warning("could not lower the job's priority: %s", exc)
        return 0
    return inc


def watch_stdin(stop: threading.Event, stream: TextIO | None = None) -> None:
    """Set ``stop`` when a ``stop`` line arrives or the stream ends (runs on a daemon thread)."""
    stream = stream if stream is not None else sys.stdin
    try:
        for line in stream:
            if line.strip() == "stop":
                break
    except (OSError, ValueError):
        pass
    stop.set()


def train_job(args: argparse.Namespace, should_stop: Callable[[], bool]) -> Generator[Any, None, Any]:
    """The training job: the exact TrainConfig the GUI built, through :func:`engine.training.loop.train`."""
    from engine.training.config import TrainConfig
    from engine.training.loop import train

    cfg = TrainConfig.from_dict(json.loads(args.config))
    return train(cfg, should_stop=should_stop, resume=args.resume, allow_data_change=args.allow_data_change)


def demo_job(args: argparse.Namespace, should_stop: Callable[[], bool]) -> Generator[Any, None, Any]:
    """Build the toy-birds demo (data + a trained run) with :func:`engine.demo.build_demo`."""
    from engine.demo import build_demo  # type: ignore[import-not-found]

    return build_demo(out=args.out, should_stop=should_stop)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app.child", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="job", required=True)
    t = sub.add_parser("train", help="train a TrainConfig given as JSON")
    t.add_argument("--config", required=True, help="TrainConfig.to_dict() as a JSON string")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: go on although training photos were removed or changed (recorded in the run)")
    t.set_defaults(func=train_job)
    d = sub.add_parser("demo", help="build the toy-birds demo")
    d.add_argument("--out", default=None)
    d.set_defaults(func=demo_job)
    return p


def run_job(gen: Generator[Any, None, Any], out: TextIO) -> Any:
    """Drive ``gen``, writing each event and then its result as JSON lines to ``out``."""
    from engine.events import drive, to_json

    def write(item: Any) -> None:
        out.write(to_json(item) + "\n")
        out.flush()

    result = drive(gen, write)
    if result is not None:
        write(result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Events get the real stdout; everything else printed (by any library) goes to stderr.
    events = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    lower_priority()
    stop = threading.Event()
    threading.Thread(target=watch_stdin, args=(stop,), name="stdin-stop", daemon=True).start()

    from engine.errors import Cancelled, EngineError

    try:
        run_job(args.func(args, stop.is_set), events)
        return EXIT_OK
    except Cancelled as exc:
        print(f"stopped: {exc}", file=sys.stderr, flush=True)
        return EXIT_STOPPED
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except BaseException as exc:  # noqa: BLE001 - the parent shows the traceback's last lines
        traceback.print_exc(file=sys.stderr)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return EXIT_CRASH
    finally:
        try:
            events.flush()
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
