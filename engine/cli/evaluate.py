"""`fieldmark evaluate RUN DATA [--json] [--baseline RUN] [--split test]`"""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli.common import add_run_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_run_command(sub, "evaluate", "score a run's discovered parts against part keypoints (CUB layout)",
                        "top-1, part hit rate, keypoint regression error, NMI/ARI, regions per class and (toy "
                        "birds) mark recall, with a random and an optional Grad-CAM baseline.")
    p.add_argument("data", help="CUB-layout folder with parts/part_locs.txt (CUB-200-2011 or toy birds)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--baseline", metavar="RUN", help="a CE run whose Grad-CAM peak is the second baseline")
    p.add_argument("--split", default="test", choices=["test", "val", "train"],
                   help="split to score (default test; val: the run's validation photos, --validation-fraction, "
                        "with the published protocol fitted on the rest of the training split)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.data import scan
    from engine.device import resolve_device
    from engine.evaluation.evaluate import evaluate
    from engine.evaluation.scores import format_marks, format_table
    from engine.runs import load_run
    from engine.cli.common import Bars, show_progress_or_message
    from engine.events import drive

    device = resolve_device(args.device)
    loaded = load_run(args.run, device)
    base = load_run(args.baseline, device) if args.baseline else None
    report = scan(args.data)
    gen = evaluate(loaded, report, base, split=args.split, batch_size=args.batch_size, seed=args.seed)
    with Bars() as bars:
        result = drive(gen, lambda ev: show_progress_or_message(ev, bars))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"{loaded.run_dir} ({loaded.meta.get('method', '?')}, {loaded.meta['arch']['name']}) on {report.root}")
        print(format_table(result.to_dict(), result.info))
        if result.info.get("marks"):
            print("\nfield marks (a mark is recalled when a part of its class lies on it in at least half of the "
                  "test images):")
            print(format_marks(result.info["marks"]))
    sys.stdout.flush()
    return 0
