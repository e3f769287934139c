"""Benchmark of `fieldmark evaluate`'s pass (engine.evaluation.evaluate, issue #24 item 4): the published protocol
one photo at a time (``protocol_batch=1``, the data set's order: the reference) against photos of one resized
shape in batches (each split read sorted by shape, the default), on a subset of cub-parts-dev.

The run: ``--run RUN`` (a trained ``parts`` run; its saved split is laid over the data first), else a freshly
initialised MobileNetV2 ``parts`` model (8 parts, fine features, 224 px). Both sides evaluate the same photos, the
train split (the regressions' fit set) and the test split, with the quick figures and the published protocol; the
two results are compared (they must agree up to float rounding). A third row times decoding the same photos alone,
to show whether decoding bounds the pass. The sides are interleaved (A B A B) and the medians compared, so a load
that comes and goes hits both; on a shared machine the absolute seconds mean little, the ratio more.

    .venv/bin/python -m benchmarks.bench_evaluate [--quick] [--run RUN] [--data DATA] [--every N]
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_evaluate.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import interleaved_medians, median, row

GOAL = 3.0
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cub-parts-dev"


def _subject(run_dir: str | None, report, device: str, scratch: Path):
    """(a LoadedRun that keeps the report's split as given, the report in the run's split, what it is)."""
    import torch

    from engine.data.transforms import Preprocessing
    from engine.models import create_model
    from engine.runs import LoadedRun, load_run
    from engine.runs.split import run_split

    if run_dir:
        loaded = load_run(run_dir, device)
        report = run_split(loaded.run_dir, report, loaded.meta.get("config")).report
        meta = {k: v for k, v in loaded.meta.items() if k != "config"}  # the split is laid already
        return LoadedRun(scratch, loaded.model, meta), report, f"the run {run_dir}"
    torch.manual_seed(0)
    model = create_model("mobilenet_v2", len(report.classes), head="parts", fine=True, parts=8).to(device).eval()
    meta = {"classes": list(report.classes), "preprocessing": Preprocessing.for_size(224).to_dict(),
            "method": "parts", "arch": model.arch}
    return LoadedRun(scratch, model, meta), report, "a fresh MobileNetV2 parts model (8 parts, 224 px)"


def _agree(a: dict, b: dict) -> list[str]:
    """The figures of ``a`` and ``b`` that differ by more than float rounding (relative 1e-4)."""
    import math

    out = []

    def walk(x, y, where):
        if isinstance(x, dict):
            for k in list(x) + [k for k in y if k not in x]:
                walk(x.get(k), y.get(k), f"{where}.{k}")
        elif isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)) and len(x) == len(y):
            for i, (p, q) in enumerate(zip(x, y)):
                walk(p, q, f"{where}[{i}]")
        elif isinstance(x, float) and isinstance(y, float):
            if not math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-6):
                out.append(f"{where} {x:.6g} vs {y:.6g}")
        elif x != y:
            out.append(f"{where} {x!r} vs {y!r}")

    walk(a, b, "")
    return out


def run(quick: bool = False, device: str = "cpu", run: str | None = None, data: str | None = None,
        every: int | None = None) -> list[dict]:
    """Time the one-at-a-time and the batched evaluation; rows of {name, seconds, ratio, goal, met}."""
    from engine.data import scan
    from engine.data.imageio import load_image
    from engine.evaluation.evaluate import evaluate
    from engine.events import drive

    root = Path(data) if data else DATA
    if not root.is_dir():
        return [row("evaluate: not run", None, None, None, None, note=f"no data folder {root}: pass --data")]
    every = every or (24 if quick else 6)
    with tempfile.TemporaryDirectory() as scratch:
        subject, report, what = _subject(run, scan(root), device, Path(scratch))
        sub = dataclasses.replace(report, samples=report.samples[::every])
        n = {s: len(sub.split(s)) for s in ("train", "test")}
        results = {}

        def side(name: str, protocol_batch: int | None):
            def go() -> None:
                results[name] = drive(evaluate(subject, sub, batch_size=32, protocol_batch=protocol_batch))
            return go

        def decode() -> None:
            for s in sub.split("train") + sub.split("test"):
                load_image(s.path)

        old, new, dec = interleaved_medians([side("old", 1), side("new", None), decode], repeats=1 if quick else 2,
                                            warmup=0)
    t_old, t_new, t_dec = median(old), median(new), median(dec)
    differ = _agree(results["old"].to_dict(), results["new"].to_dict())
    photos = f"{n['train']} train + {n['test']} test photos (1 in {every} of {root.name}), {what}"
    return [
        row("evaluate, published protocol one photo at a time (reference)", t_old, None, None, None, note=photos),
        row("evaluate, photos of one shape in batches of <= 32", t_new, t_old / t_new, f">= {GOAL:g}",
            t_old / t_new >= GOAL, note="figures agree with the reference" if not differ
            else "figures DIFFER: " + "; ".join(differ[:5])),
        row("decoding the same photos alone", t_dec, t_dec / t_new, None, None,
            note=f"{100 * t_dec / t_new:.0f} % of the batched evaluation"),
    ]


def main() -> None:
    import argparse

    from benchmarks.common import format_table, machine_line

    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="every 24th photo, one repeat")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--run", help="a trained parts run (default: a freshly initialised parts model)")
    ap.add_argument("--data", help=f"a CUB-layout folder with part keypoints (default {DATA})")
    ap.add_argument("--every", type=int, help="take every N-th photo of the data (default 6; --quick 24)")
    args = ap.parse_args()
    if args.every is not None and args.every < 1:
        ap.error(f"--every {args.every}: give a whole number >= 1 (1: every photo)")
    print(machine_line())
    t = time.perf_counter()
    print(format_table(run(args.quick, args.device, args.run, args.data, args.every)))
    print(f"{time.perf_counter() - t:.0f} s in all")


if __name__ == "__main__":
    main()
