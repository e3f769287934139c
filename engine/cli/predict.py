"""`fieldmark predict RUN IMAGE_OR_FOLDER... [--top-k 5] [--json]`"""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli.common import add_run_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_run_command(sub, "predict", "classify images with a trained run")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="one JSON object with every prediction")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.data.scan import Skipped
    from engine.device import resolve_device
    from engine.errors import ConfigError
    from engine.maps.predict import expand_inputs, predict
    from engine.runs import load_run, read_part_names

    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k}: must be at least 1")
    loaded = load_run(args.run, resolve_device(args.device))
    names = read_part_names(loaded.run_dir)
    paths, skipped = expand_inputs(args.inputs)
    preds = []
    for item in predict(loaded, paths, args.top_k):
        if isinstance(item, Skipped):
            skipped.append(item)
            continue
        preds.append(item)
        if not args.json:
            best = ", ".join(f"{c} {100 * p:.1f}%" for c, p in item.top)
            print(f"{item.path}\t{best}")
    for s in skipped:
        print(f"skipped {s.path}: {s.reason}" + (f" ({s.detail})" if s.detail else ""), file=sys.stderr)
    if args.json:
        print(json.dumps({"run": str(loaded.run_dir), "predictions": [
            {"path": p.path, "top": [{"class": c, "probability": q} for c, q in p.top],
             **({} if p.part_contributions is None else {"parts": [
                 {"part": k + 1, "part_name": names.get(k), "contribution": v}
                 for k, v in enumerate(p.part_contributions)]})} for p in preds],
            "skipped": [{"path": s.path, "reason": s.reason} for s in skipped]}, indent=2))
    return 0 if preds else 2
