"""Run every benchmark in one process and print one table of ratios measured side by side, with the machine.

    .venv/bin/python -m benchmarks [--quick] [--json PATH] [--only train_step,loader,...] [--device auto]
    .venv/bin/python benchmarks/run_all.py [same options]

Modules, in order: ``bench_train_step`` (MC-Loss step vs CE step), ``bench_loader`` (Fieldmark's fine-tuning path
vs a plain torchvision loop), ``bench_sampler`` (TASN sampler), ``bench_explain`` (explanation maps),
``bench_export_rss`` (memory of ``fieldmark export`` over many images), ``bench_memory`` (peak memory of training
against the image-cache setting and the memory plan), ``bench_speed`` (the training speed options side by side,
and a step's GFLOP/s against the machine's matmul peak), ``bench_evaluate`` (evaluate's published protocol in
batches of one shape against one photo at a time). Each exposes ``run(...) -> list[dict]``
(rows of name, seconds, ratio, goal, met); a module that is missing or fails becomes a row saying so.

Environment: like the ``./fm`` launcher, the process runs with ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` = 4000000000 (glibc keeps the activation buffers: 2-3x on CPU), and with
``OMP_WAIT_POLICY=PASSIVE`` so that OpenMP threads sleep instead of spinning when the cores are shared (on a
loaded 2-core machine spinning made a MobileNetV2 step 5-20x slower and its times erratic). Unset ones are set and
the process re-executes itself; ``--no-env`` keeps the environment as it is. The machine line shows what applied.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/run_all.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import TUNED_ENV, format_table, machine_line, reexec_tuned, row  # noqa: E402,F401

MODULES = ("train_step", "loader", "sampler", "explain", "export_rss", "memory", "speed", "evaluate")
def ensure_env(argv: list[str]) -> None:
    """Re-execute with :data:`~benchmarks.common.TUNED_ENV` filled in when some of it is missing (glibc reads it
    at start-up)."""
    reexec_tuned("benchmarks.run_all", argv)


def _call_run(module: Any, quick: bool, device: str) -> list[dict]:
    """Call ``module.run`` with the options it accepts (modules written by others take different ones)."""
    params = inspect.signature(module.run).parameters
    kwargs: dict[str, Any] = {}
    if "quick" in params:
        kwargs["quick"] = quick
    elif quick and "repeats" in params:
        kwargs["repeats"] = 3
    if "device" in params:
        kwargs["device"] = "cpu" if device == "auto" and params["device"].default == "cpu" else device
        if kwargs["device"] == "auto":
            from engine.device import resolve_device

            kwargs["device"] = str(resolve_device("auto"))
    return list(module.run(**kwargs))


def run_module(name: str, quick: bool, device: str) -> tuple[list[dict], float]:
    """The rows of ``benchmarks.bench_<name>`` (or one row saying why there are none) and its seconds."""
    start = time.perf_counter()
    try:
        module = importlib.import_module(f"benchmarks.bench_{name}")
    except ImportError as exc:
        return [row(f"{name}: not run", None, None, None, None, note=f"benchmarks/bench_{name}.py: {exc}")], 0.0
    try:
        rows = _call_run(module, quick, device)
    except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the others
        import traceback

        tail = traceback.format_exc().strip().splitlines()[-3:]
        return [row(f"{name}: FAILED", None, None, None, False, note=f"{exc!r}; " + " | ".join(tail))], \
            time.perf_counter() - start
    for r in rows:
        r["name"] = f"{name}: {r['name']}"
        r.setdefault("module", name)
    return rows, time.perf_counter() - start


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the export, loader workers)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _load() -> str:
    return "{:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table; exit code 0 even when a goal is missed (they are reports)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke check in about two minutes")
    ap.add_argument("--json", metavar="PATH", help="also write the rows and the machine line to this JSON file")
    ap.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of {','.join(MODULES)}")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    ap.add_argument("--no-env", action="store_true", help="do not set the malloc / OpenMP variables")
    args = ap.parse_args(argv)
    if not args.no_env:
        ensure_env(argv)
    names = MODULES if not args.only else tuple(n.strip() for n in args.only.split(",") if n.strip())
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}: use {', '.join(MODULES)}")
    machine = machine_line()
    print(f"machine: {machine}", flush=True)
    t0 = time.perf_counter()
    rows: list[dict] = []
    timings: dict[str, float] = {}
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        got, seconds = run_module(name, args.quick, args.device)
        rows += got
        timings[name] = seconds
    total = time.perf_counter() - t0
    cpu = _cpu_seconds()
    print(format_table(rows))
    print(f"\n{'quick' if args.quick else 'full'} run, {total:.0f} s in all ("
          + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f"); CPU time {cpu:.0f} s (this process and its children), load now {_load()}")
    missed = [r["name"] for r in rows if r.get("met") is False]
    print("goals missed: " + ("; ".join(missed) if missed else "none"))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "quick": args.quick, "total_seconds": total, "cpu_seconds": cpu,
                                               "module_seconds": timings, "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
