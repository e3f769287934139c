"""The training configuration: a frozen dataclass validated on creation, saved with every run.

The CLI and the GUI both build a :class:`TrainConfig`; a run trained from either with the same settings is the
same model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError

METHODS = ("mcloss", "ce", "tasn")
#: MC-Loss paper values: μ = 0.005 when fine-tuning a pretrained backbone, 1.5 from scratch; λ = 10.
MU_PRETRAINED, MU_SCRATCH = 0.005, 1.5


@dataclass(frozen=True)
class TrainConfig:
    data: str
    out: str
    model: str = "mobilenet_v2"
    method: str = "mcloss"
    xi: int = 3
    mu: float | None = None  # None: the paper's value for pretrained / from-scratch training
    lam: float = 10.0
    epochs: int = 10
    img_size: int = 224
    batch_size: int = 32
    pretrained: str | None = None
    lr_backbone: float | None = None  # None: 0.001 fine-tuning, 0.05 from scratch
    lr_head: float | None = None  # None: 0.05 (part channels: projection + BN); TASN fine-tuning 0.01
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    val_fraction: float = 0.2
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
        def bad(name: str, why: str) -> None:
            raise ConfigError(f"{name}={getattr(self, name)!r}: {why}")

        if not self.data:
            bad("data", "give the data folder")
        if not self.out:
            bad("out", "give the run folder to write")
        if self.method not in METHODS:
            bad("method", f"use one of {', '.join(METHODS)}")
        from engine.models import get_spec

        spec = get_spec(self.model)  # raises ConfigError naming the model
        if self.method == "tasn" and spec.family != "tasn":
            bad("model", "the tasn method needs a TASN model (tasn_resnet18, tasn_resnet50, tasn_mobilenet_v2)")
        if self.method != "tasn" and spec.family == "tasn":
            bad("method", f"model {self.model} is a TASN model: use --method tasn")
        if not 1 <= self.xi <= 64:
            bad("xi", "channels per class must be between 1 and 64 (the paper uses 3)")
        if self.epochs < 1 or self.epochs > 100000:
            bad("epochs", "must be at least 1")
        if not 32 <= self.img_size <= 2048:
            bad("img_size", "must be between 32 and 2048 pixels")
        if self.batch_size < 1 or self.batch_size > 4096:
            bad("batch_size", "must be at least 1")
        for name in ("lr_backbone", "lr_head", "mu"):
            v = getattr(self, name)
            if v is not None and not (v >= 0 and v < 100):
                bad(name, "must be a non-negative number")
        if self.lam < 0:
            bad("lam", "must be non-negative (the paper uses 10)")
        if not 0 <= self.weight_decay < 1:
            bad("weight_decay", "must be in [0, 1)")
        if not 0 <= self.momentum < 1:
            bad("momentum", "must be in [0, 1)")
        if not 0 <= self.label_smoothing < 1:
            bad("label_smoothing", "must be in [0, 1)")
        if not 0 < self.val_fraction < 1:
            bad("val_fraction", "must be between 0 and 1 (e.g. 0.2)")
        if self.warmup_epochs < 0:
            bad("warmup_epochs", "must be non-negative")
        if self.workers < 0:
            bad("workers", "must be 0 (load in the training process) or more")
        if self.cache_mb is not None and not 0 <= self.cache_mb <= 2 ** 30:
            bad("cache_mb", "must be 0 (no image cache) or more megabytes, or None (sized from the free memory)")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            bad("crop_scale", "must be two fractions 0 < min <= max <= 1")
        if self.part_channels not in ("auto", "project", "split"):
            bad("part_channels", "use auto, project or split")
        scratch = self.pretrained in (None, "", "none")
        fill = {
            "pretrained": None if scratch else self.pretrained,
            "mu": self.mu if self.mu is not None else (MU_SCRATCH if scratch else MU_PRETRAINED),
            "lr_backbone": self.lr_backbone if self.lr_backbone is not None else (0.05 if scratch else 0.001),
            # The part networks' new layers (1x1 projection + BN + linear) learn slowly at 0.01: MC-Loss fine-tuned
            # on birds-dev reached 80.0 % in 6 epochs at 0.01 and 91.3 % at 0.05 (README). TASN's heads are plain
            # linear layers on large pooled features, where 0.1 diverges (shared/weights/README.md): 0.01.
            "lr_head": self.lr_head if self.lr_head is not None else (
                0.01 if self.method == "tasn" and not scratch else 0.05),
            "crop_scale": tuple(float(v) for v in self.crop_scale),
        }
        for k, v in fill.items():
            object.__setattr__(self, k, v)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["crop_scale"] = list(self.crop_scale)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}: this run was written by another Fieldmark version")
        d = dict(d)
        if "crop_scale" in d:
            d["crop_scale"] = tuple(d["crop_scale"])
        return cls(**d)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """One line per field, for forms and --help."""
        return dict(_HELP)


_HELP = {
    "data": "image folder (class sub-folders, train/test folders or CUB_200_2011)",
    "out": "run folder to write",
    "model": "registered model name (fieldmark models)",
    "method": "mcloss (mutual-channel loss), ce (plain cross-entropy) or tasn",
    "xi": "channels per class, ξ (paper: 3)",
    "mu": "MC-Loss weight μ (paper: 0.005 fine-tuning, 1.5 from scratch)",
    "lam": "MC-Loss diversity weight λ (paper: 10)",
    "epochs": "number of passes over the training images",
    "img_size": "training image size in pixels",
    "batch_size": "images per step",
    "pretrained": "torchvision weights name (DEFAULT, IMAGENET1K_V1) or a local .pth/.safetensors file",
    "lr_backbone": "learning rate of the backbone (default 0.001 fine-tuning, 0.05 from scratch)",
    "lr_head": "learning rate of the new layers (default 0.05; TASN fine-tuning 0.01)",
    "seed": "random seed (split, initialisation, augmentation)",
    "device": "auto, cpu, cuda, cuda:N or mps",
}
