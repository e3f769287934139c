"""`fieldmark train DATA --out RUN ... [--nproc N]`

Multi-process (DistributedDataParallel) training: ``--nproc N`` starts N local processes through torch's elastic
launcher (see :mod:`engine.training.distributed`); ``torchrun --nproc-per-node N -m engine train ...`` does the same and
spans machines. ``--batch-size`` is the global batch, shared by the processes. Only rank 0 prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.training.config import ATTENTIONS, METHODS, PADDINGS, TrainConfig
from engine.events import BatchEnd, EpochEnd, Message, Started
from engine.cli.common import Bars, fmt_pct


def register(sub: argparse._SubParsersAction) -> None:
    h = TrainConfig.field_help()
    p = sub.add_parser("train", help="fine-tune a model on an image folder",
                       description="Train a part model (MC-Loss), a plain CE baseline, TASN or RA-CNN on DATA.")
    p.add_argument("data", help=h["data"])
    p.add_argument("--out", required=True, help=h["out"])
    p.add_argument("--model", default="mobilenet_v2", help=h["model"] + " (default mobilenet_v2)")
    p.add_argument("--method", default="mcloss", choices=METHODS, help=h["method"])
    p.add_argument("--xi", type=int, default=3, help=h["xi"] + " (default 3)")
    p.add_argument("--parts", type=int, default=8, metavar="K", help=h["parts"] + " (default 8)")
    p.add_argument("--fine", action=argparse.BooleanOptionalAction, default=None, help=h["fine"])
    p.add_argument("--padding", default=None, choices=PADDINGS, help=h["padding"])
    p.add_argument("--part-loss", action="append", default=[], metavar="NAME=WEIGHT",
                   help="a shared-parts loss weight (ce 2, conc 1000, orth 1, equiv 1, pres 1; PDiscoFormer's tv, "
                        "border, entropy 0); repeat for several")
    p.add_argument("--equiv-backprop", action=argparse.BooleanOptionalAction, default=None, help=h["equiv_backprop"])
    p.add_argument("--zoom", type=float, default=None, metavar="MARGIN", help=h["zoom"])
    p.add_argument("--gain", action=argparse.BooleanOptionalAction, default=None, help=h["gain"])
    p.add_argument("--gain-alpha", type=float, default=None, metavar="A", help=h["gain_alpha"])
    p.add_argument("--gain-sigma", type=float, default=None, metavar="S", help=h["gain_sigma"])
    p.add_argument("--gain-omega", type=float, default=None, metavar="W", help=h["gain_omega"])
    p.add_argument("--attention", default=None, choices=ATTENTIONS, help=h["attention"])
    p.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=None, help=h["freeze_bn"])
    p.add_argument("--freeze-stages", type=int, default=None, metavar="N", help=h["freeze_stages"])
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help=h["compile"])
    p.add_argument("--size-schedule", default=None, metavar="SHARE:SIZE[,...]", help=h["size_schedule"])
    p.add_argument("--test-every", type=int, default=None, metavar="N", help=h["test_every"])
    p.add_argument("--apn-warmup", type=int, default=None, metavar="N",
                   help="racnn: criterion calls that teach the APNs the highest-response squares before the "
                        "alternation (default 76)")
    p.add_argument("--rank-margin", type=float, default=None, metavar="M",
                   help="racnn: the ranking loss's margin (default 0.05, the paper's)")
    p.add_argument("--apn-lr", type=float, default=None, metavar="LR",
                   help="racnn: the APNs' learning rate (default 0.001; at the head's 0.01 they ran to the edge of "
                        "the photo, docs/METHODS.md#racnn)")
    p.add_argument("--apn-gradient", default=None, choices=("boxcar", "thirds"),
                   help="racnn: how the ranking loss moves the squares: by the authors' rule, towards the thirds "
                        "of the crop where the loss's gradient has more energy (thirds, the default), or through the "
                        "boxcar mask's gradient (boxcar; docs/METHODS.md#racnn)")
    p.add_argument("--apn-half", type=float, default=None, metavar="SHARE",
                   help="racnn: the half side of the APNs' first squares (the highest-response squares they learn "
                        "before the alternation), a share of the scale's side between 0.167 and 0.5 (default 0.4, "
                        "chosen on validation photos; the paper's 0.25, half the side, left scale 3 far under "
                        "scale 1; docs/METHODS.md#racnn)")
    p.add_argument("--scale-size", type=int, default=None, metavar="PX",
                   help="racnn: the side each scale's network sees; the photo is read at --img-size and each "
                        "square is cut from it (the paper's 448 -> 224; default: --img-size)")
    p.add_argument("--rotate", type=float, default=None, metavar="DEG", help=h["rotate"])
    p.add_argument("--mu", type=float, default=None, help=h["mu"])
    p.add_argument("--lam", type=float, default=10.0, help=h["lam"] + " (default 10)")
    p.add_argument("--mc-conc", type=float, default=None, metavar="WEIGHT", help=h["mc_conc"])
    p.add_argument("--epochs", type=int, default=None, help="default 10; parts 14")
    p.add_argument("--pretrained", default=None, metavar="NAME|PATH", help=h["pretrained"])
    p.add_argument("--img-size", type=int, default=None, help="default 224; parts 448 (docs/RESULTS.md#parts-runs)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per step, over all processes (default 32; parts 16); each of N processes takes 1/N")
    p.add_argument("--lr-backbone", type=float, default=None, help=h["lr_backbone"])
    p.add_argument("--lr-head", type=float, default=None, help=h["lr_head"])
    p.add_argument("--validation-fraction", type=float, default=None, metavar="F",
                   help=h["validation_fraction"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help=h["device"])
    p.add_argument("--workers", type=int, default=0, help="data loader processes (default 0: in process)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last complete epoch, on the split saved with it; settings "
                        "without a flag here come from the run; another --epochs re-plans the rest of the learning-"
                        "rate schedule, which never rises")
    p.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: go on although training photos were removed or changed since the run saved "
                        "its split (recorded in the run's model.json); photos added since are left out either way")
    p.add_argument("--json-events", action="store_true", help="print every event as a JSON line on stdout")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train with N processes on this machine (DistributedDataParallel; one GPU each when there "
                        "are GPUs, else CPU with gloo). Several machines: torchrun --nproc-per-node N -m engine train")
    p.set_defaults(func=run)


#: Options passed on unchanged to the worker processes of --nproc (dest, flag).
FORWARDED = [("out", "--out"), ("model", "--model"), ("method", "--method"), ("xi", "--xi"), ("mu", "--mu"),
             ("lam", "--lam"), ("epochs", "--epochs"), ("pretrained", "--pretrained"), ("img_size", "--img-size"),
             ("batch_size", "--batch-size"), ("lr_backbone", "--lr-backbone"), ("lr_head", "--lr-head"),
             ("seed", "--seed"), ("device", "--device"), ("workers", "--workers"), ("resume", "--resume"),
             ("allow_data_change", "--allow-data-change"), ("json_events", "--json-events"), ("parts", "--parts"),
             ("padding", "--padding"), ("mc_conc", "--mc-conc"), ("rotate", "--rotate"),
             ("validation_fraction", "--validation-fraction"), ("zoom", "--zoom"), ("gain_alpha", "--gain-alpha"),
             ("gain_sigma", "--gain-sigma"), ("gain_omega", "--gain-omega"), ("attention", "--attention"),
             ("freeze_stages", "--freeze-stages"), ("size_schedule", "--size-schedule"), ("test_every", "--test-every")]
#: --flag / --no-flag options (BooleanOptionalAction) whose default is "unset": forwarded only when given
TRI_STATE = [("fine", "fine"), ("equiv_backprop", "equiv-backprop"), ("gain", "gain"), ("freeze_bn", "freeze-bn"),
             ("compile", "compile")]


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one worker: this one without --nproc."""
    argv = (["-v"] if getattr(args, "verbose", False) else []) + ["train", args.data]
    for dest, flag in TRI_STATE:  # on, off, or unset (the method's default)
        value = getattr(args, dest)
        if value is not None:
            argv += [f"--{flag}" if value else f"--no-{flag}"]
    for item in args.part_loss:
        argv += ["--part-loss", item]
    for dest, flag in FORWARDED:
        value = getattr(args, dest)
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def launch(args: argparse.Namespace, cfg: TrainConfig) -> int:
    """Check what can be checked once, then run --nproc workers (see engine.training.distributed.launch_local)."""
    import torch

    import engine.training.distributed as ddp
    from engine.device import local_device
    from engine.errors import ConfigError, DataError
    from engine.training.loop import prepare_run

    if ddp.env_rank()[1] > 1:
        raise ConfigError(f"--nproc {args.nproc} inside a launched job (WORLD_SIZE={ddp.env_rank()[1]}): "
                          "use either torchrun or --nproc")
    ddp.per_rank_batch(cfg.batch_size, ddp.Context(torch.device("cpu"), world_size=args.nproc))
    local_device(args.nproc - 1, cfg.device)
    if not Path(cfg.data).expanduser().is_dir():
        raise DataError(f"data folder {cfg.data!r} does not exist or is no folder: check the path")
    prepare_run(cfg, args.resume)
    return ddp.launch_local(args.nproc, worker_argv(args), verbose=getattr(args, "verbose", False))


def part_loss_weights(items: list[str]) -> dict[str, float]:
    """``["equiv=2", "conc=500"]`` → ``{"w_equiv": 2.0, "w_conc": 500.0}`` (TrainConfig checks the names)."""
    from engine.errors import ConfigError

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[f"w_{name.strip()}"] = float(value)
        except ValueError:
            raise ConfigError(f"--part-loss {item!r}: write NAME=WEIGHT, e.g. --part-loss equiv=2") from None
        if not sep:
            raise ConfigError(f"--part-loss {item!r}: write NAME=WEIGHT, e.g. --part-loss equiv=2")
    return out


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config of the command line; with --resume, the settings that have no flag come from the run."""
    from engine.training.resume import NO_FLAG_KEYS, run_config

    kept = {}
    if args.resume:
        saved = run_config(args.out) or {}
        kept = {k: (tuple(saved[k]) if k == "crop_scale" else saved[k]) for k in NO_FLAG_KEYS if k in saved}
        # flags left out on a resume keep the run's value, not the method's default
        for key in ("epochs", "img_size", "batch_size", "fine", "padding", "mu", "mc_conc", "rotate", "equiv_backprop",
                    "validation_fraction", "zoom", "gain", "gain_alpha", "gain_sigma", "gain_omega", "attention",
                    "freeze_bn", "freeze_stages", "compile", "size_schedule", "test_every"):
            if getattr(args, key) is None and saved.get(key) is not None:
                setattr(args, key, saved[key])
    return TrainConfig(data=args.data, out=args.out, model=args.model, method=args.method, xi=args.xi,
                       mu=args.mu, lam=args.lam, mc_conc=args.mc_conc, epochs=args.epochs, pretrained=args.pretrained,
                       img_size=args.img_size, batch_size=args.batch_size, lr_backbone=args.lr_backbone,
                       lr_head=args.lr_head, seed=args.seed, device=args.device, workers=args.workers,
                       parts=args.parts, fine=args.fine, padding=args.padding, rotate=args.rotate,
                       equiv_backprop=args.equiv_backprop, zoom=args.zoom, gain=args.gain, gain_alpha=args.gain_alpha,
                       gain_sigma=args.gain_sigma, gain_omega=args.gain_omega, attention=args.attention,
                       freeze_bn=args.freeze_bn, freeze_stages=args.freeze_stages, compile=args.compile,
                       size_schedule=args.size_schedule, test_every=args.test_every,
                       validation_fraction=args.validation_fraction if args.validation_fraction is not None else 0.0,
                       **{**kept, "extra": {**kept.get("extra", {}), **part_loss_weights(args.part_loss),
                                            **racnn_options(args)}})


def racnn_options(args: argparse.Namespace) -> dict[str, float]:
    """``--apn-warmup``, ``--rank-margin``, ``--apn-lr``, ``--scale-size``, ``--apn-gradient`` and ``--apn-half`` as
    ``extra``'s ``apn_warmup``, ``margin``, ``apn_lr``, ``scale_size``, ``apn_gradient`` and ``apn_half`` (only those
    given; TrainConfig checks them)."""
    given = {"apn_warmup": getattr(args, "apn_warmup", None), "margin": getattr(args, "rank_margin", None),
             "apn_lr": getattr(args, "apn_lr", None), "scale_size": getattr(args, "scale_size", None),
             "apn_gradient": getattr(args, "apn_gradient", None), "apn_half": getattr(args, "apn_half", None)}
    return {k: v for k, v in given.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    from engine.training.distributed import is_main_process
    from engine.errors import ConfigError
    from engine.events import drive, to_json
    from engine.training.loop import train

    cfg = config_from_args(args)
    if args.allow_data_change and not args.resume:
        raise ConfigError("--allow-data-change without --resume: it only applies when continuing a run "
                          "(add --resume, or drop it for a new run)")
    if args.nproc != 1:
        if args.nproc < 1:
            raise ConfigError(f"--nproc {args.nproc}: give the number of processes, at least 1")
        if cfg.method == "racnn":
            raise ConfigError(f"--nproc {args.nproc} with --method racnn: its alternating steps train the APNs and "
                              "the rest in turn, which DistributedDataParallel cannot reduce: use --nproc 1")
        return launch(args, cfg)
    gen = train(cfg, resume=args.resume, allow_data_change=args.allow_data_change)
    if not is_main_process():  # a rank > 0 of a torchrun job: rank 0 reports
        drive(gen)
        return 0
    bars = Bars()

    def show(ev: object) -> None:
        if args.json_events:
            print(to_json(ev), flush=True)
        elif isinstance(ev, Started):
            print(f"training {cfg.model} ({cfg.method}) on {ev.device}: {len(ev.classes)} classes, "
                  f"{ev.num_train} train / {ev.num_test} test images -> {ev.run_dir}", file=sys.stderr)
            if ev.start_epoch:
                print(f"resuming after epoch {ev.start_epoch}", file=sys.stderr)
        elif isinstance(ev, Message):
            print(f"{ev.level}: {ev.text}", file=sys.stderr)
        elif isinstance(ev, BatchEnd):
            if bars.bar is None:
                bars.open(ev.steps, f"epoch {ev.epoch}")
            assert bars.bar is not None
            bars.bar.update(1)
            bars.bar.set_postfix(loss=f"{ev.loss:.3f}", img_s=f"{ev.images_per_s:.1f}")
        elif isinstance(ev, EpochEnd):
            bars.close()
            parts = " ".join(f"{k}={v:.4f}" for k, v in ev.train.items())
            tested = fmt_pct(ev.test_top1) if ev.test_top1 is not None or cfg.test_every == 1 else (
                "- (tested after the last epoch)" if cfg.test_every >= cfg.epochs else
                f"- (tested every {cfg.test_every} epochs and after the last)")
            print(f"epoch {ev.epoch}/{ev.epochs}: {parts}  test_top1={tested}  "
                  f"{ev.images_per_s:.1f} img/s  {ev.seconds:.0f}s  eta {ev.eta_s / 60:.1f} min", file=sys.stderr)

    with bars:
        result = drive(gen, show)
    if args.json_events:  # the result last, as one more JSON line (the child-process protocol of the app)
        print(to_json(result), flush=True)
        return 0
    print(f"done: {result.run_dir}  test top-1 {fmt_pct(result.metrics.get('test_top1'))}")
    return 0
