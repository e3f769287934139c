"""The training options that trade nothing but time, or that only speed learning up (docs/METHODS.md#speed),
checked and filled for :class:`~engine.training.config.TrainConfig`, and what the loop needs of them.

* ``freeze_bn`` / ``freeze_stages``: the pretrained backbone's BatchNorm layers, or its first N stages, frozen
  (:mod:`engine.models.freeze`; partnet models, fine-tuning only).
* ``compile``: ``torch.compile`` (inductor) of the backbone's forward in the training passes (:class:`Compiled`);
  where it is unavailable or fails, one warning and the run goes on eager.
* ``size_schedule``: the early epochs at smaller images, ``"0.5:320"`` = the first half of the epochs at 320 px,
  the rest at ``img_size`` (:func:`parse_size_schedule`); the test pass always runs at ``img_size``.
* ``test_every``: the test pass after every N-th epoch and after the last (:func:`tests_after`), instead of after
  each; the training is the same (the test pass draws nothing from the random streams).

Off by default, except for the ``parts`` method fine-tuning a pretrained partnet backbone (:func:`defaults_for`):
the first two stages frozen, the first half of the epochs at 320 px, a test pass halfway and after the last epoch
(PARTS_SPEED; chosen on three seeds of the validation split, docs/RESULTS.md#speed-default). ``--freeze-stages 0
--size-schedule none --test-every 1`` gives the run of before.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, TypeVar

import torch
from torch import nn

from engine.errors import Cancelled, ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What the options are when left unset (None), and what a config saved before them had.
SPEED_DEFAULTS: dict[str, Any] = {"freeze_bn": False, "freeze_stages": 0, "compile": False, "size_schedule": "none",
                                   "test_every": 1}
#: The parts method's defaults when it fine-tunes a pretrained partnet backbone: 2.0x faster than all off on the
#: 2-core machine, with the parts as good over three seeds of cub-parts-dev's validation split
#: (docs/RESULTS.md#speed-default). The size schedule only where --img-size is above its 320 px. Every parts run
#: also tests after half its epochs (rounded up) and after the last (:func:`defaults_for`).
PARTS_SPEED: dict[str, Any] = {"freeze_stages": 2, "size_schedule": ((0.5, 320),)}

SPEED_HELP = {
    "freeze_bn": "freeze the pretrained backbone's BatchNorm layers: fixed statistics and affine (eval mode) "
                 "folded into their convolutions, so a step skips their work and micro-batches change nothing "
                 "(partnet models, fine-tuning; default off)",
    "freeze_stages": "freeze the first N stages of the pretrained backbone (their weights and BatchNorm fixed, no "
                     "backward through them; mobilenet_v2, resnet18/50 and vgg16_bn have 5, smallnet 3; "
                     "docs/METHODS.md#freezing; default 2 for parts fine-tuned from pretrained weights, else 0)",
    "compile": "torch.compile (inductor) the backbone for the training passes; where it is unavailable or fails "
               "(e.g. no C++ compiler) one warning, then eager (default off)",
    "size_schedule": "train the early epochs on smaller images: SHARE:SIZE[,SHARE:SIZE...], e.g. 0.5:320 = the first "
                     "half of the epochs at 320 px, the rest at --img-size; shares of --epochs, increasing, below 1; "
                     "sizes from 32 px up to below --img-size, not shrinking; none: every epoch at --img-size "
                     "(default 0.5:320 for parts fine-tuned above 320 px, else none)",
    "test_every": "test the held-out split after every N-th epoch and after the last one, instead of after each: the "
                  "same training, without the test passes between (each costs about a third of a parts epoch); "
                  "the epochs between show no test top-1 (default: parts halfway and after the last, "
                  "others 1: after each)",
}


def parse_size_schedule(text: str | None, img_size: int) -> tuple[tuple[float, int], ...]:
    """``"0.3:256,0.6:352"`` → ``((0.3, 256), (0.6, 352))``: the epochs before 30 % of the run at 256 px, those
    before 60 % at 352, the rest at ``img_size``. Empty or None: ``()``. A ConfigError names what is wrong."""
    if text is None or not str(text).strip() or str(text).strip().lower() == "none":
        return ()
    items = []
    for item in str(text).replace(" ", "").split(","):
        share, sep, size = item.partition(":")
        try:
            f, s = float(share), int(size) if size.isdigit() else 0
        except ValueError:
            f, s = math.nan, 0
        if not sep or not math.isfinite(f) or not size.isdigit():
            raise ConfigError(f"size_schedule={text!r}: write SHARE:SIZE[,SHARE:SIZE...], e.g. 0.5:320 (the first "
                              f"half of the epochs at 320 px); {item!r} is not a share and a whole number of pixels")
        if not 0 < f < 1 or (items and f <= items[-1][0]):
            raise ConfigError(f"size_schedule={text!r}: the shares of the epochs must increase from above 0 to "
                              f"below 1 ({f:g} in {item!r}); the epochs after the last share train at "
                              f"--img-size {img_size}")
        if not 32 <= s < img_size or (items and s < items[-1][1]):
            raise ConfigError(f"size_schedule={text!r}: sizes go from 32 px up to below --img-size {img_size}, "
                              f"without shrinking ({s} in {item!r})")
        items.append((f, s))
    return tuple(items)


def format_size_schedule(items: tuple[tuple[float, int], ...]) -> str:
    """The canonical text of a parsed schedule ("none" for none)."""
    return ",".join(f"{f:g}:{s}" for f, s in items) or "none"


def epoch_sizes(text: str | None, img_size: int, epochs: int) -> tuple[int, ...]:
    """The training image size of each epoch (0-based): epoch e takes the first item whose share exceeds e /
    epochs, else ``img_size``. ``"0.5:320"`` over 14 epochs: 7 at 320 px, 7 at ``img_size``."""
    items = parse_size_schedule(text, img_size)
    return tuple(next((s for f, s in items if e < f * epochs), img_size) for e in range(epochs))


def defaults_for(cfg: Any) -> dict[str, Any]:
    """What the speed options are when left unset for ``cfg``: SPEED_DEFAULTS, and PARTS_SPEED for the parts
    method fine-tuning a pretrained partnet backbone (the size schedule only above its size, the freezing only
    where the backbone has the stages)."""
    from engine.models import get_spec
    from engine.models.freeze import stage_count

    out = dict(SPEED_DEFAULTS)
    if cfg.method == "parts":
        out["test_every"] = max(1, math.ceil(cfg.epochs / 2))
        if get_spec(cfg.model).family == "partnet" and cfg.pretrained not in (None, "", "none"):
            out["freeze_stages"] = min(PARTS_SPEED["freeze_stages"], stage_count(cfg.model) - 1)
            if cfg.img_size > PARTS_SPEED["size_schedule"][-1][1]:
                out["size_schedule"] = format_size_schedule(PARTS_SPEED["size_schedule"])
    return out


def speed_options(cfg: Any) -> dict[str, Any]:
    """The speed fields of ``cfg`` checked and filled (ConfigError naming the field, the value and what to do)."""
    from engine.models import get_spec
    from engine.models.freeze import STAGES, stage_count

    out = {k: getattr(cfg, k) if getattr(cfg, k) is not None else v for k, v in defaults_for(cfg).items()}
    family = get_spec(cfg.model).family
    scratch = cfg.pretrained in (None, "", "none")
    for name in ("freeze_bn", "compile"):
        if not isinstance(out[name], bool):
            raise ConfigError(f"{name}={out[name]!r}: give true or false")
    stages = out["freeze_stages"]
    if not isinstance(stages, int) or isinstance(stages, bool) or stages < 0:
        raise ConfigError(f"freeze_stages={stages!r}: give a whole number of stages, 0 (none) or more")
    for name, on in (("freeze_bn", out["freeze_bn"]), ("freeze_stages", stages > 0)):
        if on and family != "partnet":
            raise ConfigError(f"{name}={out[name]!r}: freezing is for the partnet backbones (methods ce, mcloss, "
                              f"parts), and {cfg.model} is a {family} model: leave it out")
        if on and scratch:
            raise ConfigError(f"{name}={out[name]!r}: freezing keeps the pretrained weights and statistics, and this "
                              "run trains from scratch: give --pretrained NAME|PATH, or leave it out")
    if stages and stages > stage_count(cfg.model):
        raise ConfigError(f"freeze_stages={stages}: {cfg.model} has {stage_count(cfg.model)} stages "
                          f"({', '.join(f'[{a}:{b}]' for a, b in STAGES[cfg.model])} of its body): give 0 to "
                          f"{stage_count(cfg.model)}")
    out["size_schedule"] = format_size_schedule(parse_size_schedule(out["size_schedule"], cfg.img_size))
    every = out["test_every"]
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ConfigError(f"test_every={every!r}: give a whole number of epochs, 1 (a test pass after each epoch) "
                          "or more")
    return out


def tests_after(epoch: int, epochs: int, every: int) -> bool:
    """Whether the test pass runs after epoch ``epoch`` (0-based) of ``epochs``: after every ``every``-th epoch
    and after the last."""
    return (epoch + 1) % every == 0 or epoch + 1 == epochs


def describe_schedule(cfg: Any) -> str | None:
    """A line saying which epochs train at which size and after which the test pass runs (``--size-schedule``,
    ``--test-every``), or None when every epoch trains at ``img_size`` and is tested."""
    sizes = epoch_sizes(cfg.size_schedule, cfg.img_size, cfg.epochs)
    said = []
    if any(s != cfg.img_size for s in sizes):
        starts = [e for e in range(len(sizes)) if e == 0 or sizes[e] != sizes[e - 1]] + [len(sizes)]
        said.append("epochs " + ", ".join(f"{a + 1}-{b} at {sizes[a]} px" if b - a > 1 else f"{a + 1} at {sizes[a]} px"
                                          for a, b in zip(starts, starts[1:])))
    tested = [e + 1 for e in range(cfg.epochs) if tests_after(e, cfg.epochs, cfg.test_every)]
    if len(tested) < cfg.epochs:
        said.append(f"a test pass after epoch{'s' if len(tested) > 1 else ''} {' and '.join(map(str, tested))}"
                    if len(tested) <= 4 else f"a test pass after every {cfg.test_every} epochs and after the last")
    return "; ".join(said) or None


def describe_speed(cfg: Any) -> str | None:
    """The speed options of ``cfg`` that are on, in a line (what the Train form shows), or None when none is."""
    said = [("BatchNorm frozen" if cfg.freeze_bn else ""),
            (f"the first {cfg.freeze_stages} backbone stage{'s' if cfg.freeze_stages > 1 else ''} frozen"
             if cfg.freeze_stages else ""), ("compiled" if cfg.compile else ""), describe_schedule(cfg) or ""]
    return "; ".join(filter(None, said)) or None


class EpochClock:
    """The time left in a run whose epochs differ: the early ones at smaller images (``size_schedule``) and only
    some followed by a test pass (``test_every``). A training pass is estimated from the epochs timed at the same
    size, else from all timed epochs scaled by the image area; a test pass from the timed ones, else as a fifth of
    a full-size training pass per photo (about what a parts or CE test pass measured against its training pass
    on the CPU; the estimate is replaced by the first test pass timed)."""

    TEST_SHARE = 0.2

    def __init__(self, sizes: tuple[int, ...], tests: tuple[bool, ...], train_images: int, test_images: int):
        self.sizes, self.tests = sizes, tests
        self.train_images, self.test_images = max(1, train_images), test_images
        self.trained: dict[int, list[float]] = {}
        self.tested: list[float] = []

    def record(self, epoch: int, train_s: float, test_s: float | None) -> None:
        self.trained.setdefault(self.sizes[epoch], []).append(train_s)
        if test_s is not None:
            self.tested.append(test_s)

    def _train_s(self, size: int) -> float:
        if size in self.trained:
            return sum(self.trained[size]) / len(self.trained[size])
        area = sum(s * s * len(v) for s, v in self.trained.items())
        return sum(map(sum, self.trained.values())) / area * size * size if area else 0.0

    def _test_s(self) -> float:
        if self.tested:
            return sum(self.tested) / len(self.tested)
        return self.TEST_SHARE * self._train_s(max(self.sizes)) / self.train_images * self.test_images

    def eta(self, epoch: int) -> float:
        """Seconds left after epoch ``epoch`` (0-based)."""
        rest = range(epoch + 1, len(self.sizes))
        return sum(self._train_s(self.sizes[e]) for e in rest) + self._test_s() * sum(self.tests[e] for e in rest)


def compiler_missing(device: torch.device) -> str | None:
    """Why inductor cannot compile for ``device`` here (no C++ compiler for the CPU), or None."""
    if device.type != "cpu":
        return None
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as exc:  # noqa: BLE001 - whatever the search raises means: no compiler
        return f"no C++ compiler for inductor ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return None


class Compiled:
    """``torch.compile`` (inductor) of ``module``'s forward, used while the module is in training mode, eager in
    eval mode (the test pass, maps). Installed as the module's own ``forward`` (its state dict, parameters and
    hooks unchanged). :meth:`step` runs a training step and, when compiling or the compiled code fails (the
    backward is compiled at its first use), goes back to eager for good and runs the step again: ``notice``
    then holds the one line to show."""

    def __init__(self, module: nn.Module):
        self.module, self.eager = module, module.forward
        self.compiled = torch.compile(self.eager, backend="inductor")
        self.failed: str | None = None
        self.notice: str | None = None
        module.forward = self.forward

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed is None and self.module.training:
            return self.compiled(*args, **kwargs)
        return self.eager(*args, **kwargs)

    def fall_back(self, why: str) -> None:
        """Eager from now on; ``notice`` says why."""
        self.failed = why
        self.module.__dict__.pop("forward", None)
        self.notice = f"--compile: {why}; training goes on without it (eager)"
        log.warning(self.notice)

    def step(self, fn: Callable[[], T]) -> T:
        """``fn()`` (a whole training step, from zeroing the gradients on); run again eagerly when it fails while
        compiled. A failure that is not the compiler's fails again eagerly and is raised then."""
        if self.failed is not None:
            return fn()
        try:
            return fn()
        except (Cancelled, KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the compiled code: try once without it
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.fall_back(f"compiling failed ({type(exc).__name__}: {first[:160]})")
            return fn()


def compile_backbone(model: nn.Module, device: torch.device) -> tuple[Compiled | None, str]:
    """``--compile``: the model's backbone compiled for training (a :class:`Compiled`), or None and why not; and
    the line to show either way."""
    missing = compiler_missing(device)
    if missing is not None:
        log.warning("--compile: %s", missing)
        return None, f"--compile: {missing}; training goes on without it (eager)"
    try:
        compiled = Compiled(model.backbone)
    except Exception as exc:  # noqa: BLE001 - torch.compile itself unavailable (an old or stripped torch)
        return None, f"--compile: torch.compile is unavailable ({type(exc).__name__}: {exc}); training goes on eager"
    return compiled, "--compile: the backbone is compiled (inductor) at the first training step, which takes longer"


__all__ = ["SPEED_DEFAULTS", "PARTS_SPEED", "SPEED_HELP", "defaults_for", "parse_size_schedule",
           "format_size_schedule", "epoch_sizes", "tests_after", "speed_options", "describe_schedule", "describe_speed", "EpochClock",
           "compiler_missing", "Compiled", "compile_backbone"]
