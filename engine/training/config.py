"""The training configuration: a frozen dataclass validated on creation, saved with every run.

The CLI and the GUI both build a :class:`TrainConfig`; a run trained from either with the same settings is the
same model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NoReturn

from engine.errors import ConfigError
from engine.models.attention import ATTENTIONS
from engine.models.backbones import PADDINGS
from engine.training.config_help import FIELD_HELP
from engine.training.racnn_config import (RACNN_BEFORE_THIRDS, RACNN_DEFAULTS, RACNN_HALF_BEFORE,  # noqa: F401
                                          RACNN_OPTIONS, check_racnn)
from engine.training.speed import SPEED_DEFAULTS, SPEED_HELP, speed_options

METHODS = ("mcloss", "ce", "tasn", "parts", "racnn")
#: the shared-parts losses (PDiscoNet, docs/METHODS.md#shared-parts) and their weights as the authors train CUB;
#: ``extra`` may override any of them (and PDiscoFormer's tv, border, entropy, off by default)
PARTS_LOSS_WEIGHTS = {"ce": 2.0, "conc": 1000.0, "orth": 1.0, "equiv": 1.0, "pres": 1.0, "tv": 0.0, "border": 0.0,
                      "entropy": 0.0}
#: Keys of older saved configs and their names now (runs and configs written before keep loading).
RENAMED = {"val_fraction": "test_fraction"}
#: MC-Loss μ when fine-tuning a pretrained backbone and from scratch; λ = 10. The paper fine-tunes at 0.005, where
#: L_dis gets a small share of the cross-entropy's gradient and stays at chance (docs/RESULTS.md#mcloss-mu).
#: From scratch: the paper's 1.5.
MU_PRETRAINED, MU_SCRATCH = 0.5, 1.5
#: Weight of Fieldmark's concentration term for MC-Loss (engine.losses.mcloss.class_concentration; not the paper's)
#: when fine-tuning a pretrained backbone; from scratch 0 (not measured there: the demo trains without it).
#: Without it the true class's channels spread over most cells; the weights tried: docs/RESULTS.md#mcloss-spread.
MC_CONC_PRETRAINED = 3000.0
#: Options that older runs saved and no code reads any more: dropped when such a config is read back.
RETIRED = frozenset({"label_smoothing"})
#: shared parts (Adam): backbone + prototypes, classifier (the modulation learns at 10x the classifier). At 3x the
#: authors' 1e-4 / 1e-3 the part classifier barely learned in a CPU budget (docs/RESULTS.md#parts-runs).
PARTS_LR = (2e-4, 2e-2)
#: The parts method's image size, epochs and batch: K = 8 with the equivariance pass a fixed target
#: (PARTS_EQUIV_BACKPROP) at 448 px (28 x 28 maps, the authors' size), 14 epochs, batch 16, chosen against 336, 288
#: and 224 px on cub-parts-dev (docs/RESULTS.md#parts-runs). Other methods: 224 px, 10 epochs, batch 32.
PARTS_SIZE_EPOCHS_BATCH = (448, 14, 16)
OTHER_SIZE_EPOCHS_BATCH = (224, 10, 32)
#: How the backbone's convolutions pad, per method (docs/METHODS.md#mc-loss-border). Zero padding lets MC-Loss's
#: diversity term park part peaks on the frame's edge; replicate padding keeps them on the bird
#: (docs/RESULTS.md#mcloss-border).
DEFAULT_PADDING = {"mcloss": "replicate", "ce": "zeros", "tasn": "zeros", "parts": "zeros", "racnn": "zeros"}
#: Stride-16 maps (``fine``) per method. MC-Loss parts are better and its top-1 higher on 14 x 14 maps than on
#: 7 x 7 (docs/RESULTS.md#mcloss-border). CE keeps 7 x 7 (the Grad-CAM baseline); TASN's attention is already at
#: stride 8; RA-CNN's scales read their pooled features (docs/METHODS.md#racnn).
DEFAULT_FINE = {"mcloss": True, "ce": False, "tasn": False, "parts": True, "racnn": False}
#: The training photos' random rotation, up to ± this many degrees (every method). The PDiscoNet authors augment
#: with ±90° (as their equivariance transform); on cub-parts-dev it made the parts worse
#: (docs/RESULTS.md#equivariance).
DEFAULT_ROTATE = 0.0
#: Whether the shared-parts equivariance pass is back-propagated (the authors') or a fixed target. A fixed target
#: makes a parts step much cheaper (docs/RESULTS.md#parts-step); the time goes into a larger image
#: (PARTS_SIZE_EPOCHS_BATCH), which on three seeds gave parts as good on average and steadier
#: (docs/RESULTS.md#parts-runs).
PARTS_EQUIV_BACKPROP = False
#: Shared parts zoom to the bird (engine.models.shared_parts, docs/METHODS.md#zoom): the margin around the bird,
#: a share of its side; 0 is off. Measured on the validation split (docs/RESULTS.md#zoom).
DEFAULT_ZOOM = 0.0
#: GAIN's attention mining (``--gain``, engine.losses.gain, docs/METHODS.md#gain): the paper's α, σ and ω.
GAIN_TERMS = {"gain_alpha": 1.0, "gain_sigma": 0.5, "gain_omega": 10.0}




@dataclass(frozen=True)
class TrainConfig:
    data: str
    out: str
    model: str = "mobilenet_v2"
    method: str = "mcloss"
    xi: int = 3
    parts: int = 8  # shared parts K (method parts)
    fine: bool | None = None  # stride-16 features (last stage upsampled + the stage before); None: DEFAULT_FINE
    padding: str | None = None  # the backbone convolutions' padding; None: DEFAULT_PADDING of the method
    mu: float | None = None  # None: MU_PRETRAINED / MU_SCRATCH
    lam: float = 10.0
    mc_conc: float | None = None  # MC-Loss concentration weight; None: MC_CONC_PRETRAINED fine-tuning, 0 from scratch
    rotate: float | None = None  # training photos rotated up to ± degrees; None: DEFAULT_ROTATE
    equiv_backprop: bool | None = None  # parts: back-propagate the equivariance pass; None: PARTS_EQUIV_BACKPROP
    zoom: float | None = None  # parts: zoom to the bird with this margin (0 off); None: DEFAULT_ZOOM
    gain: bool | None = None  # GAIN attention mining (ce, mcloss, parts); None: off
    gain_alpha: float | None = None  # GAIN's α, σ, ω; None: GAIN_TERMS with gain, None without
    gain_sigma: float | None = None
    gain_omega: float | None = None
    attention: str | None = None  # cbam or residual blocks on a partnet backbone; None: "none"
    # speed (engine.training.speed, each None: off): frozen BatchNorm, the first N stages frozen, torch.compile,
    # the early epochs at smaller sizes ("0.5:320"), the test pass after every N-th epoch
    freeze_bn: bool | None = None
    freeze_stages: int | None = None
    compile: bool | None = None
    size_schedule: str | None = None
    test_every: int | None = None
    epochs: int | None = None  # None: 14 for parts, else 10 (PARTS_SIZE_EPOCHS_BATCH)
    img_size: int | None = None  # None: 448 for parts, else 224
    batch_size: int | None = None  # None: 16 for parts, else 32
    pretrained: str | None = None
    lr_backbone: float | None = None  # None: 0.001 fine-tuning, 0.05 from scratch
    lr_head: float | None = None  # None: 0.05 (part channels: projection + BN); TASN fine-tuning 0.01
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 0.5
    test_fraction: float = 0.2  # share of each class held out for testing (class folders without split.csv)
    validation_fraction: float = 0.0  # share of each class's training photos held out for choosing settings
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    amp: bool = True
    per_sample_mask: bool = False
    part_channels: str = "auto"
    crop_scale: tuple[float, float] = (0.35, 1.0)
    cache_mb: int | None = None  # None: as much as the memory available allows (engine.training.memory)
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific options (e.g. TASN sizes)

    def __post_init__(self) -> None:
        """Check every field (a ConfigError naming the field, its value and what to do) and fill the defaults."""
        _check_names(self)
        defaults = PARTS_SIZE_EPOCHS_BATCH if self.method == "parts" else OTHER_SIZE_EPOCHS_BATCH
        for name, value in zip(("img_size", "epochs", "batch_size"), defaults):
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        _check_model(self)
        _check_sizes(self)
        _check_training(self)
        for k, v in {**_filled(self), **attention_options(self), **speed_options(self)}.items():
            object.__setattr__(self, k, v)
        if self.method == "racnn":  # RA-CNN's options saved with their values, so a resume keeps them
            object.__setattr__(self, "extra", {**RACNN_DEFAULTS, **self.extra})

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["crop_scale"] = list(self.crop_scale)
        return d

    @staticmethod
    def upgrade_dict(d: dict[str, Any]) -> dict[str, Any]:
        """A saved config with the keys of older versions renamed (``val_fraction`` is ``test_fraction``), the
        retired ones (``label_smoothing``, which no loss read) dropped, ``padding`` "zeros" when it predates
        the option, ``fine`` what the defaults gave before MC-Loss's default changed (on for parts only),
        ``mc_conc`` 0 (no concentration term), ``rotate`` 0, ``gain`` off, ``attention`` none and, for parts,
        ``equiv_backprop`` true (the authors' way) when they predate those options; the speed options off where a
        config predates them or holds None for one (written before parts had defaults of its own)."""
        d = {k: v for k, v in d.items() if k not in RETIRED}
        for old, new in RENAMED.items():
            if old in d:
                value = d.pop(old)
                d.setdefault(new, value)
        if d and "padding" not in d:  # saved before the option: every backbone padded with zeros then
            d["padding"] = "zeros"
        if d and "mc_conc" not in d:  # saved before the option: no concentration term then
            d["mc_conc"] = 0.0
        if d and "rotate" not in d:  # saved before the option: no rotation then
            d["rotate"] = 0.0
        if d and "equiv_backprop" not in d:  # saved before the option: parts back-propagated both passes then
            d["equiv_backprop"] = True if d.get("method") == "parts" else None
        if d and "zoom" not in d:  # saved before the option: no zoom then
            d["zoom"] = 0.0
        if d and "gain" not in d:  # saved before the options: no GAIN and no attention blocks then
            d.update(gain=False, **dict.fromkeys(GAIN_TERMS))
        if d and "attention" not in d:
            d["attention"] = "none"
        if d and d.get("method") == "racnn" and "apn_gradient" not in (d.get("extra") or {}):
            d["extra"] = {**RACNN_BEFORE_THIRDS, **(d.get("extra") or {})}  # saved before: the defaults were these
        if d and d.get("method") == "racnn" and "apn_half" not in d["extra"]:
            d["extra"] = {**d["extra"], "apn_half": RACNN_HALF_BEFORE}
        if d and "fine" not in d:  # saved before the option: 7 x 7 maps then (also MC-Loss, whose default is now on)
            d["fine"] = d.get("method") == "parts"
        if d:  # saved before the speed options, or before parts had defaults of its own: all off then
            for k, v in SPEED_DEFAULTS.items():
                if d.get(k) is None:
                    d[k] = v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = cls.upgrade_dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}: this run was written by another Fieldmark version")
        if "crop_scale" in d:
            d["crop_scale"] = tuple(d["crop_scale"])
        return cls(**d)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """One line per field, for forms and --help."""
        return {**FIELD_HELP, **SPEED_HELP}


def _bad(cfg: TrainConfig, name: str, why: str) -> NoReturn:
    raise ConfigError(f"{name}={getattr(cfg, name)!r}: {why}")


def _check_names(cfg: TrainConfig) -> None:
    """The data and run folders are given and the method is known."""
    if not cfg.data:
        _bad(cfg, "data", "give the data folder")
    if not cfg.out:
        _bad(cfg, "out", "give the run folder to write")
    if cfg.method not in METHODS:
        _bad(cfg, "method", f"use one of {', '.join(METHODS)}")


def _check_model(cfg: TrainConfig) -> None:
    """The model is registered and fits the method (TASN models with tasn alone), and so do fine and padding."""
    from engine.models import get_spec

    spec = get_spec(cfg.model)  # raises ConfigError naming the model
    if cfg.method == "tasn" and spec.family != "tasn":
        _bad(cfg, "model", "the tasn method needs a TASN model (tasn_resnet18, tasn_resnet50, tasn_mobilenet_v2)")
    if cfg.method != "tasn" and spec.family == "tasn":
        _bad(cfg, "method", f"model {cfg.model} is a TASN model: use --method tasn")
    if cfg.method == "tasn" and cfg.fine:
        _bad(cfg, "fine", "TASN's attention maps are already at stride 8, finer than --fine's 16: leave it off for "
                          "tasn")
    if cfg.padding is not None and cfg.padding not in PADDINGS:
        _bad(cfg, "padding", f"use one of {', '.join(PADDINGS)}")
    if cfg.method == "tasn" and cfg.padding not in (None, "zeros"):
        _bad(cfg, "padding", "TASN keeps torchvision's zero padding: leave it unset for tasn")
    check_racnn(cfg, spec.family)


def _check_sizes(cfg: TrainConfig) -> None:
    """The model's and the loss's sizes and weights, and the epochs, image size and batch, within their ranges."""
    if not 1 <= cfg.parts <= 64:
        _bad(cfg, "parts", "the number of shared parts K must be between 1 and 64 (the paper uses 4, 8 or 16)")
    unknown = sorted(k for k in cfg.extra if k.startswith("w_") and k[2:] not in PARTS_LOSS_WEIGHTS)
    if unknown:
        _bad(cfg, "extra", f"unknown loss weight {unknown[0]!r}: use w_ + one of {', '.join(PARTS_LOSS_WEIGHTS)}")
    if not 1 <= cfg.xi <= 64:
        _bad(cfg, "xi", "channels per class must be between 1 and 64 (the paper uses 3)")
    if not 1 <= cfg.epochs <= 100000:
        _bad(cfg, "epochs", "must be between 1 and 100000")
    if not 32 <= cfg.img_size <= 2048:
        _bad(cfg, "img_size", "must be between 32 and 2048 pixels")
    if not 1 <= cfg.batch_size <= 4096:
        _bad(cfg, "batch_size", "must be between 1 and 4096 images")
    for name in ("lr_backbone", "lr_head", "mu"):
        v = getattr(cfg, name)
        if v is not None and not (v >= 0 and v < 100):
            _bad(cfg, name, "must be a number from 0 up to (not including) 100")
    if not cfg.lam >= 0:
        _bad(cfg, "lam", "must be 0 or more (the paper uses 10)")
    if cfg.mc_conc is not None and not 0 <= cfg.mc_conc <= 1e6:
        _bad(cfg, "mc_conc", f"must be a number from 0 (off) to 1e6 (default {MC_CONC_PRETRAINED:g} when fine-tuning)")


def _check_training(cfg: TrainConfig) -> None:
    """Zoom, rotation, the optimizer's and the split's shares, warm-up, workers, cache, crop and part channels."""
    if cfg.zoom is not None and not 0 <= cfg.zoom <= 1:
        _bad(cfg, "zoom", "must be 0 (off) or the margin around the bird, a share of its side up to 1 (e.g. 0.15)")
    if cfg.zoom and cfg.method != "parts":
        _bad(cfg, "zoom", f"zooming to the bird is a shared-parts option: leave it off for {cfg.method}, or use "
                          "--method parts")
    if cfg.rotate is not None and not 0 <= cfg.rotate <= 180:
        _bad(cfg, "rotate", "must be a number of degrees from 0 (no rotation) to 180")
    if not 0 <= cfg.weight_decay < 1:
        _bad(cfg, "weight_decay", "must be in [0, 1)")
    if not 0 <= cfg.momentum < 1:
        _bad(cfg, "momentum", "must be in [0, 1)")
    if not 0 < cfg.test_fraction < 1:
        _bad(cfg, "test_fraction", "must be between 0 and 1 (e.g. 0.2)")
    if not 0 <= cfg.validation_fraction < 1:
        _bad(cfg, "validation_fraction", "must be 0 (none) or a share below 1 of each class's training photos "
                                         "(e.g. 0.2)")
    if cfg.warmup_epochs < 0:
        _bad(cfg, "warmup_epochs", "must be non-negative")
    if cfg.workers < 0:
        _bad(cfg, "workers", "must be 0 (load in the training process) or more")
    if cfg.cache_mb is not None and not 0 <= cfg.cache_mb <= 2 ** 30:
        _bad(cfg, "cache_mb", "must be 0 (no image cache) or more megabytes, or None (sized from the free memory)")
    lo, hi = cfg.crop_scale
    if not 0 < lo <= hi <= 1:
        _bad(cfg, "crop_scale", "must be two fractions 0 < min <= max <= 1")
    if cfg.part_channels not in ("auto", "project", "split"):
        _bad(cfg, "part_channels", "use auto, project or split")


def _filled(cfg: TrainConfig) -> dict[str, Any]:
    """The fields left to their defaults (None) given their values, which depend on the method and on training
    from scratch or fine-tuning."""
    scratch = cfg.pretrained in (None, "", "none")
    return {
        "pretrained": None if scratch else cfg.pretrained,
        "mu": cfg.mu if cfg.mu is not None else (MU_SCRATCH if scratch else MU_PRETRAINED),
        "mc_conc": float(cfg.mc_conc) if cfg.mc_conc is not None else 0.0 if scratch else MC_CONC_PRETRAINED,
        "fine": bool(cfg.fine) if cfg.fine is not None else DEFAULT_FINE[cfg.method],
        "padding": cfg.padding if cfg.padding is not None else DEFAULT_PADDING[cfg.method],
        "rotate": float(cfg.rotate) if cfg.rotate is not None else DEFAULT_ROTATE,
        "zoom": 0.0 if cfg.method != "parts" else float(cfg.zoom) if cfg.zoom is not None else DEFAULT_ZOOM,
        # only the parts method has an equivariance pass
        "equiv_backprop": None if cfg.method != "parts" else (
            bool(cfg.equiv_backprop) if cfg.equiv_backprop is not None else PARTS_EQUIV_BACKPROP),
        "lr_backbone": cfg.lr_backbone if cfg.lr_backbone is not None else (
            PARTS_LR[0] if cfg.method == "parts" else 0.05 if scratch else 0.001),
        # The part networks' new layers (1x1 projection + BN + linear) learn slowly at 0.01, so 0.05. TASN's
        # heads are plain linear layers on large pooled features, where 10x diverges: 0.01
        # (docs/RESULTS.md#head-rate).
        "lr_head": cfg.lr_head if cfg.lr_head is not None else (
            PARTS_LR[1] if cfg.method == "parts" else 0.01 if cfg.method in ("tasn", "racnn") and not scratch
            else 0.05),
        "crop_scale": tuple(float(v) for v in cfg.crop_scale),
    }


def attention_options(cfg: TrainConfig) -> dict[str, Any]:
    """The GAIN and attention-block settings of ``cfg`` checked and filled (ConfigError naming the field, the
    value and what to do): GAIN's α, σ, ω the paper's with ``gain`` and None without; ``attention`` "none"."""
    from engine.models import get_spec

    def bad(name: str, why: str) -> None:
        raise ConfigError(f"{name}={getattr(cfg, name)!r}: {why}")

    gain, attention = bool(cfg.gain), cfg.attention if cfg.attention is not None else "none"
    if gain and cfg.method in ("tasn", "racnn"):
        own = {"tasn": "TASN", "racnn": "RA-CNN"}[cfg.method]
        bad("gain", f"GAIN mines the attention of a classifier's Grad-CAM and {own} has attention of its own: use "
                    "--method ce, mcloss or parts, or leave --gain out")
    limits = {"gain_alpha": (lambda v: 0 <= v <= 1000, "the attention-mining weight α is from 0 to 1000 (the "
                                                         "paper's 1)"),
              "gain_sigma": (lambda v: 0 < v < 1, "the mask's threshold σ is between 0 and 1, on the attention "
                                                  "scaled to [0, 1] (the paper's 0.5)"),
              "gain_omega": (lambda v: 0 < v <= 1000, "the mask's steepness ω is above 0 and at most 1000 (the "
                                                      "paper's 10)")}
    for name, (ok, why) in limits.items():
        value = getattr(cfg, name)
        if value is not None and not gain:
            bad(name, "is a GAIN setting: add --gain, or leave it out")
        if value is not None and not ok(value):
            bad(name, why)
    if attention not in ATTENTIONS:
        bad("attention", f"use one of {', '.join(ATTENTIONS)}")
    family = get_spec(cfg.model).family
    if attention != "none" and (cfg.method in ("tasn", "racnn") or family in ("tasn", "racnn")):
        kind = "an RA-CNN" if "racnn" in (cfg.method, family) else "a TASN"
        bad("attention", f"attention blocks go on the partnet backbones and {cfg.model} is {kind} model: leave "
                         "--attention out, or train a partnet model (fieldmark models) with ce, mcloss or parts")
    terms = {k: (float(getattr(cfg, k)) if getattr(cfg, k) is not None else v) if gain else None
             for k, v in GAIN_TERMS.items()}
    return {"gain": gain, **terms, "attention": attention}
