"""Pretrained weights: a torchvision weights name (downloaded into the torch cache when online) or a local
``.pth`` / ``.safetensors`` file. Pickles are read with ``weights_only=True``: a file that would run code is refused.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from engine.errors import WeightsError

log = logging.getLogger(__name__)


def looks_like_path(spec: str) -> bool:
    return spec.endswith((".pth", ".pt", ".safetensors", ".bin")) or "/" in spec or "\\" in spec


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.pth``/``.pt`` (weights only) or ``.safetensors``. Raises WeightsError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist: check the path")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{str(path)!r} is not a readable safetensors file ({exc}): "
                               "the file may be truncated; copy it again") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"{str(path)!r} was refused: it holds Python objects that could run code when loaded "
                           "(only plain tensors are accepted). Save a state dict (model.state_dict()) or use "
                           ".safetensors") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsError(f"{str(path)!r} is not a readable PyTorch weights file ({exc})") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{str(path)!r} holds no state dict of tensors (found {type(obj).__name__}): "
                           "save model.state_dict()")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def torchvision_state_dict(weights_enum, spec: str) -> dict[str, torch.Tensor]:
    """Resolve ``spec`` ("DEFAULT", "IMAGENET1K_V1", "ResNet50_Weights.IMAGENET1K_V2") and fetch the weights."""
    name = spec.split(".")[-1]
    try:
        weights = weights_enum[name] if name != "DEFAULT" else weights_enum.DEFAULT
    except KeyError:
        options = ", ".join(["DEFAULT"] + [w.name for w in weights_enum])
        raise WeightsError(f"pretrained {spec!r} is no weights name for this backbone: use one of {options}, "
                           "or a local .pth/.safetensors file") from None
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:  # urllib / ssl / socket errors all mean "could not download"
        hub = torch.hub.get_dir()
        raise WeightsError(
            f"could not download {weights_enum.__name__}.{weights.name} ({type(exc).__name__}: {exc}). "
            f"Offline? Pass a local file instead: --pretrained /path/to/weights.pth (a torchvision state dict), "
            f"or put the file into {hub}/checkpoints/ ({Path(weights.url).name})") from exc


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
              ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``module``: every key of ``module`` must be present with the right shape,
    except those starting with ``ignore_prefixes`` (e.g. the ImageNet classifier)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(ignore_prefixes)]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape and not k.startswith(ignore_prefixes)]
    if missing or wrong:
        detail = (f"{len(missing)} missing (e.g. {', '.join(missing[:3])})" if missing else "") + \
                 (f"; shape mismatch: {', '.join(wrong[:3])}" if wrong else "")
        raise WeightsError(f"weights {source!r} do not fit this backbone: {detail}. "
                           "Pick weights made for the same architecture")
    filtered = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(filtered, strict=False)
    log.info("loaded %d tensors from %s", len(filtered), source)
