"""`fieldmark scan DATA [--verify] [--json]`: the data report."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scan", help="report a data folder's layout, classes, split and unusable files")
    p.add_argument("data")
    p.add_argument("--verify", action="store_true", help="decode every image fully (slower, finds more)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="test share when splitting (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.data import scan

    report = scan(args.data, val_fraction=args.val_fraction, seed=args.seed, verify=args.verify)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.describe(max_skipped=50))
    return 0
