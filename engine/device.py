"""The one place that resolves devices: "auto" means CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """Return a torch device for ``name`` ("auto", "cpu", "cuda", "cuda:1", "mps")."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device {name!r} is not a device name: use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here: use --device cpu or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r} asked for, but Apple MPS is not available here: use --device cpu or auto")
    return dev


def describe_device(dev: torch.device) -> str:
    """A short human name: "CPU (2 threads)", "CUDA: NVIDIA H100", "Apple MPS"."""
    if dev.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(dev)}"
    if dev.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


def amp_dtype(dev: torch.device) -> torch.dtype | None:
    """Mixed precision where the device gains from it: bfloat16/float16 on CUDA, none on CPU/MPS."""
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def uses_channels_last(dev: torch.device) -> bool:
    """channels_last pays on CUDA tensor cores; on CPU it is neutral or slower for these nets."""
    return dev.type == "cuda"
