"""`fieldmark evaluate RUN DATA [--json] [--baseline RUN] [--split test] [--maps own|gradcam|attention]`"""

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
    p.add_argument("--maps", default="own", choices=["own", "gradcam", "attention"],
                   help="the run's maps scored as its parts: own (its part maps), gradcam (its Grad-CAM of the true "
                        "class, one part) or attention (its attention blocks' spatial maps, one part per block)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    p.add_argument("--no-field-marks", action="store_true",
                   help="skip the parts-on-the-bird and field-mark agreement block of a parts run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.data import scan
    from engine.device import resolve_device
    from engine.evaluation.evaluate import evaluate
    from engine.evaluation.scores import format_marks, format_table
    from engine.runs import load_run
    from engine.cli.common import Bars, show_progress_or_message
    from engine.events import drive
    from engine.fieldmarks.names import part_label, read_part_names
    from engine.fieldmarks.quality import field_mark_quality, format_quality
    from engine.models.shared_parts import has_shared_parts

    device = resolve_device(args.device)
    loaded = load_run(args.run, device)
    base = load_run(args.baseline, device) if args.baseline else None
    report = scan(args.data)
    gen = evaluate(loaded, report, base, split=args.split, batch_size=args.batch_size, seed=args.seed,
                   maps=args.maps)
    with Bars() as bars:
        result = drive(gen, lambda ev: show_progress_or_message(ev, bars))
        marks, why = None, ""
        if args.no_field_marks:
            why = "--no-field-marks"
        elif args.maps != "own":
            why = f"--maps {args.maps}: field-mark agreement ranks the run's own shared parts"
        elif not has_shared_parts(loaded.model):
            why = f"a {loaded.method} run: field-mark agreement ranks the shared parts of a `parts` run"
        else:
            marks = drive(field_mark_quality(loaded, report, args.split, device),
                          lambda ev: show_progress_or_message(ev, bars))
    label = (lambda k: part_label(k, read_part_names(loaded.run_dir)))
    if args.json:
        doc = result.to_dict()
        doc["maps"] = {"option": args.maps, "source": result.info["source"]}
        for key in ("top1_per_scale", "squares"):  # an RA-CNN run: scales 1, 2, 3 and fused; its squares' spread
            if result.info.get(key):
                doc[key] = result.info[key]
        doc["field_marks"] = marks.to_dict() if marks is not None else {"note": why}
        if marks is not None:
            doc["field_marks"]["agreement"] = marks.main.to_dict(label)
        print(json.dumps(doc, indent=2))
    else:
        print(f"{loaded.run_dir} ({loaded.meta.get('method', '?')}, {loaded.meta['arch']['name']}) on {report.root}")
        print(format_table(result.to_dict(), result.info))
        if result.info.get("marks"):
            print("\nfield marks (a mark is recalled when a part of its class lies on it in at least half of the "
                  "test images):")
            print(format_marks(result.info["marks"]))
        print()
        print(format_quality(marks, label) if marks is not None else f"field-mark agreement: none ({why})")
    sys.stdout.flush()
    return 0
