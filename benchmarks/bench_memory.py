"""Peak memory of a training run against the image-cache setting, and against the memory plan.

A folder of generated 400×300 JPEG photos (3,000; 300 with ``--quick``), half train, half test, is trained on with
:func:`engine.training.loop.train` (mobilenet_v2, CE, 224 px, batch 32, CPU; ``--quick``: smallnet, 64 px, batch
16) in a fresh process per setting, stopped after a few steps (the decode of every image and the first steps are
where memory is taken; the test pass, without autograd, takes less than a step). Each process reports its resident
size once torch and the engine are imported, its peak (``ru_maxrss``) and the plan of
:mod:`engine.training.memory`. Settings:

* ``cache off`` (``cache_mb=0``): images decoded at each use;
* ``cache auto`` (the default): the cache sized from the memory this machine has free;
* ``8 GB laptop``: the same, with the plan told that 3.5 GB are available of 8 GB (what is left on a laptop
  running a desktop, a browser and the Fieldmark window): the step is checkpointed or runs in micro-batches as
  the plan says, and the cache takes what is left;
* ``parts on the 8 GB laptop``: the default shared-parts run (mobilenet_v2, 448 px, batch 16; ``--quick``:
  smallnet, 128 px) on the same laptop, a whole epoch of 3 steps (48 training photos) and its test pass (32
  photos). Its goals: the growth within the plan's budget, the whole batch of 16 in one pass (no micro-batches),
  and a peak of at most 5 GB.

Goal: each run's growth after the imports (peak − imported) stays within the plan's budget (ratio ≤ 1.0): the
plan never underestimates, so a run never pushes the machine into swap. The rows also show what the cache adds.
Run with the launcher's malloc settings (``run_all`` sets them), which keep freed memory in the process.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import cli, make_class_folders, row

REPO = Path(__file__).resolve().parent.parent
MB = 2 ** 20
LAPTOP = {"available": 3584, "total": 8192}  # MB
#: The parts row's run: (model, image size, batch) full and ``--quick``; photos per class (8 classes) and the share
#: held out for the test pass: 6 train and 4 test photos a class, 3 steps of 16 and a test pass of 32.
PARTS_RUN = {False: ("mobilenet_v2", 448, 16), True: ("smallnet", 128, 16)}
PARTS_PHOTOS, PARTS_TEST = 10, 0.4
PEAK_GOAL_MB = 5 * 1024


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def _peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def child(spec: dict) -> dict:
    """One training run as ``spec`` says (in this fresh process); its memory figures."""
    import torch  # noqa: F401

    import engine.training.memory as memory
    from engine.errors import Cancelled
    from engine.events import BatchEnd
    from engine.training.config import TrainConfig
    from engine.events import drive
    from engine.training.loop import train

    imported = _rss_mb()
    if spec.get("available"):
        memory.available_mb = lambda: spec["available"]
        memory.total_mb = lambda: spec["total"]
    plans = []
    real_plan = memory.plan
    memory.plan = lambda *a, **k: plans.append(real_plan(*a, **k)) or plans[-1]
    steps = {"n": 0}

    def count(ev):
        steps["n"] += isinstance(ev, BatchEnd)

    cfg = TrainConfig(data=spec["data"], out=spec["out"], model=spec["model"], method=spec.get("method", "ce"),
                      epochs=1, img_size=spec["img_size"], batch_size=spec["batch"], device="cpu",
                      cache_mb=spec["cache_mb"])
    limit = spec["steps"]  # None: the whole epoch and its test pass
    try:
        drive(train(cfg, should_stop=lambda: limit is not None and steps["n"] >= limit), count)
    except Cancelled:
        pass
    return {"imported_mb": imported, "peak_mb": _peak_mb(), "steps": steps["n"],
            "plan": plans[0].to_dict() if plans else None}


def measure(spec: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_memory", "--child", json.dumps(spec)], cwd=REPO,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode != 0:
        raise RuntimeError(f"training child failed ({out.returncode}): {out.stderr.strip()[-800:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False, count: int | None = None) -> list[dict]:
    """Peak RSS per cache setting and of the parts run; rows of {name, measured, ratio, goal, met}."""
    count = count or (300 if quick else 3000)
    model, size, batch, steps = ("smallnet", 64, 16, 4) if quick else ("mobilenet_v2", 224, 32, 6)
    classes = 10
    with tempfile.TemporaryDirectory(prefix="fm-bench-memory-") as tmp:
        data = make_class_folders(Path(tmp) / "data", classes, max(2, count // classes), 400, 300,
                                  test_fraction=0.5)
        base = {"data": str(data), "model": model, "img_size": size, "batch": batch, "steps": steps}
        settings = [("cache off", {"cache_mb": 0}), ("cache auto", {"cache_mb": None}),
                    ("8 GB laptop (3.5 GB free), cache auto", {"cache_mb": None, **LAPTOP})]
        results = []
        for i, (name, extra) in enumerate(settings):
            results.append((name, measure({**base, **extra, "out": str(Path(tmp) / f"run{i}")})))
        parts = measure(parts_spec(Path(tmp), quick))
    rows = []
    off_peak = results[0][1]["peak_mb"]
    for name, r in results:
        ratio, grown, plan_text = _against_plan(r)
        rows.append(row(f"{name}: peak RSS", None, ratio, "<= 1.0", ratio is not None and ratio <= 1.0,
                        measured=f"{r['peak_mb']:.0f} MB ({r['imported_mb']:.0f} imported, +{grown:.0f})",
                        note=f"{plan_text}; {r['steps']} steps; vs cache off: {r['peak_mb'] - off_peak:+.0f} MB"))
    rows[-1]["note"] += (f"; {count} images of 400x300 px, {model} CE at {size} px, batch {batch}; ratio = growth "
                         "after the imports / the plan's budget")
    return rows + parts_rows(parts, quick)


def parts_spec(tmp: Path, quick: bool) -> dict:
    """The parts row's run: the default shared-parts run on the simulated 8 GB laptop, a whole epoch."""
    model, size, batch = PARTS_RUN[quick]
    data = make_class_folders(tmp / "parts-data", 8, PARTS_PHOTOS, 400, 300, test_fraction=PARTS_TEST, seed=1)
    return {"data": str(data), "model": model, "method": "parts", "img_size": size, "batch": batch, "steps": None,
            "cache_mb": None, **LAPTOP, "out": str(tmp / "run-parts")}


def parts_rows(r: dict, quick: bool) -> list[dict]:
    """Two rows of the parts run: its growth against the plan's budget, its peak against 5 GB with the whole batch
    in one pass."""
    model, size, batch = PARTS_RUN[quick]
    ratio, grown, plan_text = _against_plan(r)
    p = r["plan"] or {}
    whole = p.get("micro_batch") == batch
    name = f"parts {model} {size} px, batch {batch}, 8 GB laptop (3.5 GB free)"
    return [row(f"{name}: peak RSS", None, ratio, "<= 1.0", ratio is not None and ratio <= 1.0,
                measured=f"{r['peak_mb']:.0f} MB ({r['imported_mb']:.0f} imported, +{grown:.0f})",
                note=f"{plan_text}; {r['steps']} steps (one epoch of {batch * 3} photos) and its test pass of "
                     f"{8 * PARTS_PHOTOS - batch * 3} photos"),
            row(f"{name}: peak RSS, whole batch", None, r["peak_mb"] / PEAK_GOAL_MB, "<= 1.0, batch whole",
                whole and r["peak_mb"] <= PEAK_GOAL_MB, measured=f"{r['peak_mb']:.0f} MB, micro-batch "
                f"{p.get('micro_batch')} of {batch}", note=f"ratio = peak / {PEAK_GOAL_MB} MB (5 GB); the batch in "
                "one pass: " + ("yes" if whole else "no"))]


def _against_plan(r: dict) -> tuple[float | None, float, str]:
    """(growth after the imports / the plan's budget, the growth in MB, the plan in words) of one run."""
    p = r["plan"]
    grown = r["peak_mb"] - r["imported_mb"]
    ratio = grown / p["budget_mb"] if p and p["budget_mb"] else None
    if not p:
        return ratio, grown, "no plan"
    how = (" checkpointed" if p.get("checkpoint") else "") + (f", micro-batch {p['micro_batch']} of {p['batch']}"
                                                               if p["micro_batch"] < p["batch"] else "")
    return ratio, grown, (f"plan: budget {p['budget_mb']} MB, step {p['step_mb']} MB (batch {p['batch']}{how}), "
                          f"state {p['state_mb']} MB, cache up to {p['cache_mb']} MB, test batch {p['eval_batch']}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        cli(run, __doc__, count=True)
