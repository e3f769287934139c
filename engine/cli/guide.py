"""`fieldmark guide RUN DATA --out DIR [--species NAME ...] [--all-parts] [--json]`

Writes the field-guide sheet (:mod:`engine.fieldmarks.guide`): one printable HTML page per species with its
typical photo and named parts, the parts on the bird that separate it from its nearest confusable species (the
background / habitat parts listed below them; ``--all-parts`` ranks all parts together), its test accuracy and
confusions; DIR/index.html lists the species.
"""

from __future__ import annotations

import argparse
import json

from engine.cli.common import add_run_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_run_command(sub, "guide", "write a printable field guide (HTML): per species, the parts that tell it "
                                      "from similar species",
                        "Open DIR/index.html in a browser; Print to PDF gives one page per species. Separating "
                        "parts need a run trained with --method parts.")
    p.add_argument("data", help="the data folder the run was trained on (its test photos are used)")
    p.add_argument("--out", required=True, help="folder for the pages and their images")
    p.add_argument("--species", nargs="+", metavar="NAME", help="only these species (default: all)")
    p.add_argument("--all-parts", action="store_true",
                   help="rank all parts together (default: the parts on the bird, then the background / habitat "
                        "parts below them)")
    p.add_argument("--json", action="store_true", help="print the pages written as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.cli.common import Bars, show_progress_or_message
    from engine.device import resolve_device
    from engine.events import drive
    from engine.fieldmarks.guide import write_guide

    with Bars() as bars:
        result = drive(write_guide(args.run, args.data, args.out, args.species, device=resolve_device(args.device),
                                   all_parts=args.all_parts),
                       lambda ev: show_progress_or_message(ev, bars))
    if args.json:
        print(json.dumps({"out": str(result.out), "index": str(result.index),
                          "pages": [str(p) for p in result.pages]}, indent=2))
    else:
        print(f"wrote {len(result.pages)} species pages to {result.out}; open {result.index}")
    return 0
