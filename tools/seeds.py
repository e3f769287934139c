"""Train and evaluate one setting over several seeds and print its quality row: mean and spread (min..max) of each
figure (issue 23: every part-quality row is the mean and spread of seeds 0, 1 and 2).

    .venv/bin/python tools/seeds.py DATA --out DIR [--seeds 0 1 2] [--split val] [--baseline CE_RUN|CE_RUNS] \
        [--maps own|gradcam|attention] [--json FILE] -- TRAIN_ARGS...

Each seed trains ``fieldmark train DATA --out DIR/s<seed> --seed <seed> TRAIN_ARGS`` unless DIR/s<seed> already
holds a finished run (then it is only evaluated), then ``fieldmark evaluate ... --split SPLIT --maps MAPS --json`` (its
JSON is kept as DIR/s<seed>/evaluate-<split>.json, evaluate-<split>-<maps>.json for other maps than ``own``, reused
when newer than the weights). Choose settings with ``--split
val`` (runs trained with ``--validation-fraction``); report ``--split test`` once, for the chosen settings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: (label, how to read it from evaluate's JSON, digits)
COLUMNS = [
    ("keypoint error", lambda d: d["protocol"]["own"]["keypoint_error"], 2),
    ("NMI", lambda d: d["protocol"]["own"]["nmi"], 1),
    ("ARI", lambda d: d["protocol"]["own"]["ari"], 1),
    ("top-1 %", lambda d: 100 * d["top1"], 1),
    ("peaks in box %", lambda d: _pct(d.get("peaks_in_box")), 1),
    ("box share above half max %", lambda d: _pct(d.get("box_share_above_half")), 1),
    ("Grad-CAM keypoint error", lambda d: d["protocol"]["gradcam"]["keypoint_error"], 2),
    ("random points keypoint error", lambda d: d["protocol"]["random"]["keypoint_error"], 2),
    ("agreement %", lambda d: _pct(d["field_marks"]["agreement"].get("agreement")), 0),
    ("random part %", lambda d: _pct(d["field_marks"]["agreement"].get("random_agreement")), 0),
    ("last part %", lambda d: _pct(d["field_marks"]["agreement"].get("last_agreement")), 0),
    ("D/Dmax", lambda d: d["field_marks"]["agreement"].get("d_ratio"), 2),
    ("parts on bird", lambda d: sum(p["on_bird"] for p in d["field_marks"]["parts"]), 1),
    ("bird-part peaks in box %", lambda d: _pct(d["field_marks"].get("peaks_of_bird_parts_in_box")), 1),
    ("min centroid-in-box % of a bird part", lambda d: _pct(min(
        (p["on_split"]["centroid_share"] for p in d["field_marks"]["parts"]
         if p["on_bird"] and p["on_split"]["centroid_share"] is not None), default=None)), 1),
]


def _pct(v):
    return None if v is None else 100 * v


def fieldmark(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


#: The runs train and evaluate with ./fm's malloc thresholds (what a user's `./fm train` gets), unless set already.
ENV = {"MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000"}


def child_env() -> dict[str, str]:
    return {**ENV, **os.environ}


def finished(run: Path) -> bool:
    try:
        meta = json.loads((run / "model.json").read_text())
        return int(meta.get("metrics", {}).get("epoch", -1)) >= int(meta["config"]["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def evaluation_file(run: Path, split: str, maps: str = "own") -> Path:
    """Where the run's evaluation of ``split`` with ``maps`` is kept (the default maps keep the plain name)."""
    return run / (f"evaluate-{split}.json" if maps == "own" else f"evaluate-{split}-{maps}.json")


def train_and_evaluate(data: str, run: Path, seed: int, split: str, baseline: str | None,
                       train_args: list[str], maps: str = "own") -> dict:
    if not finished(run):
        cmd = fieldmark("train", data, "--out", str(run), "--seed", str(seed), *train_args)
        if (run / "resume.pt").is_file():
            cmd.append("--resume")
        print("$ " + " ".join(cmd[2:]), file=sys.stderr, flush=True)
        t0 = time.time()
        subprocess.run(cmd, check=True, cwd=ROOT, env=child_env())
        print(f"trained in {(time.time() - t0) / 60:.1f} min", file=sys.stderr)
    out = evaluation_file(run, split, maps)
    if not out.is_file() or out.stat().st_mtime < (run / "model.safetensors").stat().st_mtime:
        cmd = fieldmark("evaluate", str(run), data, "--split", split, "--maps", maps, "--json",
                        *(["--baseline", baseline] if baseline else []))
        print("$ " + " ".join(cmd[2:]), file=sys.stderr, flush=True)
        doc = subprocess.run(cmd, check=True, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True).stdout
        out.write_text(doc)
    return json.loads(out.read_text())


def seed_baseline(baseline: str | None, seed: int) -> str | None:
    """The CE run to compare seed ``seed`` with: ``baseline/s<seed>`` when that is a run, else ``baseline``."""
    if baseline and (Path(baseline) / f"s{seed}" / "model.json").is_file():
        return str(Path(baseline) / f"s{seed}")
    return baseline


def row(docs: list[dict]) -> list[tuple[str, float | None, float | None, float | None, int]]:
    """(label, mean, min, max, digits) per column over the seeds' evaluations."""
    out = []
    for label, get, digits in COLUMNS:
        vals = []
        for d in docs:
            try:
                v = get(d)
            except (KeyError, TypeError):
                v = None
            if v is not None:
                vals.append(float(v))
        out.append((label, float(np.mean(vals)) if vals else None, min(vals, default=None), max(vals, default=None),
                    digits))
    return out


def split_train_args(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """(the tool's own arguments, the training arguments after ``--``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def main(argv: list[str] | None = None) -> int:
    argv, train_args = split_train_args(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("--out", required=True, help="folder of the runs, one s<seed> sub-folder each")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--baseline", help="a CE run for the Grad-CAM baseline of evaluate, or a folder of CE runs "
                                      "s<seed> (seed N is compared with the CE run of seed N)")
    p.add_argument("--maps", default="own", choices=["own", "gradcam", "attention"],
                   help="the maps evaluate scores as the parts (fieldmark evaluate --maps)")
    p.add_argument("--json", help="write the per-seed figures and the row to this file")
    args = p.parse_args(argv)
    if not Path(args.data).is_dir():
        p.error(f"data folder {args.data!r} does not exist: give the CUB-layout folder to train on")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    docs = [train_and_evaluate(args.data, out / f"s{s}", s, args.split, seed_baseline(args.baseline, s), train_args,
                               args.maps) for s in args.seeds]
    table = row(docs)
    print(f"{args.out}: {len(docs)} seeds ({', '.join(map(str, args.seeds))}), {args.split} split; "
          f"mean (min..max)")
    for (label, mean, lo, hi, digits), in zip(table):
        cell = "-" if mean is None else f"{mean:.{digits}f} ({lo:.{digits}f}..{hi:.{digits}f})"
        print(f"  {label:<38} {cell}")
    rankings = sorted({k for d in docs for k in (d.get("field_marks", {}).get("by_ranking") or {})})
    if rankings:
        print("  field-mark agreement % by ranking (\", all\": every part ranked together; else the parts on the bird "
              "first):")
        for k in rankings:
            vals = [100 * d["field_marks"]["by_ranking"][k]["agreement"] for d in docs
                    if d["field_marks"]["by_ranking"].get(k, {}).get("agreement") is not None]
            pairs = [d["field_marks"]["by_ranking"][k].get("pairs_scored", 0) for d in docs
                     if k in d["field_marks"]["by_ranking"]]
            cell = f"{np.mean(vals):.0f} ({min(vals):.0f}..{max(vals):.0f})" if vals else "-"
            print(f"    {k:<36} {cell}   pairs per seed {'/'.join(map(str, pairs))}")
    if args.json:
        Path(args.json).write_text(json.dumps({"split": args.split, "seeds": args.seeds, "train_args": train_args,
                                               "row": [dict(zip(("figure", "mean", "min", "max"), r[:4]))
                                                       for r in table]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
