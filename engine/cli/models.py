"""`fieldmark models`: the registry."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models that can be trained")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.models import get_spec, list_models

    names = list_models()
    width = max(len(n) for n in names)
    for n in names:
        s = get_spec(n)
        weights = f" [pretrained: {s.default_pretrained}]" if s.default_pretrained else ""
        print(f"{n:<{width}}  {s.family:<7}  {s.description}{weights}")
    return 0
