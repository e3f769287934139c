"""`fieldmark scan DATA [--verify] [--json]`: the data report."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scan", help="report a data folder's layout, classes, split and unusable files")
    p.add_argument("data")
    p.add_argument("--verify", action="store_true", help="decode every image fully (slower, finds more)")
    p.add_argument("--test-fraction", "--val-fraction", dest="test_fraction", type=float, default=0.2,
                   help="share of each class held out for testing when the folder has no split (default 0.2; "
                        "--val-fraction is the old name)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.data import scan

    report = scan(args.data, test_fraction=args.test_fraction, seed=args.seed, verify=args.verify)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.describe(max_skipped=50))
    return 0
