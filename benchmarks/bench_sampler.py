"""Benchmark of the TASN attention sampler (engine.sampler), all ratios measured in one run.

B = 8 images 3x448x448 sampled to 224x224 (the authors' 512 → 224 setting, scaled to this project's 448 px).
Rows: a bare ``grid_sample`` of the same size (the floor), ``sampling_grid`` + ``resample`` (goal: at most 1.5x
the bare call), and the slow per-row float64 reference grid (goal: the batched grid is at least 100x faster;
both grids then go through the same ``grid_sample``, so the comparison is grid against grid). Median of several
repeats after a warm-up. ``python benchmarks/bench_sampler.py`` prints the table; ``run()`` returns the rows.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from engine.sampler import reference_sampling_grid, resample, sampling_grid


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(batch: int = 8, size: int = 448, out: int = 224, repeats: int = 15,
        device: str = "cpu") -> list[dict]:
    """Time the sampler; rows of {name, seconds, ratio, goal, met} (ratio and goal as the row's name says)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=gen).to(device)
    maps = (torch.rand(batch, size, size, generator=gen) ** 4).to(device)
    plain = F.affine_grid(torch.eye(2, 3).expand(batch, 2, 3), [batch, 3, out, out], align_corners=True).to(device)
    sync = torch.cuda.synchronize if images.is_cuda else (lambda: None)

    def bare() -> None:
        F.grid_sample(images, plain, mode="bilinear", padding_mode="zeros", align_corners=True)
        sync()

    def fast_grid() -> None:
        sampling_grid(maps, out)
        sync()

    def fast() -> None:
        resample(images, sampling_grid(maps, out))
        sync()

    t_bare = _median_seconds(bare, repeats)
    t_fast = _median_seconds(fast, repeats)
    t_grid = _median_seconds(fast_grid, repeats)
    t_ref = _median_seconds(lambda: reference_sampling_grid(maps, out), max(3, repeats // 3))
    return [
        {"name": f"bare grid_sample B={batch} {size}->{out}", "seconds": t_bare, "ratio": 1.0, "goal": None,
         "met": None},
        {"name": "sampling_grid + resample (x bare)", "seconds": t_fast, "ratio": t_fast / t_bare, "goal": "<= 1.5",
         "met": t_fast / t_bare <= 1.5},
        {"name": "sampling_grid alone (x bare)", "seconds": t_grid, "ratio": t_grid / t_bare, "goal": None,
         "met": None},
        {"name": "reference grid (speed-up of sampling_grid)", "seconds": t_ref, "ratio": t_ref / t_grid,
         "goal": ">= 100", "met": t_ref / t_grid >= 100},
        {"name": "reference grid + resample (speed-up of the pipeline)", "seconds": t_ref + t_bare,
         "ratio": (t_ref + t_bare) / t_fast, "goal": None, "met": None},
    ]


def format_table(rows: list[dict]) -> str:
    lines = [f"{'case':<54} {'ms':>9} {'ratio':>8} {'goal':>7} {'met':>5}"]
    for r in rows:
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(f"{r['name']:<54} {r['seconds'] * 1e3:9.2f} {r['ratio']:8.2f} {r['goal'] or '':>7} {met:>5}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(format_table(run()))
