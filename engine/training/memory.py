"""Memory that follows the machine: how much a training run takes, measured before it starts, and what it may
take of the memory this machine has free.

Where a run's memory goes (mobilenet_v2, CE, 224 px, batch 32 on the CPU; 1,487 CUB photos, measured with the
launcher's malloc settings; docs/RESULTS.md#memory):

* the interpreter with torch and the engine imported: about 0.9 GB, before anything else;
* the image cache: decoded photos at the resize side (256 px for 224), about 0.26 MB a photo (0.38 GB here);
* one training step: the tensors autograd saves for the backward pass, 75 MB an image (2.4 GB at batch 32), plus
  gradients and temporaries while it runs, and what the allocator keeps of them: the heap grew to 1.36× the saved
  tensors after the first step (:data:`STEP_FACTOR` covers it);
* the test pass: no autograd, so a fraction of a training step at the same batch (it reuses the step's memory);
* weights, gradients and optimizer state: 3× the parameters (small next to the rest: 40 MB for mobilenet_v2).

So it peaked at 5.2 GB, whatever the machine had. :func:`plan` bounds the step and the cache by the memory actually available
(``psutil.virtual_memory().available``) less a reserve for the window and the rest of the machine: when the step
does not fit, the batch is run in micro-batches whose gradients add up (each normalised by BatchNorm on its own,
as each process's share is under DistributedDataParallel on the CPU); the cache takes what is left, and a split
that does not fit is decoded from disk at each use instead. On CUDA the step lives on the GPU, and only the cache
is planned here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from engine.errors import ConfigError

log = logging.getLogger(__name__)

MB = 2 ** 20
#: A training step's peak host memory, as a multiple of the tensors saved for backward: gradients and temporaries
#: during the backward pass, and the heap the allocator keeps. Measured over a whole epoch with its test pass on
#: cub-parts-dev (mobilenet_v2, 224 px): 1.34× at batch 32, 1.53× in micro-batches of 16 (docs/RESULTS.md#memory).
STEP_FACTOR = 1.8
#: Memory left to the rest of the machine (the window, the desktop): this or a tenth of the RAM, the larger.
RESERVE_MB = 1024


@dataclass(frozen=True)
class MemoryPlan:
    """What a run may use, in MB (see the module docstring). ``micro_batch == batch``: no micro-batches."""

    available_mb: int  # free at the start (MemAvailable), shared by the processes of this machine
    budget_mb: int  # this process's share, less the reserve
    batch: int  # images per step and process
    micro_batch: int  # images per forward/backward pass
    step_mb: int  # estimated peak of one training step at micro_batch (0 on CUDA: GPU memory)
    state_mb: int  # weights, gradients, optimizer state
    cache_mb: int  # what the image cache may take
    eval_batch: int  # images per test batch

    def to_dict(self) -> dict:
        return asdict(self)

    def notes(self) -> list[str]:
        """What the plan changed to fit (for the user): micro-batches."""
        if self.micro_batch == self.batch:
            return []
        return [f"memory: a step of {self.batch} images would need about "
                f"{self.step_mb * self.batch // self.micro_batch + self.state_mb} MB, {self.budget_mb} MB are free "
                f"for this run: it runs in micro-batches of {self.micro_batch} (their gradients add up to the "
                f"batch's; BatchNorm normalises {self.micro_batch} images at a time)"]

    def describe(self) -> str:
        def gb(v: int) -> str:
            return f"{v / 1024:.1f} GB"

        step = (f"a training step takes about {gb(self.step_mb)}" if self.step_mb else "training steps run on the GPU")
        if self.micro_batch < self.batch:
            step += f" in micro-batches of {self.micro_batch} images (of {self.batch} a step)"
        return (f"memory: {gb(self.available_mb)} available, {gb(self.budget_mb)} for this run; {step}; the image "
                f"cache may take {gb(self.cache_mb)}")


def available_mb() -> int:
    """Memory the machine can give without swapping (psutil's ``available``: free + reclaimable caches)."""
    import psutil

    return int(psutil.virtual_memory().available // MB)


def total_mb() -> int:
    import psutil

    return int(psutil.virtual_memory().total // MB)


def local_processes() -> int:
    """How many training processes share this machine (torchrun / --nproc set LOCAL_WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def measure_step(build: Callable[[], nn.Module], img_size: int, batch: int = 2) -> tuple[float, int]:
    """(MB saved for backward per image, MB of parameters) of one training forward pass of ``build()`` (a module
    whose ``forward(x, y)`` returns ``(loss, parts)``) at ``batch`` random images of ``img_size`` px. The torch
    random state is restored afterwards: planning does not change the run's initialisation."""
    with torch.random.fork_rng(devices=[]):
        net = build().train()
        params = {p.untyped_storage().data_ptr() for p in net.parameters()}
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                saved[storage.data_ptr()] = storage.nbytes()
            return t

        x = torch.randn(batch, 3, img_size, img_size)
        y = torch.arange(batch) % 2
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net(x, y)
        param_mb = sum(p.numel() * p.element_size() for p in net.parameters()) / MB
    return sum(saved.values()) / MB / batch, int(round(param_mb))


def plan(batch: int, img_size: int, device: torch.device, build: Callable[[], nn.Module],
         cache_cap_mb: int | None = None, available: int | None = None, total: int | None = None) -> MemoryPlan:
    """The memory plan of a run whose processes take ``batch`` images a step (see the module docstring).
    ``cache_cap_mb``: the user's own limit for the cache (None: as much as fits). ``available`` / ``total`` (MB)
    default to this machine's. Raises ConfigError when not even one image a step fits."""
    available = available_mb() if available is None else available
    total = total_mb() if total is None else total
    share = available // local_processes()
    budget = max(0, share - max(RESERVE_MB, total // 10) // local_processes())
    host_step = device.type != "cuda"
    per_image, param_mb = measure_step(build, img_size) if host_step else (0.0, 0)
    state = 3 * param_mb  # weights, gradients, momentum
    micro = batch

    def step_mb(n: int) -> int:
        return int(round(STEP_FACTOR * per_image * n))

    if host_step:
        fits = [d for d in range(batch, 0, -1) if batch % d == 0 and step_mb(d) + state <= budget]
        if not fits:
            raise ConfigError(f"a training step of one {img_size} px image needs about {step_mb(1) + state} MB and "
                              f"{budget} MB are free for this run ({available} MB available, less "
                              f"{available - budget} MB kept for the rest of the machine): close other programs, "
                              "or train a smaller model or a smaller --img-size")
        micro = fits[0]
    cache = max(0, budget - step_mb(micro) - state)
    if cache_cap_mb is not None:
        cache = min(cache, int(cache_cap_mb))
    eval_batch = max(batch, 32) if micro == batch else micro
    result = MemoryPlan(available, budget, batch, micro, step_mb(micro) if host_step else 0, state, cache,
                        eval_batch)
    log.info("%s", result.describe())
    return result


__all__ = ["MemoryPlan", "STEP_FACTOR", "RESERVE_MB", "available_mb", "local_processes", "measure_step", "plan"]
