"""`fieldmark export RUN DATA --out DIR [--split test|train|all] [--crop-size N] [--min-score S] [--append] [--json]`"""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli.common import add_run_command


def register(sub: argparse._SubParsersAction) -> None:
    from engine.maps.explain import METHODS

    p = add_run_command(sub, "export", "cut the discovered parts out as a data set (crops, parts.csv, COCO json)",
                        "Write DIR/<class>/part_<k>/<image>.jpg crops of every image's parts (a parts run: "
                        "DIR/part_<k>/<class>/; a named part: part_<k>_<name>), DIR/parts.csv and "
                        "DIR/parts_coco.json. Run it again to resume.")
    p.add_argument("data", help="image folder (class folders, train/test folders, CUB_200_2011 or a flat folder)")
    p.add_argument("--out", required=True, help="export folder (new, empty, or an export to resume)")
    p.add_argument("--split", default="test", choices=["test", "train", "all"], help="default test")
    p.add_argument("--crop-size", type=int, default=128, help="side of the square crops in pixels (default 128; "
                                                               "0 keeps their own size)")
    p.add_argument("--min-score", type=float, default=0.0,
                   help="skip parts whose peak is below this share of the image's strongest part (0..1)")
    p.add_argument("--append", action="store_true", help="write into a non-empty folder or beside another export")
    p.add_argument("--method", choices=METHODS, help="map method giving the parts (default: racnn for an RA-CNN "
                                                     "run, its squares of scales 2 and 3; else channels)")
    p.add_argument("--box", default="region", choices=["region", "fixed"],
                   help="region: the area above half the peak (default); fixed: 30%% of the bird box")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default 0: in process)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object (with each part's "
                                                       "part_name and folder)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.data import scan
    from engine.device import resolve_device
    from engine.events import drive
    from engine.export.crops import export_parts
    from engine.runs import load_run
    from engine.cli.common import Bars, show_progress_or_message

    loaded = load_run(args.run, resolve_device(args.device))
    report = scan(args.data)
    method = args.method or ("racnn" if hasattr(loaded.model, "zoom_squares") else "channels")
    gen = export_parts(loaded, report, args.out, split=args.split, crop_size=args.crop_size,
                       min_score=args.min_score, append=args.append, method=method, box=args.box,
                       batch_size=args.batch_size, workers=args.workers)
    bars = Bars()

    with bars:
        summary = drive(gen, lambda ev: show_progress_or_message(ev, bars))
    for f in report.skipped + summary.failed:  # what the scan refused, then what failed to decode
        print(f"skipped {f.path}: {f.reason}", file=sys.stderr)
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps({**summary.to_dict(), "skipped": [{"path": f.path, "reason": f.reason}
                                                           for f in report.skipped + summary.failed]}, indent=2))
        return 0
    print(f"exported {summary.exported} images ({summary.crops} crops) to {summary.out}"
          + (f"; {summary.resumed} were already done" if summary.resumed else ""))
    print(f"{summary.total_images} images in {summary.csv} and {summary.coco}")
    return 0
