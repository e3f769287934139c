"""The built-in demo: toy birds (cached) → an MC-Loss model trained from scratch on a small CPU backbone →
evaluation against the generator's truth → a few map overlays. ``fieldmark demo`` and the app's first start use it.

Everything lands in one folder (default: the user cache, ``~/.cache/fieldmark/demo``, or ``$FIELDMARK_DEMO_DIR``):
``toybirds/`` (the data), ``run/`` (the model, with its evaluation and overlays: file names of
:mod:`engine.runs`). A rerun reuses
what is complete and resumes an interrupted training.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator

import engine.runs as runs
from engine.training.config import TrainConfig
from engine.data.transforms import Preprocessing
from engine.errors import Cancelled
from engine.events import Finished, Message, Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    classes: int = 8
    per_class: int = 60
    size: int = 128
    seed: int = 0
    model: str = "smallnet"
    # 5 channels a class: CWA keeps ceil(xi/2) = 3 of them, enough for the three marks of a three-mark class; with
    # xi = 3 it kept 2 and the third mark was the one missed (docs/RESULTS.md#demo-changes)
    xi: int = 5
    epochs: int = 50
    img_size: int = 128
    batch_size: int = 16  # from scratch, the number of steps matters more than the batch: 750 steps
    mu: float = 0.5  # the paper's from-scratch μ = 1.5 learns too slowly in 750 steps (docs/RESULTS.md#demo-changes)
    lam: float = 10.0
    lr: float = 0.05
    padding: str = "replicate"  # MC-Loss's default (docs/METHODS.md#mc-loss-border)
    fine: bool = False  # toy birds at 128 px: the marks were measured (recall above) on smallnet's own grid
    overlays: int = 4


def default_root() -> Path:
    env = os.environ.get("FIELDMARK_DEMO_DIR")
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "fieldmark" / "demo"


def demo_paths(root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(toy-birds data folder, run folder) of the demo in ``root``."""
    root = Path(root).expanduser() if root else default_root()
    return root / "toybirds", root / "run"


def demo_config(data: Path, run: Path, s: DemoSettings) -> TrainConfig:
    return TrainConfig(data=str(data), out=str(run), model=s.model, method="mcloss", xi=s.xi, mu=s.mu, lam=s.lam,
                       epochs=s.epochs, img_size=s.img_size, batch_size=s.batch_size, lr_backbone=s.lr,
                       lr_head=s.lr, crop_scale=(0.6, 1.0), warmup_epochs=1.0, seed=s.seed, device="auto",
                       padding=s.padding, fine=s.fine)


def _toybirds_current(data: Path, s: DemoSettings) -> bool:
    f = data / "toybirds.json"
    if not f.is_file():
        return False
    try:
        t = json.loads(f.read_text())
    except json.JSONDecodeError:
        return False
    return (t.get("seed"), t.get("size"), len(t.get("classes", [])), t.get("per_class")) == (
        s.seed, s.size, s.classes, s.per_class)


def build_demo(out: str | os.PathLike | None = None, should_stop: Callable[[], bool] | None = None,
               settings: DemoSettings | None = None) -> Generator[object, None, Finished]:
    """Build (or finish) the demo; yields Progress/Message and the training events; returns Finished whose
    ``metrics`` are the evaluation figures and whose ``run_dir`` is the demo run."""
    from engine.data import scan
    from engine.evaluation.evaluate import evaluate
    from engine.runs import load_run
    from engine.toybirds.dataset import generate
    from engine.training.loop import train

    s = settings or DemoSettings()
    stop = should_stop or (lambda: False)
    data, run = demo_paths(out)
    if not _toybirds_current(data, s):
        pending: list[int] = []

        def progress(done: int, total: int) -> None:
            if stop():
                raise Cancelled("stopped while drawing toy birds")
            pending.append(done)

        generate(data, classes=s.classes, per_class=s.per_class, size=s.size, seed=s.seed, progress=progress)
        yield Progress("drawing toy birds", len(pending), s.classes * s.per_class)
        if run.exists():  # a model of other data is stale
            _clear_run(run)
    else:
        yield Message("info", f"toy birds found in {data}")
    cfg = demo_config(data, run, s)
    meta = runs.read_meta(run) if runs.is_run(run) else None
    # a demo saved by an older version: its config as this version reads it (e.g. an unset size schedule)
    same = meta is not None and TrainConfig.upgrade_dict(dict(meta.get("config") or {})) == cfg.to_dict()
    if meta is None or meta.get("epoch", 0) < s.epochs or not same:
        resume = same and (run / runs.RESUME).is_file()
        if not resume and run.exists():
            _clear_run(run)
        yield from train(cfg, should_stop=stop, resume=resume)
    else:
        yield Message("info", f"trained demo model found in {run}")
    figures = runs.read_evaluation(run)
    if figures is None:
        loaded = load_run(run)
        result = yield from evaluate(loaded, scan(data), should_stop=stop)
        figures = result.saved()
        runs.write_evaluation(run, figures)
        yield from _overlays(loaded, data, run / runs.OVERLAYS, s.overlays, stop)
    return Finished(str(run), s.epochs, figures)


def _clear_run(run: Path) -> None:
    """Remove a stale demo run (only the files the demo writes)."""
    import shutil

    for name in runs.RUN_FILES:
        (run / name).unlink(missing_ok=True)
    shutil.rmtree(run / runs.OVERLAYS, ignore_errors=True)


def _overlays(loaded, data: Path, out: Path, n: int, stop: Callable[[], bool]):
    """One channel-map overlay for the first test image of the first ``n`` classes."""
    from engine.maps.overlays import draw_strip
    from engine.data import scan
    from engine.maps.explain import explain
    from engine.data.imageio import read_image, write_image
    from engine.maps.parts import find_parts

    report = runs.run_split(loaded.run_dir, scan(data)).report  # the run's own test photos
    firsts: dict[int, str] = {}
    for sm in report.split("test"):
        firsts.setdefault(sm.label, sm.path)
    chosen = sorted(firsts.items())[:n]
    pp = Preprocessing.from_dict(loaded.preprocessing)
    for i, (label, path) in enumerate(chosen):
        if stop():
            raise Cancelled("stopped while drawing overlays")
        img = read_image(path)
        mapset = explain(loaded.model, [img], "channels", label, pp)[0][0]
        name = loaded.classes[label]
        write_image(out / f"{Path(path).stem}.channels.{name}.png",
                    draw_strip(img, mapset, find_parts(mapset), f"{Path(path).name}  channels  {name}"))
        yield Progress("drawing overlays", i + 1, len(chosen))
