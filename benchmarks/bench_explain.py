"""Benchmark of the explanation maps (engine.maps.explain): explaining one image against one plain forward pass.

MobileNetV2 part model (random weights, 16 classes, ξ = 3), one 500×375 RGB photo (CUB's typical size), 224 px
input. The baseline is ``model(x)`` on the already prepared (resized, normalised) tensor under ``no_grad``, the
floor of any explanation. Each other row is a full :func:`engine.maps.explain.explain` call from the RGB array: resize,
normalise, the forward pass, the maps of the predicted class, their upsampling to 500×375 and normalisation.
Goal (the issue's): forward + all maps of one class at most 2× the plain forward, for the ξ part channels and for
every map that needs no input gradient computed in one pass; guided Grad-CAM needs a full backward pass (about
2× a forward by itself) and is informative. Timings interleave the cases (A B C ...) and take medians, so a load
that comes and goes hits every case alike. ``python benchmarks/bench_explain.py`` prints the table; ``run()``
returns the rows (name, seconds, ratio, goal, met).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_explain.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from benchmarks.common import cli, interleaved_medians, median, row

GOAL = 2.0


def run(quick: bool = False, device: str = "cpu", size: int = 224) -> list[dict]:
    """Time one explanation against one forward pass; rows of {name, seconds, ratio, goal, met}."""
    from engine.data.transforms import Preprocessing
    from engine.maps.explain import explain, prepare
    from engine.models import create_model

    torch.manual_seed(0)
    model = create_model("mobilenet_v2", 16, 3).to(device).eval()
    pp = Preprocessing.for_size(size)
    img = np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8)
    x = prepare([img], pp, device)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def forward() -> None:
        with torch.no_grad():
            model(x)
        sync()

    def maps(methods) -> callable:
        def go() -> None:
            explain(model, [img], methods, None, pp)
            sync()
        return go

    cases = [
        ("plain forward (prepared tensor, no_grad)", forward, None),
        ("explain, the 3 part channels of the class", maps("channels"), f"<= {GOAL:g}"),
        ("explain, channels + CCMP + CAM + Grad-CAM in one pass", maps(["channels", "ccmp", "cam", "gradcam"]),
         f"<= {GOAL:g}"),
        ("explain, Grad-CAM", maps("gradcam"), f"<= {GOAL:g}"),
        ("explain, guided Grad-CAM (full backward)", maps("guided-gradcam"), None),
    ]
    times = interleaved_medians([c[1] for c in cases], repeats=5 if quick else 15, warmup=2)
    base = median(times[0])
    rows = [row(f"{cases[0][0]}, mobilenet_v2 {size} px", base, 1.0, None, None)]
    for (name, _, goal), t in zip(cases[1:], times[1:]):
        ratio = median(t) / base
        rows.append(row(f"{name} (x forward)", median(t), ratio, goal, None if goal is None else ratio <= GOAL))
    rows[1]["note"] = ("explain rows start from the 500x375 RGB array (resize, normalise, forward, maps, upsampling "
                       "to the photo's size); the forward row starts from the prepared tensor")
    return rows


if __name__ == "__main__":
    cli(run, __doc__)
