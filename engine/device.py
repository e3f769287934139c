"""The one place that resolves devices: "auto" means CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch

from engine.errors import ConfigError


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
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'' if n == 1 else 's'})"


def amp_dtype(dev: torch.device) -> torch.dtype | None:
    """Mixed precision where the device gains from it: bfloat16/float16 on CUDA, none on CPU/MPS."""
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


#: Registry models whose training steps are faster on the CPU with channels_last memory (the same arithmetic,
#: another layout for oneDNN's convolutions). MobileNetV2, one thread, torch 2.14.1, CPU seconds of one training
#: step with SGD, interleaved, medians of 5 (2026-12-07, benchmarks/bench_speed.py; docs/RESULTS.md#speed):
#: CE at 224 px, B=16: 1.91 s against 2.50 s contiguous (1.31x); CE at 448 px: 7.38 against 9.01 s (1.22x);
#: the shared-parts step at 448 px (fine features, the equivariance pass): 9.37 against 12.20 s (1.30x). Not
#: measured for the other backbones, TASN or RA-CNN (grid sampling): they stay contiguous on the CPU.
CHANNELS_LAST_CPU = frozenset({"mobilenet_v2"})


def uses_channels_last(dev: torch.device, model: str | None = None) -> bool:
    """channels_last pays on CUDA tensor cores, and on the CPU for the models of :data:`CHANNELS_LAST_CPU`."""
    return dev.type == "cuda" or (dev.type == "cpu" and model in CHANNELS_LAST_CPU)


def local_device(local_rank: int, name: str = "auto") -> torch.device:
    """The device of one process of a multi-process (DDP) job: ``cuda:LOCAL_RANK`` when ``name`` is "auto" or
    "cuda" and CUDA is there, else the CPU (Apple MPS has no multi-process backend; "cuda:N" names are refused,
    since every process would share GPU N)."""
    if name in (None, "", "auto", "cuda"):
        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            if local_rank >= count:
                raise ConfigError(f"process with LOCAL_RANK={local_rank} has no GPU of its own ({count} visible): "
                                  f"start at most {count} processes per node")
            return torch.device("cuda", local_rank)
        if name == "cuda":
            raise ConfigError("device 'cuda' asked for, but CUDA is not available here: use --device cpu or auto")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device {name!r} cannot be shared by the processes of a distributed run: use auto, cuda "
                      "(each process takes cuda:LOCAL_RANK) or cpu")
