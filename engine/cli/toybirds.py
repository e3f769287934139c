"""`fieldmark toybirds OUT`: write the synthetic toy-birds data set (CUB layout, known field marks)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("toybirds", help="generate the toy-birds demo data set (CUB layout, known field marks)")
    p.add_argument("out", metavar="OUT", help="output folder (new, empty, or an earlier toy-birds output)")
    p.add_argument("--classes", type=int, default=8, help="number of classes (default 8)")
    p.add_argument("--per-class", type=int, default=60, help="images per class (default 60)")
    p.add_argument("--size", type=int, default=160, help="image side in pixels (default 160)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    p.add_argument("--test-fraction", type=float, default=0.5, help="test share per class (default 0.5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.toybirds.dataset import generate

    bar = tqdm(total=args.classes * max(args.per_class, 0), desc="toy birds", unit="img", file=sys.stderr,
               leave=False, dynamic_ncols=True, disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        tb = generate(args.out, classes=args.classes, per_class=args.per_class, size=args.size, seed=args.seed,
                      test_fraction=args.test_fraction, progress=progress)
    finally:
        bar.close()
    print(f"Wrote {tb.n_images} images of {len(tb.classes)} classes ({tb.size} px, seed {tb.seed}) to {tb.root}")
    print("Classes and their field marks:")
    for i, c in enumerate(tb.classes):
        marks = ", ".join(f"{m} ({tb.marks[m].part})" for m in c.marks)
        print(f"  {i + 1:3d} {c.name}: {marks}")
    print("Confusable pairs (differ in one mark):")
    for i, j, m in tb.pairs:
        print(f"  {i + 1:3d} / {j + 1:3d}: {m}")
    return 0
