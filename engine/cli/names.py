"""`fieldmark names RUN [--set K=NAME ...] [--clear K ...] [--propose DATA [--accept]] [--json]`

Lists, sets and clears the names of a run's parts (kept in the run folder's part_names.json); ``--propose`` reads a
CUB-layout folder and proposes, for each part of a ``parts`` run, the keypoint nearest it most often over the
training images (none for a background / habitat part, with the reason: its peak is seldom on the bird);
``--accept`` saves the proposals for the parts that have no name yet.
"""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli.common import add_run_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_run_command(sub, "names", "list, set or propose the names of a run's parts (crown, wing bars, ...)",
                        "Names are saved in the run folder and used by export, predict --json, explain and guide. "
                        "Part numbers K start at 1.")
    p.add_argument("--set", dest="set_", action="append", default=[], metavar="K=NAME",
                   help="name part K (repeatable), e.g. --set 3='wing bars'")
    p.add_argument("--clear", action="append", default=[], type=int, metavar="K", help="remove part K's name")
    p.add_argument("--propose", metavar="DATA",
                   help="CUB-layout folder: propose each part's nearest keypoint (none for a background part)")
    p.add_argument("--accept", action="store_true", help="with --propose: save the proposals for unnamed parts")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _parse_set(items: list[str]) -> dict[int, str]:
    from engine.errors import ConfigError

    out = {}
    for item in items:
        number, eq, name = item.partition("=")
        try:
            k = int(number)
        except ValueError:
            k = 0
        if not eq or k < 1:
            raise ConfigError(f"--set {item!r}: write K=NAME with K the part number from 1, e.g. --set 3=crown")
        out[k - 1] = name
    return out


def run(args: argparse.Namespace) -> int:
    from engine.cli.common import Bars, show_progress_or_message
    from engine.device import resolve_device
    from engine.errors import ConfigError
    from engine.events import drive
    from engine.fieldmarks.names import (accepted_names, part_label, propose_names, read_part_names,
                                         run_part_count, write_part_names)

    if args.accept and not args.propose:
        raise ConfigError("--accept saves the proposals of --propose DATA: give --propose DATA too")
    count = run_part_count(args.run)
    names = read_part_names(args.run)
    changed = dict(names)
    changed.update(_parse_set(args.set_))
    for k in args.clear:
        if not 1 <= k <= count:
            raise ConfigError(f"--clear {k}: the run has {count} parts (1..{count})")
        changed.pop(k - 1, None)
    proposals, notes = [], []
    if args.propose:
        with Bars() as bars:
            proposals = drive(propose_names(args.run, args.propose, device=resolve_device(args.device)),
                              lambda ev: show_progress_or_message(ev, bars))
        if args.accept:
            changed, notes = accepted_names(proposals, changed)
    if changed != names:
        write_part_names(args.run, changed)
        names = read_part_names(args.run)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps({"run": args.run, "parts": [{"part": k + 1, "part_name": names.get(k)} for k in range(count)],
                          "proposals": [{"part": p.part + 1, "keypoint": p.keypoint or None, "share": p.share,
                                         "count": p.count, "images": p.images, "on_bird": p.on_bird,
                                         "reason": p.reason or None} for p in proposals]}, indent=2))
        return 0
    for k in range(count):
        print(f"{k + 1}\t{part_label(k, names)}")
    for p in proposals:
        seen = (f"{p.keypoint} ({p.count} of {p.images} images, {100 * p.share:.0f}%)" if p.keypoint
                else f"none: {p.reason}")
        print(f"proposal: part {p.part + 1} -> {seen}")
    return 0
