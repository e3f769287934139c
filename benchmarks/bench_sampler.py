"""Benchmark of the TASN attention sampler (engine.models.sampler), all ratios measured side by side in one run.

B = 8 images 3x448x448 sampled to 224x224 (the authors' 512 → 224 setting, scaled to this project's 448 px).
Rows: a bare ``grid_sample`` of the same size (the floor), ``sampling_grid`` + ``resample`` (goal: at most 1.5x
the bare call), ``sampling_grid`` alone, and the slow per-row float64 reference grid (goal: the batched grid is at
least 100x faster; both grids then go through the same ``grid_sample``, so the comparison is grid against grid).
The three fast cases are timed interleaved (medians), the reference after them.

Why the reference ratio has a ceiling: both sides must read every pixel of the B full-resolution maps for the row
and column maxima (the reference does it row by row with NumPy), and that O(B·H·W) read is most of the batched
grid's time; the reference's Python loops are only over bins and output samples (O(iters·n + S) per image).
``python -m benchmarks.bench_sampler [--quick] [--device cuda]`` prints the table; ``run()`` returns the rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.common import cli, interleaved_medians, median, row
from engine.models.sampler import reference_sampling_grid, resample, sampling_grid


def run(quick: bool = False, device: str = "cpu", batch: int = 8, size: int = 448, out: int = 224) -> list[dict]:
    """Time the sampler; rows of {name, seconds, ratio, goal, met} (ratio and goal as the row's name says)."""
    from engine.device import resolve_device

    device = str(resolve_device(device))
    repeats = 3 if quick else 15
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=gen).to(device)
    maps = (torch.rand(batch, size, size, generator=gen) ** 4).to(device)
    plain = F.affine_grid(torch.eye(2, 3).expand(batch, 2, 3), [batch, 3, out, out], align_corners=True).to(device)
    sync = torch.cuda.synchronize if images.is_cuda else (lambda: None)

    def bare() -> None:
        F.grid_sample(images, plain, mode="bilinear", padding_mode="zeros", align_corners=True)
        sync()

    def fast() -> None:
        resample(images, sampling_grid(maps, out))
        sync()

    def fast_grid() -> None:
        sampling_grid(maps, out)
        sync()

    t_bare, t_fast, t_grid = (median(t) for t in interleaved_medians([bare, fast, fast_grid], repeats))
    t_ref = median(interleaved_medians([lambda: reference_sampling_grid(maps, out)], max(3, repeats // 3))[0])
    return [
        row(f"bare grid_sample B={batch} {size}->{out} ({device})", t_bare, 1.0, None, None),
        row("sampling_grid + resample (x bare)", t_fast, t_fast / t_bare, "<= 1.5", t_fast / t_bare <= 1.5),
        row("sampling_grid alone (x bare)", t_grid, t_grid / t_bare, None, None),
        row("per-row reference grid (speed-up of sampling_grid)", t_ref, t_ref / t_grid, ">= 100",
            t_ref / t_grid >= 100,
            note="the reference and the batched grid share the O(B·H·W) row/column maxima; see the module doc"),
        row("reference grid + resample (speed-up of the pipeline)", t_ref + t_bare, (t_ref + t_bare) / t_fast,
            None, None),
    ]


if __name__ == "__main__":
    cli(run, __doc__, device=True)
