"""The attention family side by side (issue 25): every row trained and evaluated at the same size and epochs, one
table in docs/results/attention-family.csv.

    .venv/bin/python tools/family.py DATA --out DIR [--seed 0] [--split test] [--csv FILE] [--rows ce ce_gain ...] \
        -- COMMON_TRAIN_ARGS

Each row trains ``fieldmark train DATA --out DIR/<row> --seed SEED COMMON_TRAIN_ARGS ROW_ARGS`` unless DIR/<row>
already holds a finished run, then runs ``fieldmark evaluate DIR/<row> DATA --split SPLIT --maps MAPS --json``
(tools/seeds.py does both, and keeps the evaluation in the run folder). Training minutes are the sum of the epochs'
``seconds`` in the run's metrics.jsonl (the per-epoch test pass included).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds import split_train_args, train_and_evaluate  # noqa: E402  (tools/ is not a package)

#: (folder, row label, its train arguments, what evaluate reads as parts (--maps), what that is)
ROWS = (
    ("ce", "CE", ["--method", "ce"], "gradcam", "Grad-CAM of the true class (1 part)"),
    ("ce_gain", "CE + GAIN", ["--method", "ce", "--gain"], "gradcam", "Grad-CAM of the true class (1 part)"),
    ("mcloss", "MC-Loss", ["--method", "mcloss"], "own", "the true class's ξ = 3 channels (3 parts)"),
    ("mcloss_gain", "MC-Loss + GAIN", ["--method", "mcloss", "--gain"], "own",
     "the true class's ξ = 3 channels (3 parts)"),
    # the paper's sizes, each scale at 224 px (chosen on the validation split; the later --img-size wins)
    ("racnn", "RA-CNN (`--img-size 448 --scale-size 224`: each scale at 224 px)",
     ["--method", "racnn", "--model", "racnn_mobilenet_v2", "--img-size", "448", "--scale-size", "224"], "own",
     "square centres of scales 2 and 3 (2 parts)"),
    ("ce_cbam", "CBAM", ["--method", "ce", "--attention", "cbam"], "attention", "the blocks' spatial maps"),
    ("ce_residual", "residual attention", ["--method", "ce", "--attention", "residual"], "attention",
     "the blocks' masks"),
    ("tasn", "TASN", ["--method", "tasn", "--model", "tasn_mobilenet_v2"], "own", "structure attention map (1 part)"),
)
HEADER = ["row", "read as parts", "top-1 %", "keypoint error", "peaks in box %",
          "box share above half max %", "training min"]


def _f(value, digits: int, scale: float = 1.0) -> str:
    return "–" if value is None else f"{scale * float(value):.{digits}f}"


def training_minutes(run: Path) -> float | None:
    """The sum of the epochs' seconds in ``run/metrics.jsonl``, in minutes (None when there is none)."""
    try:
        lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    rows = [json.loads(line) for line in lines if line.strip()]
    return sum(float(r.get("seconds", 0.0)) for r in rows) / 60 if rows else None


def table_row(label: str, what: str, doc: dict, minutes: float | None) -> list[str]:
    """One CSV row from an evaluation JSON (``fieldmark evaluate --json``)."""
    own = (doc.get("protocol") or {}).get("own") or {}
    return [label, what, _f(doc.get("top1"), 1, 100), _f(own.get("keypoint_error"), 2),
            _f(doc.get("peaks_in_box"), 1, 100), _f(doc.get("box_share_above_half"), 1, 100), _f(minutes, 1)]


def random_row(doc: dict) -> list[str]:
    """The random-points row, from the first (one-part) row's evaluation: its random baseline."""
    proto = (doc.get("protocol") or {}).get("random") or {}
    return ["random points", "as many random points as the first row reads", "–",
            _f(proto.get("keypoint_error"), 2), "(drawn in the box)",
            "–", "–"]


def main(argv: list[str] | None = None) -> int:
    argv, common = split_train_args(argv)
    names = [r[0] for r in ROWS]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("--out", required=True, help="folder of the runs, one sub-folder per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--rows", nargs="+", default=names, choices=names, metavar="ROW",
                   help=f"the rows to train and evaluate, of {', '.join(names)} (default all)")
    p.add_argument("--csv", help="write the table to this CSV file (docs/results/attention-family.csv)")
    args = p.parse_args(argv)
    if not Path(args.data).is_dir():
        p.error(f"data folder {args.data!r} does not exist: give the CUB-layout folder to train on")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = [HEADER]
    for folder, label, row_args, maps, what in (r for r in ROWS if r[0] in args.rows):
        doc = train_and_evaluate(args.data, out / folder, args.seed, args.split, None, [*common, *row_args], maps)
        table.append(table_row(label, what, doc, training_minutes(out / folder)))
        if len(table) == 2:
            first = doc
        if doc.get("top1_per_scale"):
            scales = ", ".join(f"{k} {100 * v:.1f} %" for k, v in doc["top1_per_scale"].items())
            print(f"{label}: top-1 per scale: {scales}", file=sys.stderr)
    if len(table) > 1:
        table.append(random_row(first))
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh, lineterminator="\n").writerows(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
