"""Peak memory of ``fieldmark export`` over many images: the export streams, so its RSS stays flat.

A smallnet run is trained for one epoch (64 px) on a small generated set with :func:`engine.training.loop.train`, then
``python -m engine export RUN FLAT --out DIR`` runs as a subprocess over a flat folder of generated small JPEGs
(10,000; 1,000 with ``--quick``). The parent samples the child's RSS with psutil every 50 ms and follows the
export's progress by counting the lines of its ``done.jsonl`` (one per finished image, appended per batch).
Reported: peak RSS once 10 %, 50 % and 100 % of the images are done, and the rate. Goal: the peak at 100 % is at
most 1.10× the peak at 10 % (what is allocated after the first tenth is small; growth with the image count would
show up here). When a time cap cuts the export short, the rows say how far it got and the rate.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from benchmarks.common import cli, make_class_folders, make_photo, row, write_jpeg

GOAL = 1.10
SAMPLE_S = 0.05


@dataclass
class Trace:
    """RSS samples (seconds since start, bytes) and the number of images done at each sample."""

    t: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    files_at: int | None = None  # index of the first sample that saw parts_coco.json (the job's last file)

    def peak_until(self, n_done: int) -> int | None:
        """Highest RSS seen up to the first sample at which ``n_done`` images were done (None: never reached)."""
        for i, d in enumerate(self.done):
            if d >= n_done:
                return max(self.rss[: i + 1])
        return None

    def time_at(self, n_done: int) -> float | None:
        return next((t for t, d in zip(self.t, self.done) if d >= n_done), None)


def train_tiny_run(tmp: Path) -> Path:
    """One epoch of smallnet at 64 px on 4 generated classes; returns the run folder."""
    from engine.training.config import TrainConfig
    from engine.events import drive
    from engine.training.loop import train

    data = make_class_folders(tmp / "train-data", 4, 16, 96, 72, test_fraction=0.25)
    run = tmp / "run"
    cfg = TrainConfig(data=str(data), out=str(run), model="smallnet", method="mcloss", epochs=1, img_size=64,
                      batch_size=16, device="cpu", seed=0)
    drive(train(cfg))
    return run


def make_flat_folder(folder: Path, count: int, width: int = 128, height: int = 96, seed: int = 1) -> Path:
    """``count`` small JPEGs: 64 generated photos, each written many times with a random shift and flip."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    bases = [make_photo(rng, i % 4, 4, width, height) for i in range(64)]
    for i in range(count):
        img = np.roll(bases[i % 64], int(rng.integers(0, width)), axis=1)
        write_jpeg(folder / f"img_{i:05d}.jpg", img[:, ::-1] if i % 2 else img, quality=85)
    return folder


def _count_lines(path: Path, state: dict) -> int:
    """Lines of ``path`` so far, reading only what was appended since the last call."""
    try:
        with open(path, "rb") as fh:
            fh.seek(state.get("offset", 0))
            chunk = fh.read()
    except FileNotFoundError:
        return 0
    state["offset"] = state.get("offset", 0) + len(chunk)
    state["lines"] = state.get("lines", 0) + chunk.count(b"\n")
    return state["lines"]


def trace_export(run: Path, flat: Path, out: Path, max_seconds: float) -> tuple[Trace, int, str]:
    """Run the export in a subprocess and sample it; (trace, exit code or -1 when stopped at the cap, stderr)."""
    from engine.export.files import STATE

    cmd = [sys.executable, "-m", "engine", "export", str(run), str(flat), "--out", str(out), "--device", "cpu"]
    trace, state = Trace(), {}
    done_file = out / STATE / "done.jsonl"
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        ps = psutil.Process(proc.pid)
        start = time.perf_counter()
        code = None
        while code is None:
            try:
                rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            except psutil.Error:
                rss = trace.rss[-1] if trace.rss else 0
            if rss == 0:  # exited, not yet reaped
                rss = trace.rss[-1] if trace.rss else 0
            trace.t.append(time.perf_counter() - start)
            trace.rss.append(rss)
            trace.done.append(_count_lines(done_file, state))
            if trace.files_at is None and (out / "parts_coco.json").exists():
                trace.files_at = len(trace.t) - 1
            if trace.t[-1] > max_seconds:
                proc.terminate()
                proc.wait(30)
                code = -1
                break
            time.sleep(SAMPLE_S)
            code = proc.poll()
        trace.done[-1] = _count_lines(done_file, state)
        err.seek(0)
        tail = err.read().decode("utf-8", "replace")[-2000:]
    return trace, code, tail


def remove_later(folder: Path) -> None:
    """Delete ``folder`` in a detached ``rm -rf``: unlinking tens of thousands of files took 3 ms each on the
    shared disk (100 s for the 10,000-image run), time that says nothing about the export."""
    try:
        subprocess.Popen(["rm", "-rf", "--", str(folder)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)


def _cuda_build() -> bool:
    import torch

    return bool(torch.version.cuda)


def exit_overhead() -> tuple[int, int]:
    """RSS of ``import torch`` once imported, and its peak while the interpreter shuts down (bytes)."""
    code = "import sys, time, torch; print('ready', flush=True); time.sleep(0.5)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    proc.stdout.readline()
    before, peak = 0, 0
    start = time.perf_counter()
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss
        except psutil.Error:
            break
        if time.perf_counter() - start < 0.4:
            before = max(before, rss)
        peak = max(peak, rss)
        time.sleep(0.01)
    proc.wait()
    return before, peak


def run(quick: bool = False, count: int | None = None, max_seconds: float | None = None) -> list[dict]:
    """Peak RSS of the export at 10 / 50 / 100 % of the images; rows of {name, seconds, ratio, goal, met}."""
    count = count or (1000 if quick else 10000)
    max_seconds = max_seconds or (120.0 if quick else 420.0)
    mb = 2 ** 20
    tmp = Path(tempfile.mkdtemp(prefix="fm-bench-export-"))
    try:
        t0 = time.perf_counter()
        run_dir = train_tiny_run(tmp)
        flat = make_flat_folder(tmp / "flat", count)
        setup_s = time.perf_counter() - t0
        trace, code, stderr = trace_export(run_dir, flat, tmp / "export", max_seconds)
    finally:
        remove_later(tmp)
    if code not in (0, -1):
        return [row("export RSS", None, None, f"<= {GOAL}", False,
                    note=f"fieldmark export failed with exit code {code}: {stderr.strip()[-600:]}")]
    done = trace.done[-1]
    marks = {p: trace.peak_until(max(1, count * p // 100)) for p in (10, 50, 100)}
    if trace.files_at is not None:  # 100 %: the whole job, parts.csv and parts_coco.json included
        marks[100] = max(trace.rss[: trace.files_at + 1])
    first, last = trace.time_at(1), trace.time_at(done)
    rate = (done - 1) / (last - first) if done > 1 and first is not None and last and last > first else 0.0
    reached = max([p for p, v in marks.items() if v is not None], default=0)
    p10 = marks[10]
    ratio = marks[reached] / p10 if reached and p10 else None
    cut = code == -1
    note = (f"{done}/{count} images in {trace.t[-1]:.0f} s, {rate:.1f} images/s after the first record "
            f"(setup: training the run and writing the images {setup_s:.0f} s); RSS sampled every "
            f"{SAMPLE_S * 1e3:.0f} ms ({len(trace.t)} samples)")
    if cut:
        note += (f"; stopped at the {max_seconds:.0f} s cap: {count:,} images would take about "
                 f"{count / max(rate, 1e-9) / 60:.1f} min at this rate")
    rows = [row(f"export RSS peak at {p} % ({count * p // 100} images)", None,
                (v / p10) if v and p10 else None, None, None,
                measured=f"{v / mb:.0f} MB" if v else "not reached") for p, v in marks.items()]
    rows[-1]["note"] = "100 %: until parts.csv and parts_coco.json are written (the whole job)"
    top = max(trace.rss)
    after = f"{(top - (marks[100] or top)) / mb:.0f} MB come after the job, while Python shuts down"
    if not quick:
        bare, bare_exit = exit_overhead()
        after += (f"; a bare `import torch` process does the same: {bare / mb:.0f} MB once imported, "
                  f"{bare_exit / mb:.0f} MB at exit (torch {'CUDA' if _cuda_build() else 'CPU'} build)")
    rows.append(row("export RSS peak of the whole process, interpreter exit included", None,
                    top / p10 if p10 else None, None, None, measured=f"{top / mb:.0f} MB", note=after))
    flat_ok = ratio is not None and ratio <= GOAL and reached >= 50
    rows.append(row(f"export RSS flat (peak at {reached} % / peak at 10 %)", trace.t[-1], ratio, f"<= {GOAL}",
                    flat_ok, measured=f"{done} images, {rate:.1f} img/s", note=note))
    return rows


if __name__ == "__main__":
    cli(run, __doc__, count=True)
