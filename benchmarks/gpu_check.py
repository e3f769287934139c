"""The GPU path measured in one run (issue 24, item 5): train, evaluate, explain and export on one device.

``python -m benchmarks.gpu_check [--device cuda|cpu] [--data DIR] [--epochs 2] [--out DIR] [--json FILE]``

In one process, on one device:

1. trains a ``parts`` run and an MC-Loss run on the data (default ``../shared/data/cub-parts-dev``) at the methods'
   defaults (parts: 448 px, batch 16; MC-Loss: 224 px, batch 32) for ``--epochs`` (default 2), with AMP as the
   training loop uses it (``TrainConfig.amp`` on: bfloat16 or float16 autocast on CUDA, none on the CPU) and the
   ImageNet weights of ``../shared/weights/mobilenet_v2_imagenet1k.pth`` when that file is there;
2. evaluates both runs (:func:`engine.evaluation.evaluate.evaluate`: the training and the test split, as
   ``fieldmark evaluate`` does);
3. explains 50 test photos with each run (:func:`engine.maps.explain.explain`, the ``channels`` maps) and exports
   those photos' parts (:func:`engine.export.crops.export_parts` on the data restricted to them);
4. runs the plain torchvision loop of :mod:`benchmarks.bench_loader` (``ImageFolder`` + PIL + ``DataLoader(
   num_workers=2)``, fp32) on the same device with the MC-Loss settings, on a bounded share of the same training
   photos (``--plain-images``, default 512), for one epoch.

For every step it prints images/s, the peak GPU memory (``torch.cuda.max_memory_allocated``, reset before each
step; "n/a on cpu") and whether the step fell back to the CPU. That last line is measured: a global forward
pre-hook counts every ``nn.Module`` call by the device of its parameters and tensor inputs (and notes the autocast
dtype in force), and the device the engine chose (:func:`engine.device.resolve_device`; the training loop's own
``Started.device``) and the model's parameters are read. "fell back to CPU: yes" means a module ran on the CPU
while another device was asked for. The hook costs every module call a few microseconds, on every step alike
(the plain loop's included).

How images/s is counted: training, the images stepped over the seconds from the call to the last step without the
per-epoch test pass and checkpoint writes (as :mod:`benchmarks.bench_loader`; the scan and the one-off decode into
the image cache are in); the plain loop, its images stepped over the seconds from building its data sets to its
last step; evaluate, the images scored (both splits) over the whole call; explain, the photos over the seconds of
the ``explain`` calls (photos decoded beforehand); export, the photos exported over the whole call (decoding and
writing the crops included).

The first line names the device and the torch version; the last gives the total wall time. It is sized to finish
in under 8 minutes on one H100 at the defaults. ``--quick`` is the CPU smoke run: ``--device cpu``, toy birds
generated in a temporary folder (3 species, 10 photos each, 64 px), 1 epoch, ``--img-size 64``, ``--model
smallnet``. ``--device cuda`` where CUDA is not available exits 2 with one line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

T0 = time.perf_counter()

REPO = Path(__file__).resolve().parent.parent
CUB_PARTS = REPO.parent / "shared" / "data" / "cub-parts-dev"
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_v2_imagenet1k.pth"
EXPLAIN_PHOTOS = 50
BATCH = 16  # explain and export batch (export's default)
GOAL_S = 480  # under 8 minutes on one H100 at the defaults


class Usage(Exception):
    """A user mistake: one line, exit 2."""


# ----------------------------------------------------------------------------------------------- measuring
class DeviceWatch:
    """Counts module calls by the device of their parameters and tensor inputs, while installed (global hook)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.cpu_modules: Counter[str] = Counter()
        self.autocast: set[str] = set()
        self._handle = None

    def _hook(self, module, args) -> None:
        import torch

        devs = {a.device.type for a in args if isinstance(a, torch.Tensor)}
        p = next(module.parameters(recurse=False), None)
        if p is not None:
            devs.add(p.device.type)
        for d in devs:
            self.calls[d] += 1
            try:
                if d != "cpu" and torch.is_autocast_enabled(d):
                    self.autocast.add(str(torch.get_autocast_dtype(d)).replace("torch.", ""))
            except (RuntimeError, TypeError):  # a device type without autocast
                pass
        if "cpu" in devs:
            self.cpu_modules[type(module).__name__] += 1

    def __enter__(self) -> "DeviceWatch":
        from torch.nn.modules.module import register_module_forward_pre_hook

        self._handle = register_module_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


@dataclasses.dataclass
class Step:
    name: str
    images: int
    seconds: float
    wall_s: float
    detail: str
    peak_gpu_mb: float | None
    fell_back: bool
    why: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        mem = "n/a on cpu" if self.peak_gpu_mb is None else f"{self.peak_gpu_mb:.0f} MB"
        return [f"[{self.name}] {self.images_per_s:.1f} images/s ({self.images} images in {self.seconds:.2f} s; "
                f"{self.detail}; whole step {self.wall_s:.1f} s)",
                f"[{self.name}] peak GPU memory: {mem}",
                f"[{self.name}] fell back to CPU: {'yes' if self.fell_back else 'no'} ({self.why})"]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "images": self.images, "seconds": self.seconds, "images_per_s": self.images_per_s,
                "wall_s": self.wall_s, "detail": self.detail, "peak_gpu_mb": self.peak_gpu_mb,
                "fell_back_to_cpu": self.fell_back, "fell_back_why": self.why, **self.extra}


def measured(name: str, dev, body: Callable[[], tuple[int, float, str, dict]], param_device: Callable[[], str]
             ) -> Step:
    """Run one step under the device watch and the peak-memory counter: ``body()`` returns (images, seconds,
    detail, extra); ``param_device()`` the device of the step's model parameters afterwards (or "")."""
    import torch

    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    with DeviceWatch() as watch:
        images, seconds, detail, extra = body()
        if cuda:
            torch.cuda.synchronize(dev)
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 20 if cuda else None
    params = param_device()
    on_cpu = watch.calls.get("cpu", 0)
    counts = ", ".join(f"{n} on {d}" for d, n in sorted(watch.calls.items())) or "none"
    fell = dev.type != "cpu" and (on_cpu > 0 or params == "cpu" or extra.get("engine_device", dev.type) == "cpu")
    why = [f"asked {dev.type}", f"engine chose {extra.get('engine_device', dev.type)}"]
    if params:
        why.append(f"parameters on {params}")
    why.append(f"module calls: {counts}")
    if watch.autocast:
        why.append(f"autocast {'/'.join(sorted(watch.autocast))}")
    if fell and watch.cpu_modules:
        why.append("on the CPU: " + ", ".join(f"{k} x{v}" for k, v in watch.cpu_modules.most_common(3)))
    extra = {**extra, "module_calls": dict(watch.calls), "autocast": sorted(watch.autocast)}
    return Step(name, images, seconds, wall, detail, peak, fell, "; ".join(why), extra)


# ----------------------------------------------------------------------------------------------- the steps
def train_step(cfg, dev) -> Step:
    """One training run, timed as bench_loader's Fieldmark side (without per-epoch evaluation and saves)."""
    from engine.device import amp_dtype, resolve_device
    from engine.events import BatchEnd, EpochEnd, Started, drive
    from engine.training.loop import train

    info: dict[str, Any] = {}

    def body():
        prev, seconds, images, per_batch = time.perf_counter(), 0.0, 0, cfg.batch_size

        def on(ev: object) -> None:
            nonlocal prev, seconds, images, per_batch
            now = time.perf_counter()
            if not isinstance(ev, EpochEnd):  # the test pass and the checkpoint since the last step: not timed
                seconds += now - prev
            if isinstance(ev, Started):
                per_batch = min(cfg.batch_size, ev.num_train)
                info.update(started=ev.device, num_train=ev.num_train, steps=ev.steps_per_epoch)
            elif isinstance(ev, BatchEnd):
                images += per_batch
            elif isinstance(ev, EpochEnd):
                info.update(top1=ev.test_top1, loss=ev.train.get("loss"))
            prev = now

        done = drive(train(cfg), on)
        info["top1"] = done.metrics.get("test_top1", info.get("top1"))
        started = str(info.get("started", ""))
        chose = resolve_device(cfg.device).type
        engine = "cuda" if "CUDA" in started or "cuda" in started else "cpu" if "CPU" in started else chose
        top1 = info.get("top1")
        dtype = amp_dtype(resolve_device(cfg.device)) if cfg.amp else None  # what the loop autocasts to
        amp = str(dtype).replace("torch.", "") if dtype is not None else f"off on {chose}"
        detail = (f"{cfg.img_size} px, batch {cfg.batch_size}, {cfg.epochs} epoch(s) of {info.get('steps')} steps, "
                  f"{'ImageNet weights' if cfg.pretrained else 'random init'}, AMP {amp}; "
                  + (f"test top-1 {top1:.1%}" if top1 is not None else "test top-1 n/a"))
        return images, seconds, detail, {"engine_device": engine, "engine_device_line": started,
                                         "test_top1": top1, "train_images": info.get("num_train")}

    return measured(f"train {cfg.method}", dev, body, lambda: "")


def evaluate_step(method: str, run_dir: Path, data: str, dev) -> Step:
    from engine.data import scan
    from engine.evaluation.evaluate import evaluate
    from engine.events import Progress, drive
    from engine.maps.explain import model_device
    from engine.runs import load_run

    loaded = None

    def body():
        nonlocal loaded
        t = time.perf_counter()
        loaded = load_run(run_dir, dev)
        done: dict[str, int] = {}

        def on(ev: object) -> None:
            if isinstance(ev, Progress):
                done[ev.stage] = ev.done

        result = drive(evaluate(loaded, scan(data)), on)
        seconds = time.perf_counter() - t
        kp = (result.protocol or {}).get("own", {}).get("keypoint_error") if result.protocol else None
        detail = (", ".join(f"{k.split()[-1]} {n}" for k, n in done.items()) + " photos, one model load"
                  + (f"; top-1 {result.top1:.1%}" if result.top1 is not None else "")
                  + (f", keypoint error {kp:.2f}" if isinstance(kp, (int, float)) else ""))
        return sum(done.values()), seconds, detail, {"top1": result.top1, "keypoint_error": kp}

    return measured(f"evaluate {method}", dev, body,
                    lambda: model_device(loaded.model).type if loaded is not None else "")


def explain_step(method: str, run_dir: Path, samples: list, dev) -> Step:
    from engine.data.imageio import load_image
    from engine.data.transforms import Preprocessing
    from engine.maps.explain import explain, model_device
    from engine.runs import load_run

    loaded = load_run(run_dir, dev)
    photos = [load_image(s.path).rgb for s in samples]
    pp = Preprocessing.from_dict(loaded.preprocessing)

    def body():
        seconds, maps = 0.0, 0
        for i in range(0, len(photos), BATCH):
            t = time.perf_counter()
            sets = explain(loaded.model, photos[i:i + BATCH], "channels", None, pp)
            seconds += time.perf_counter() - t
            maps += sum(ms.maps.shape[0] for row in sets for ms in row)
        return len(photos), seconds, f"channels maps of the top class, batch {BATCH}, {maps} maps at photo size", {}

    return measured(f"explain {method}", dev, body, lambda: model_device(loaded.model).type)


def export_step(method: str, run_dir: Path, data: str, samples: list, out: Path, dev) -> Step:
    from engine.data import scan
    from engine.events import drive
    from engine.export.crops import export_parts
    from engine.maps.explain import model_device
    from engine.runs import load_run

    loaded = load_run(run_dir, dev)
    keep = {os.path.realpath(s.path) for s in samples}
    report = scan(data)
    report = dataclasses.replace(report, samples=[s for s in report.samples if os.path.realpath(s.path) in keep])

    def body():
        t = time.perf_counter()
        summary = drive(export_parts(loaded, report, out, split="test", batch_size=BATCH))
        seconds = time.perf_counter() - t
        return summary.exported, seconds, (f"{summary.crops} crops of {summary.exported} photos, "
                                           f"{len(summary.failed)} failed, into {out}"), {"crops": summary.crops}

    return measured(f"export {method}", dev, body, lambda: model_device(loaded.model).type)


def plain_step(cfg, data: str, root: Path, dev, limit: int) -> Step:
    """bench_loader's plain torchvision loop on class folders of (a bounded share of) the same photos."""
    from benchmarks.bench_loader import plain_side
    from engine.data import scan

    report = scan(data)
    train = _spread([s for s in report.split("train") if s.label >= 0], limit)
    test = _spread([s for s in report.split("test") if s.label >= 0], max(len(report.classes) * 2, 16))
    for split, samples in (("train", train), ("test", test)):
        for s in samples:
            dst = root / split / f"c{s.label:04d}" / f"{s.image_id or 0}-{Path(s.path).name}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.realpath(s.path), dst)
    batch = min(cfg.batch_size, len(train))
    pcfg = cfg.replace(epochs=1, batch_size=batch)

    def body():
        r = plain_side(pcfg, root, dev)
        return r.images, r.seconds, (f"torchvision ImageFolder + PIL + DataLoader(num_workers=2), fp32, "
                                     f"{cfg.method} settings: {cfg.img_size} px, batch {batch}, 1 epoch over "
                                     f"{len(train)} of the training photos; test top-1 {r.top1:.1%} on {len(test)}"
                                     ), {"test_top1": r.top1}

    return measured("plain torchvision loop", dev, body, lambda: "")


def _spread(items: list, n: int) -> list:
    """At most ``n`` items, evenly spaced over the list (so every class is represented)."""
    if len(items) <= n:
        return list(items)
    return [items[int(i * len(items) / n)] for i in range(n)]


# ----------------------------------------------------------------------------------------------- the run
def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.strip().splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda (default), cuda:N or cpu (--quick: cpu)")
    ap.add_argument("--data", default=None, help=f"CUB-layout folder with part keypoints (default {CUB_PARTS}; "
                                                 "--quick: toy birds generated in a temporary folder)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs of each run (default 2; --quick 1)")
    ap.add_argument("--img-size", type=int, default=None,
                    help="override both methods' image size (default: the methods' own, 448 and 224; --quick 64)")
    ap.add_argument("--model", default=None, help="backbone (default mobilenet_v2; --quick smallnet)")
    ap.add_argument("--pretrained", default=None,
                    help=f"weights file or name, or none (default {WEIGHTS} when it exists and the model is "
                         "mobilenet_v2)")
    ap.add_argument("--plain-images", type=int, default=512,
                    help="training photos of the plain loop's one epoch (default 512)")
    ap.add_argument("--out", default=None, help="keep the runs and exports here (default: a temporary folder, "
                                                "removed at the end)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--quick", action="store_true", help="the CPU smoke run (see the module docstring)")
    args = ap.parse_args(argv)
    q = args.quick
    args.device = args.device or ("cpu" if q else "cuda")
    args.epochs = args.epochs or (1 if q else 2)
    args.img_size = args.img_size or (64 if q else None)
    args.model = args.model or ("smallnet" if q else "mobilenet_v2")
    if args.epochs < 1 or args.plain_images < 1:
        raise Usage("--epochs and --plain-images must be at least 1")
    return args


def check_device(name: str):
    import torch

    from engine.device import resolve_device
    from engine.errors import ConfigError

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise Usage(f"--device {name}: CUDA is not available here (torch {torch.__version__}, "
                    f"{'built without CUDA' if not torch.version.cuda else 'no GPU visible'}); "
                    "run the CPU fallback with --device cpu (or --quick)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise Usage(f"--device {name}: use cuda, cuda:N or cpu")
    try:
        return resolve_device(name)
    except ConfigError as exc:
        raise Usage(f"--device {name}: {exc}") from None


def device_line(dev) -> str:
    import torch

    from benchmarks.common import cpu_model

    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        what = (f"{torch.cuda.get_device_name(dev)} ({props.total_memory / 2 ** 30:.0f} GiB, CUDA "
                f"{torch.version.cuda})")
    else:
        what = f"{cpu_model()} ({torch.get_num_threads()} threads)"
    return f"device: {dev.type} = {what}; torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        dev = check_device(args.device)
    except Usage as exc:
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 2
    print(device_line(dev), flush=True)
    work = Path(args.out).expanduser().absolute() if args.out else Path(tempfile.mkdtemp(prefix="fm-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, dev, work)
    except Usage as exc:
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, dev, work: Path) -> int:
    from engine.data import scan
    from engine.device import amp_dtype
    from engine.runs import run_split
    from engine.training.config import TrainConfig

    data = args.data
    if data is None and args.quick:
        from engine.toybirds.dataset import generate

        data = str(work / "toybirds")
        generate(data, classes=3, per_class=10, size=64, seed=0)
    data = data or str(CUB_PARTS)
    if not Path(data).is_dir():
        raise Usage(f"--data {data}: not a folder; give a CUB-layout folder with part keypoints, or --quick")
    pretrained = args.pretrained
    if pretrained is None:
        pretrained = str(WEIGHTS) if WEIGHTS.is_file() and args.model == "mobilenet_v2" else None
    elif pretrained.lower() == "none":
        pretrained = None
    report = scan(data)
    n_train, n_test = len(report.split("train")), len(report.split("test"))
    amp = amp_dtype(dev)
    print(f"data: {data} ({n_train} train / {n_test} test photos, {len(report.classes)} classes); model "
          f"{args.model}, {'weights ' + Path(pretrained).name if pretrained else 'random init'}; {args.epochs} "
          f"epoch(s); AMP: {str(amp).replace('torch.', '') if amp else 'none on ' + dev.type}", flush=True)
    steps: list[Step] = []

    def show(step: Step) -> Step:
        for line in step.lines():
            print(line, flush=True)
        steps.append(step)
        return step

    cfgs = {}
    for method in ("parts", "mcloss"):
        cfgs[method] = TrainConfig(data=data, out=str(work / "runs" / method), model=args.model, method=method,
                                   epochs=args.epochs, img_size=args.img_size, pretrained=pretrained,
                                   device=str(dev), seed=0)
        show(train_step(cfgs[method], dev))
    for method in cfgs:
        show(evaluate_step(method, Path(cfgs[method].out), data, dev))
    # the runs' own test split (their split.json; both runs drew it with the same seed)
    test = [s for s in run_split(cfgs["parts"].out, scan(data)).report.split("test") if s.label >= 0]
    photos = _spread(test, EXPLAIN_PHOTOS)
    for method in cfgs:
        show(explain_step(method, Path(cfgs[method].out), photos, dev))
    for method in cfgs:
        show(export_step(method, Path(cfgs[method].out), data, photos, work / "export" / method, dev))
    plain = show(plain_step(cfgs["mcloss"], data, work / "plain-data", dev, args.plain_images))
    mc = next(s for s in steps if s.name == "train mcloss")
    ratio = mc.images_per_s / plain.images_per_s if plain.images_per_s else float("nan")
    print(f"train mcloss vs plain torchvision loop: {mc.images_per_s:.1f} vs {plain.images_per_s:.1f} images/s "
          f"= {ratio:.2f}x")
    fell = [s.name for s in steps if s.fell_back]
    print(f"fell back to CPU in any step: {'yes (' + ', '.join(fell) + ')' if fell else 'no'}")
    total = time.perf_counter() - T0
    print(f"total wall time: {total:.1f} s"
          + (f" (goal on one H100 at the defaults: under {GOAL_S} s)" if dev.type == "cuda" else ""), flush=True)
    if args.json:
        import torch

        doc = {"device": device_line(dev), "device_type": dev.type, "torch": torch.__version__,
               "gpu_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
               "data": data, "train_photos": n_train, "test_photos": n_test, "model": args.model,
               "pretrained": pretrained, "epochs": args.epochs, "amp": str(amp).replace("torch.", "") if amp else None,
               "steps": {s.name: s.to_dict() for s in steps}, "plain_ratio_mcloss": ratio,
               "fell_back_any": bool(fell), "total_wall_s": total}
        Path(args.json).expanduser().write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
