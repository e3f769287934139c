"""`fieldmark train DATA --out RUN ...`"""

from __future__ import annotations

import argparse
import sys

from ..config import TrainConfig
from ..events import BatchEnd, EpochEnd, Message, Progress, Started
from .common import fmt_pct, tqdm_bar


def register(sub: argparse._SubParsersAction) -> None:
    h = TrainConfig.field_help()
    p = sub.add_parser("train", help="fine-tune a model on an image folder",
                       description="Train a part model (MC-Loss), a plain CE baseline, or TASN on DATA.")
    p.add_argument("data", help=h["data"])
    p.add_argument("--out", required=True, help=h["out"])
    p.add_argument("--model", default="mobilenet_v2", help=h["model"] + " (default mobilenet_v2)")
    p.add_argument("--method", default="mcloss", choices=["mcloss", "ce", "tasn"], help=h["method"])
    p.add_argument("--xi", type=int, default=3, help=h["xi"] + " (default 3)")
    p.add_argument("--mu", type=float, default=None, help=h["mu"])
    p.add_argument("--lam", type=float, default=10.0, help=h["lam"] + " (default 10)")
    p.add_argument("--epochs", type=int, default=10, help="default 10")
    p.add_argument("--pretrained", default=None, metavar="NAME|PATH", help=h["pretrained"])
    p.add_argument("--img-size", type=int, default=224, help="default 224")
    p.add_argument("--batch-size", type=int, default=32, help="default 32")
    p.add_argument("--lr-backbone", type=float, default=None, help=h["lr_backbone"])
    p.add_argument("--lr-head", type=float, default=None, help=h["lr_head"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help=h["device"])
    p.add_argument("--workers", type=int, default=0, help="data loader processes (default 0: in process)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete epoch")
    p.add_argument("--json-events", action="store_true", help="print every event as a JSON line on stdout")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(data=args.data, out=args.out, model=args.model, method=args.method, xi=args.xi,
                       mu=args.mu, lam=args.lam, epochs=args.epochs, pretrained=args.pretrained,
                       img_size=args.img_size, batch_size=args.batch_size, lr_backbone=args.lr_backbone,
                       lr_head=args.lr_head, seed=args.seed, device=args.device, workers=args.workers)


def run(args: argparse.Namespace) -> int:
    from ..events import to_json
    from ..train import train

    cfg = config_from_args(args)
    gen = train(cfg, resume=args.resume)
    bar = None
    try:
        while True:
            try:
                ev = next(gen)
            except StopIteration as done:
                result = done.value
                break
            if args.json_events:
                print(to_json(ev), flush=True)
                continue
            if isinstance(ev, Started):
                print(f"training {cfg.model} ({cfg.method}) on {ev.device}: {len(ev.classes)} classes, "
                      f"{ev.num_train} train / {ev.num_test} test images -> {ev.run_dir}", file=sys.stderr)
                if ev.start_epoch:
                    print(f"resuming after epoch {ev.start_epoch}", file=sys.stderr)
            elif isinstance(ev, Progress):
                pass
            elif isinstance(ev, Message):
                print(f"{ev.level}: {ev.text}", file=sys.stderr)
            elif isinstance(ev, BatchEnd):
                if bar is None:
                    bar = tqdm_bar(ev.steps, f"epoch {ev.epoch}")
                bar.update(1)
                bar.set_postfix(loss=f"{ev.loss:.3f}", img_s=f"{ev.images_per_s:.1f}")
            elif isinstance(ev, EpochEnd):
                if bar is not None:
                    bar.close()
                    bar = None
                parts = " ".join(f"{k}={v:.4f}" for k, v in ev.train.items())
                print(f"epoch {ev.epoch}/{ev.epochs}: {parts}  test_top1={fmt_pct(ev.test_top1)}  "
                      f"{ev.images_per_s:.1f} img/s  {ev.seconds:.0f}s  eta {ev.eta_s / 60:.1f} min",
                      file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
    print(f"done: {result.run_dir}  test top-1 {fmt_pct(result.metrics.get('test_top1'))}")
    return 0
