"""Helpers shared by the benchmarks: interleaved timing, the machine line, the table, generated image folders.

Every benchmark module exposes ``run(quick=False) -> list[dict]``; a row is
``{"name", "seconds", "ratio", "goal", "met"}`` plus optionally ``"measured"`` (a short human string shown in the
table instead of the seconds) and ``"note"`` (printed under the table). ``goal`` is a string such as ``"<= 1.05"``
or None for an informative row; ``met`` is True/False/None.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
OMP_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")
#: What the ``./fm`` launcher runs Fieldmark with: glibc keeps freed blocks (2-3x a CPU training step) and idle
#: OpenMP threads sleep. A benchmark measures under it, as a user's run goes (glibc reads it at start-up).
TUNED_ENV = {"MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000",
             "OMP_WAIT_POLICY": "PASSIVE"}
REEXEC_MARK = "FIELDMARK_BENCH_REEXEC"


def reexec_tuned(module: str, argv: list[str]) -> None:
    """Run ``python -m module argv`` again with :data:`TUNED_ENV` filled in when some of it is missing (a variable
    already set is kept: a measurement of other settings sets it on purpose); returns when nothing is missing."""
    import sys

    missing = {k: v for k, v in TUNED_ENV.items() if k not in os.environ}
    if not missing or os.environ.get(REEXEC_MARK):
        return
    env = {**os.environ, **missing, REEXEC_MARK: "1"}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


def row(name: str, seconds: float | None, ratio: float | None, goal: str | None, met: bool | None,
        measured: str | None = None, note: str | None = None) -> dict:
    """One table row (see the module docstring)."""
    out: dict = {"name": name, "seconds": seconds, "ratio": ratio, "goal": goal, "met": met}
    if measured is not None:
        out["measured"] = measured
    if note is not None:
        out["note"] = note
    return out


def interleaved_medians(fns: Sequence[Callable[[], object]], repeats: int, warmup: int = 1,
                        clock: Callable[[], float] = time.perf_counter) -> list[list[float]]:
    """Run ``fns`` in turn (A B A B ...) ``repeats`` times after ``warmup`` rounds; the seconds of each call.

    Interleaving keeps a load that comes and goes (other processes on a shared machine) from landing on one
    side only; the ratio of the medians is then meaningful even when the absolute times are not. ``clock``:
    ``time.process_time`` counts this process's CPU seconds instead of the wall clock's (on one thread, what a
    call would take on an idle core, however loaded the machine).
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = clock()
            fn()
            times[i].append(clock() - start)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """One line describing where the numbers were measured: CPU, cores, load, torch, threads, malloc, CUDA."""
    import torch

    cores = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = cores
    load = ""
    if hasattr(os, "getloadavg"):
        load = " load {:.1f}/{:.1f}/{:.1f},".format(*os.getloadavg())
    malloc = " ".join(f"{k}={os.environ[k]}" for k in MALLOC_ENV if k in os.environ) or "glibc default"
    omp = " ".join(f"{k}={os.environ[k]}" for k in OMP_ENV if k in os.environ) or "OpenMP default"
    if torch.cuda.is_available():
        cuda = f"CUDA {torch.cuda.get_device_name(0)} (torch CUDA {torch.version.cuda})"
    else:
        cuda = "no CUDA device" + (f" (torch built for CUDA {torch.version.cuda})" if torch.version.cuda else "")
    return (f"{cpu_model()}, {usable}/{cores} cores,{load} Python {platform.python_version()}, torch "
            f"{torch.__version__} ({torch.get_num_threads()} threads), malloc: {malloc}, {omp}, {cuda}")


def cli(run: Callable[..., list[dict]], doc: str, device: bool = False, count: bool = False,
        clock: bool = False) -> None:
    """The ``python -m benchmarks.bench_X`` entry: ``--quick`` (and ``--device`` / ``--count`` / ``--clock`` where
    the benchmark takes them), the machine line, then the table of ``run(...)``."""
    import argparse
    import sys

    main = sys.modules["__main__"]
    if getattr(main, "__spec__", None) is not None and main.__spec__.name:  # python -m benchmarks.bench_X
        reexec_tuned(main.__spec__.name, sys.argv[1:])
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run; ratios are noisier)")
    if device:
        ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    if count:
        ap.add_argument("--count", type=int, default=None, help="how many images")
    if clock:
        ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: the wall clock (an idle machine); cpu: this process's CPU seconds (one thread of "
                             "a loaded machine)")
    args = ap.parse_args()
    print(machine_line())
    print(format_table(run(**vars(args))))


def format_table(rows: Sequence[dict]) -> str:
    """The ``name | measured | ratio | goal | met`` table, then the rows' notes."""
    def measured(r: dict) -> str:
        if r.get("measured"):
            return str(r["measured"])
        s = r.get("seconds")
        if s is None:
            return ""
        return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"

    def ratio(r: dict) -> str:
        v = r.get("ratio")
        return "" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.0f}")

    def met(r: dict) -> str:
        return {None: "", True: "yes", False: "NO"}[r.get("met")]

    cells = [(str(r["name"]), measured(r), ratio(r), str(r.get("goal") or ""), met(r)) for r in rows]
    head = ("name", "measured", "ratio", "goal", "met")
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(5)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) if i in (0, 1, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(cell, widths)))
              for cell in cells]
    notes = [f"- {r['name']}: {r['note']}" for r in rows if r.get("note")]
    return "\n".join(lines + ([""] + notes if notes else []))


def make_photo(rng: np.random.Generator, label: int, n_classes: int, width: int, height: int) -> np.ndarray:
    """A learnable, photo-like RGB image: a smooth noisy background and a class-coloured ellipse with texture.

    The class sets the ellipse's hue and its stripe orientation, so a small network separates the classes after
    an epoch or two; position, size, background and noise vary freely.
    """
    import cv2

    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    xs = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    base = rng.uniform(40, 200, size=3).astype(np.float32)
    slope = rng.uniform(-60, 60, size=(2, 3)).astype(np.float32)
    img = base + ys[..., None] * slope[0] + xs[..., None] * slope[1]
    img = img + rng.normal(0, 12, size=(height, width, 3)).astype(np.float32)
    hue = int(180 * label / max(1, n_classes))
    colour = cv2.cvtColor(np.uint8([[[hue, 220, 230]]]), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    ax, ay = rng.uniform(0.15, 0.3) * width, rng.uniform(0.15, 0.3) * height
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (int(cx), int(cy)), (int(ax), int(ay)), float(rng.uniform(0, 180)), 0, 360, 255, -1)
    angle = np.pi * (label % 4) / 4
    stripes = 0.75 + 0.25 * np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 40)
    inside = mask.astype(bool)
    img[inside] = (colour * stripes[..., None])[inside]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 90) -> None:
    import cv2

    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover
        raise RuntimeError(f"cannot encode {path}")
    path.write_bytes(enc.tobytes())


def make_class_folders(root: Path, n_classes: int, per_class: int, width: int, height: int,
                       test_fraction: float = 0.5, seed: int = 0) -> Path:
    """``root/train/<class>/*.jpg`` and ``root/test/<class>/*.jpg`` of :func:`make_photo` images; returns root."""
    rng = np.random.default_rng(seed)
    n_test = int(round(per_class * test_fraction))
    for c in range(n_classes):
        for i in range(per_class):
            split = "test" if i < n_test else "train"
            folder = root / split / f"class_{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            write_jpeg(folder / f"img_{i:04d}.jpg", make_photo(rng, c, n_classes, width, height))
    return root
