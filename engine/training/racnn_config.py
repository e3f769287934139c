"""RA-CNN's training options (``TrainConfig.extra``): their defaults, what older saved configs trained with, and their
checks (docs/METHODS.md#racnn)."""

from __future__ import annotations

from typing import Any, NoReturn

from engine.errors import ConfigError
from engine.models.racnn import (APN_GRADIENT, APN_HALF, APN_LR, APN_WARMUP, GRADIENTS, INIT_HALF, MARGIN,
                                 MIN_HALF)

#: RA-CNN's APN settings (``extra``), chosen on cub-parts-dev's validation split (docs/METHODS.md#racnn): the model
#: module's. A racnn config saved before ``apn_gradient`` existed trained with RACNN_BEFORE_THIRDS, and upgrade_dict
#: gives it those (and one saved before ``apn_half``, RACNN_HALF_BEFORE).
RACNN_DEFAULTS = {"apn_warmup": APN_WARMUP, "apn_lr": APN_LR, "apn_gradient": APN_GRADIENT, "apn_half": APN_HALF}
RACNN_BEFORE_THIRDS = {"apn_warmup": 20, "apn_lr": 1e-4, "apn_gradient": "boxcar"}
#: The first squares' half side of a racnn config saved before ``apn_half`` existed: the paper's ¼.
RACNN_HALF_BEFORE = INIT_HALF
#: Every ``extra`` key that is an RA-CNN option (what the Train form drops when an opened RA-CNN run's config
#: changes method).
RACNN_OPTIONS = (*RACNN_DEFAULTS, "margin", "scale_size")


def _bad(cfg: Any, name: str, why: str) -> NoReturn:
    raise ConfigError(f"{name}={getattr(cfg, name)!r}: {why}")


def check_racnn(cfg: Any, family: str) -> None:
    """RA-CNN models with racnn alone, without fine maps or another padding; its options in ``extra`` in range
    (``cfg``: a :class:`~engine.training.config.TrainConfig` being checked)."""
    from engine.models import list_models

    if cfg.method == "racnn" and family != "racnn":
        names, base = list_models("racnn"), cfg.model.removeprefix("tasn_")
        hint = f"racnn_{base}" if f"racnn_{base}" in names else ", ".join(names)
        _bad(cfg, "model", f"the racnn method needs an RA-CNN model: use --model {hint}")
    if cfg.method != "racnn" and family == "racnn":
        _bad(cfg, "method", f"model {cfg.model} is an RA-CNN model: use --method racnn")
    if cfg.method != "racnn":
        for key, what in (("scale_size", "the side its scales see"), ("apn_gradient", "how its squares move"),
                          ("apn_half", "its first squares' size")):
            if key in cfg.extra:
                raise ConfigError(f"{key}={cfg.extra[key]!r}: --{key.replace('_', '-')} is RA-CNN's ({what}): use "
                                  "it with --method racnn, or leave it out")
        return
    if cfg.fine:
        _bad(cfg, "fine", "RA-CNN's scales read their pooled features, not stride-16 maps: leave it off for racnn")
    if cfg.padding not in (None, "zeros"):
        _bad(cfg, "padding", "RA-CNN keeps torchvision's zero padding: leave it unset for racnn")
    warmup, margin = cfg.extra.get("apn_warmup", RACNN_DEFAULTS["apn_warmup"]), cfg.extra.get("margin", MARGIN)
    if not isinstance(warmup, int) or isinstance(warmup, bool) or not 0 <= warmup <= 10 ** 6:
        raise ConfigError(f"apn_warmup={warmup!r}: give the APN warm-up as a whole number of steps, 0 or more "
                          f"(default {RACNN_DEFAULTS['apn_warmup']})")
    if not isinstance(margin, (int, float)) or not 0 <= margin <= 1:
        raise ConfigError(f"margin={margin!r}: the ranking loss's margin is a probability gap from 0 to 1 (the "
                          "paper's 0.05)")
    apn_lr = cfg.extra.get("apn_lr", RACNN_DEFAULTS["apn_lr"])
    if isinstance(apn_lr, bool) or not isinstance(apn_lr, (int, float)) or not 0 <= apn_lr <= 1:
        raise ConfigError(f"apn_lr={apn_lr!r}: give the APNs' learning rate as a number from 0 to 1 (default "
                          f"{RACNN_DEFAULTS['apn_lr']:g})")
    gradient = cfg.extra.get("apn_gradient", RACNN_DEFAULTS["apn_gradient"])
    if gradient not in GRADIENTS:
        raise ConfigError(f"apn_gradient={gradient!r}: use boxcar (the ranking loss's gradient through the boxcar "
                          "mask) or thirds (the authors' rule on the crop's gradient)")
    half = cfg.extra.get("apn_half", RACNN_DEFAULTS["apn_half"])
    if isinstance(half, bool) or not isinstance(half, (int, float)) or not MIN_HALF < half < 0.5:
        raise ConfigError(f"apn_half={half!r}: give the half side of the first squares as a share of the scale's side, "
                          f"above {MIN_HALF:.3f} (the least square, a third of the side) and under 0.5 (the whole "
                          f"side); the paper's is {INIT_HALF:g} (default {APN_HALF:g})")
    side = cfg.extra.get("scale_size")
    if side is not None and (isinstance(side, bool) or not isinstance(side, int) or not 32 <= side <= cfg.img_size):
        raise ConfigError(f"scale_size={side!r}: give the side the scales' networks see as whole pixels from 32 to "
                          f"the photo's --img-size {cfg.img_size} (e.g. --img-size 448 --scale-size 224)")
