"""`fieldmark demo [--out DIR]`: toy birds → MC-Loss from scratch → evaluation → overlays, in a few minutes."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build the built-in toy-birds demo (about 5 minutes on a laptop CPU)",
                       description="Draw toy birds with known field marks, train an MC-Loss model from scratch, "
                                   "evaluate the discovered parts against the truth and draw overlays. "
                                   "A rerun reuses what is complete.")
    p.add_argument("--out", default=None, help="demo folder (default ~/.cache/fieldmark/demo or $FIELDMARK_DEMO_DIR)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo's own)")
    p.add_argument("--json-events", action="store_true", help="print every event as a JSON line on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import engine.runs as runs
    from engine.demo import DemoSettings, build_demo, demo_paths
    from engine.events import EpochEnd, Message, Progress, Started, drive, to_json
    from engine.evaluation.scores import format_marks
    from engine.cli.common import Bars

    settings = DemoSettings() if args.epochs is None else replace(DemoSettings(), epochs=args.epochs)
    data, run_dir = demo_paths(args.out)
    gen = build_demo(args.out, settings=settings)
    bars = Bars()

    def show(ev: object) -> None:
        if args.json_events:
            print(to_json(ev), flush=True)
        elif isinstance(ev, Started) and ev.start_epoch < ev.epochs:
            print(f"training {settings.model} (MC-Loss, from scratch) on {ev.device}: {ev.num_train} train / "
                  f"{ev.num_test} test toy birds", file=sys.stderr)
            bars.open(ev.epochs - ev.start_epoch, "training", "epoch")
        elif isinstance(ev, EpochEnd) and bars.stage == "training" and bars.bar is not None:
            bars.bar.update(1)
            top1 = "-" if ev.test_top1 is None else f"{ev.test_top1:.3f}"  # an epoch without a test pass: -
            bars.bar.set_postfix(top1=top1, loss=f"{ev.train.get('loss', 0):.3f}")
        elif isinstance(ev, Progress) and not ev.stage.startswith("decoding"):
            bars.progress(ev.stage, ev.done, ev.total)
        elif isinstance(ev, Message):
            print(f"{ev.level}: {ev.text}", file=sys.stderr)

    with bars:
        result = drive(gen, show)
    if args.json_events:  # the result last, as one more JSON line (the child-process protocol of the app)
        print(to_json(result), flush=True)
        return 0
    m = result.metrics
    base = (m.get("baselines") or {}).get("random") or {}

    def f(v, pct=False):
        return "n/a" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.2f}")

    print(f"toy birds:   {data}")
    print(f"model:       {run_dir}")
    print(f"overlays:    {run_dir / runs.OVERLAYS}")
    print(f"evaluation:  {run_dir / runs.EVALUATION}")
    print(f"{'':22}{'model':>10}{'random':>10}")
    print(f"{'top1':22}{f(m.get('top1'), True):>10}{'':>10}")
    print(f"{'part_hit_rate':22}{f(m.get('part_hit_rate'), True):>10}{f(base.get('part_hit_rate'), True):>10}")
    print(f"{'mark_recall':22}{f(m.get('mark_recall'), True):>10}{f(base.get('mark_recall'), True):>10}")
    print(f"{'regions_per_class':22}{f(m.get('regions_per_class')):>10}{'':>10}")
    print(f"{'keypoint_error':22}{f(m.get('keypoint_error')):>10}{f(base.get('keypoint_error')):>10}")
    print(f"{'nmi / ari':22}{f(m.get('nmi')) + ' / ' + f(m.get('ari')):>10}")
    if m.get("marks"):
        print()
        print(format_marks(m["marks"]))
    print(f"next: fieldmark explain {run_dir} IMAGE --out maps   |   ./fm app {run_dir}")
    return 0
