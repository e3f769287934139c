"""Memory that follows the machine: how much a training run takes, measured before it starts, and what it may
take of the memory this machine has free.

Where a run's memory goes on the CPU (docs/RESULTS.md#memory):

* the interpreter with torch and the engine imported: about 0.7-0.9 GB, before anything else;
* the image cache: decoded photos at the resize side (256 px for 224), about 0.26 MB a photo at 224 px;
* one training step: the peak of the tensors alive during its forward and backward passes (the tensors autograd
  saves, the gradients and temporaries of the backward pass, a shared-parts step's equivariance pass, GAIN's
  passes), and what the allocator keeps besides them (:data:`STEP_FACTOR`, :data:`CHECKPOINT_FACTOR`);
* the test pass: no autograd, a fraction of a training step at the same batch (it reuses the step's memory);
* weights, gradients and optimizer state: 4× the parameters (small next to the rest: 36 MB for mobilenet_v2).

:func:`measure_step` runs one real training pass (forward and backward, the run's own model and loss) and one test
pass of random images at two batch sizes, counting the bytes of every tensor alive after each operation
(:class:`LiveTensors`): a fixed part and a part per image. The plan counted the tensors saved for backward before,
from a forward pass alone; that missed what is alive besides them at the step's peak (a shared-parts step's
equivariance pass runs while all of them are kept: 345 MB an image at 448 px against 302 saved) and it could not
see into a checkpointed backbone. :func:`plan` bounds the step and the cache by the memory actually available
(``psutil.virtual_memory().available``) less a reserve for the window and the rest of the machine. When a step of
the batch does not fit, it checkpoints the backbone's stages (:mod:`engine.models.checkpoint`: only each stage's
input is kept for the backward pass, which computes the rest again; the same gradients, one more forward pass of
the backbone) and runs the batch in the largest micro-batches that fit, checkpointed or not, whichever allows
larger ones; their gradients add up (each micro-batch normalised by BatchNorm on its own, as each process's share
is under DistributedDataParallel on the CPU). The cache takes what is left, and a split that does not fit is
decoded from disk at each use instead. On CUDA the step lives on the GPU, and only the cache is planned here.
"""

from __future__ import annotations

import logging
import os
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import engine.training.allocator as allocator
from engine.errors import ConfigError
from engine.models.checkpoint import set_checkpointing

log = logging.getLogger(__name__)

MB = 2 ** 20
#: A training step's peak resident memory, as a multiple of the peak of its live tensors (:func:`measure_step`):
#: the allocator's free blocks that it keeps (the launcher's malloc settings keep every freed block in the process)
#: and temporaries inside operations. Measured 1.22-1.43× on the 2-core machine: mobilenet_v2 CE 224 px batch 16,
#: shared parts 224 and 448 px batch 16 (docs/RESULTS.md#memory).
STEP_FACTOR = 1.5
#: The same for a step with the backbone's stages checkpointed, its big blocks on pages of their own
#: (:func:`engine.training.allocator.own_pages`): measured 1.51-1.56× (shared parts 224 and 448 px batch 16). With
#: the launcher's heap it would be 2.4-3.3×: the recomputed stages do not fit in the blocks that others freed.
CHECKPOINT_FACTOR = 1.7
#: BatchNorm over fewer images than this is too noisy: the plan checkpoints the backbone rather than run
#: micro-batches smaller than this (when checkpointing lets larger ones fit).
MIN_MICRO_BATCH = 8
#: Memory left to the rest of the machine (the window, the desktop): this or a tenth of the RAM, the larger.
RESERVE_MB = 1024
#: The two batch sizes :func:`measure_step` runs: the cost of a step is a fixed part and a part per image.
PROBE_BATCHES = (2, 3)


@dataclass(frozen=True)
class StepCost:
    """What one pass costs at the peak of its live tensors, measured (MB): a training pass (forward and backward)
    of ``n`` images takes ``fixed_mb + n * per_image_mb``, a test pass (no autograd) ``n * eval_per_image_mb``;
    ``checkpointed``: with the backbone's stages checkpointed."""

    per_image_mb: float
    fixed_mb: float
    eval_per_image_mb: float
    param_mb: int
    checkpointed: bool = False
    largest_mb: float = 0.0  # the largest single tensor of a training pass, per image

    def step_mb(self, n: int) -> int:
        """The planned peak of a training step of ``n`` images: the live tensors times :data:`STEP_FACTOR`, or
        :data:`CHECKPOINT_FACTOR` checkpointed."""
        factor = CHECKPOINT_FACTOR if self.checkpointed else STEP_FACTOR
        return int(round(factor * (self.fixed_mb + self.per_image_mb * n)))


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
    checkpoint: bool = False  # the backbone's stages are checkpointed (recomputed in the backward pass)
    full_step_mb: int = 0  # a step of the whole batch without checkpointing (what did not fit), when it did not
    own_pages_mb: int = 0  # checkpointed: blocks of this size and more get pages of their own (0: the allocator's)

    def to_dict(self) -> dict:
        return asdict(self)

    def notes(self) -> list[str]:
        """What the plan changed to fit (for the user and the run log): checkpointing, micro-batches."""
        if self.micro_batch == self.batch and not self.checkpoint:
            return []
        text = (f"memory: a step of {self.batch} images would need about {self.full_step_mb + self.state_mb} MB, "
                f"{self.budget_mb} MB are free for this run: ")
        if self.checkpoint:
            text += (f"the backbone's activations are recomputed in the backward pass (activation checkpointing, "
                     f"a step of about {self.step_mb + self.state_mb} MB; the same gradients) and blocks of "
                     f"{self.own_pages_mb} MB and more get pages of their own: about twice the computation of a "
                     "plain step")
        if self.micro_batch < self.batch:
            text += (" and " if self.checkpoint else "") + (
                f"it runs in micro-batches of {self.micro_batch} (their gradients add up to the batch's; BatchNorm "
                f"normalises {self.micro_batch} images at a time)")
        return [text]

    def describe(self) -> str:
        def gb(v: int) -> str:
            return f"{v / 1024:.1f} GB"

        step = (f"a training step takes about {gb(self.step_mb)}" if self.step_mb else "training steps run on the GPU")
        if self.checkpoint:
            step += " with the backbone's stages checkpointed"
        if self.micro_batch < self.batch:
            step += f" in micro-batches of {self.micro_batch} images (of {self.batch} a step)"
        return (f"memory: {gb(self.available_mb)} available, {gb(self.budget_mb)} for this run; {step}; the image "
                f"cache may take {gb(self.cache_mb)}")


class LiveTensors(TorchDispatchMode):
    """While on, the bytes of the tensors alive (``live``), their peak (``peak``) and the largest tensor
    (``largest``): every operation's outputs are counted once per storage, from the operation that made it until
    the storage is freed (autograd's saved tensors included, whichever thread frees them). Tensors made before it
    was on are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = self.largest = 0
        self._refs: dict[int, weakref.ref] = {}

    def _freed(self, key: int, nbytes: int) -> None:
        if self._refs.pop(key, None) is not None:
            self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            try:
                storage = t.untyped_storage()
            except (RuntimeError, NotImplementedError):  # opaque layouts (MKL-DNN) have no storage to count
                continue
            key = id(storage)
            if key not in self._refs:
                nbytes = storage.nbytes()
                self.live += nbytes
                self.largest = max(self.largest, nbytes)
                self._refs[key] = weakref.ref(storage, lambda _ref, k=key, n=nbytes: self._freed(k, n))
        self.peak = max(self.peak, self.live)
        return out


#: The environment variable that tells the plan how much memory (MB) to count as this machine's, instead of what
#: the machine says: a share of a machine that other jobs use too, or the same plan on every machine (the tests).
MEMORY_ENV = "FIELDMARK_MEMORY_MB"


def memory_override() -> int | None:
    """``FIELDMARK_MEMORY_MB`` as a whole number of MB, or None when unset; a ConfigError names a bad value."""
    text = os.environ.get(MEMORY_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 256:
        raise ConfigError(f"{MEMORY_ENV}={text!r}: give the memory the run may count on in MB, a whole number of at "
                          f"least 256 (e.g. 6000), or unset it to use what this machine has free")
    return int(text)


def _cgroup_mb(root: str = "/sys/fs/cgroup") -> tuple[int, int] | None:
    """(limit, used) in MB of this process's memory cgroup when it has a limit (a container, a batch job), or None.
    psutil sees the whole host's memory there, not the share this process may use."""
    for limit_file, used_file in (("memory.max", "memory.current"),  # cgroup v2
                                  ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):  # v1
        try:
            with open(os.path.join(root, limit_file)) as f:
                limit = f.read().strip()
            with open(os.path.join(root, used_file)) as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2 ** 60:  # "max" or v1's huge number: no limit
            return int(limit) // MB, used // MB
    return None


def available_mb() -> int:
    """Memory the machine can give without swapping: psutil's ``available`` (free + reclaimable caches), at most
    what the process's memory cgroup has left; ``FIELDMARK_MEMORY_MB`` when set."""
    import psutil

    override = memory_override()
    if override is not None:
        return override
    free = int(psutil.virtual_memory().available // MB)
    cgroup = _cgroup_mb()
    return free if cgroup is None else max(0, min(free, cgroup[0] - cgroup[1]))


def total_mb() -> int:
    """The machine's memory (its memory cgroup's limit when lower; ``FIELDMARK_MEMORY_MB`` when set)."""
    import psutil

    override = memory_override()
    if override is not None:
        return override
    total = int(psutil.virtual_memory().total // MB)
    cgroup = _cgroup_mb()
    return total if cgroup is None else min(total, cgroup[0])


def local_processes() -> int:
    """How many training processes share this machine (torchrun / --nproc set LOCAL_WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _pass_peaks(net: nn.Module, img_size: int, batch: int) -> tuple[int, int, int]:
    """(bytes, bytes, bytes): the peak of the live tensors of one training pass of ``net`` (``forward(x, y) ->
    (loss, parts)``, then backward) on ``batch`` random images, its largest tensor, and the peak of one test pass of
    its ``model`` (0 without one)."""
    with LiveTensors() as live:
        x = torch.randn(batch, 3, img_size, img_size)
        loss, _ = net(x, torch.arange(batch) % 2)
        loss.backward()
    train_peak, largest = live.peak, live.largest
    del x, loss
    net.zero_grad(set_to_none=True)
    model = getattr(net, "model", None)
    if model is None:
        return train_peak, largest, 0
    model.eval()
    with torch.no_grad(), LiveTensors() as live:
        model(torch.randn(batch, 3, img_size, img_size))
    model.train()
    return train_peak, largest, live.peak


def measure_step(build: Callable[[], nn.Module], img_size: int, checkpoint: bool = False) -> StepCost | None:
    """The :class:`StepCost` of ``build()`` (a module whose ``forward(x, y)`` returns ``(loss, parts)``, with the
    model as its ``model`` for the test pass) at ``img_size`` px, from passes of :data:`PROBE_BATCHES` random
    images; ``checkpoint``: with its backbone's stages checkpointed (None when it has none to checkpoint). The
    torch random state is restored afterwards: planning does not change the run's initialisation."""
    with torch.random.fork_rng(devices=[]):
        net = build().train()
        if checkpoint and not set_checkpointing(net, True):
            return None
        (small, _, eval_small), (large, largest, eval_large) = (_pass_peaks(net, img_size, n)
                                                                for n in PROBE_BATCHES)
        param_mb = sum(p.numel() * p.element_size() for p in net.parameters()) / MB
    span = PROBE_BATCHES[1] - PROBE_BATCHES[0]
    per_image = max(large - small, 0) / span / MB
    fixed = max(small / MB - per_image * PROBE_BATCHES[0], 0.0)
    return StepCost(per_image, fixed, max(eval_large, eval_small) / PROBE_BATCHES[1] / MB, int(round(param_mb)),
                    checkpoint, largest / PROBE_BATCHES[1] / MB)


def plan(batch: int, img_size: int, device: torch.device, build: Callable[[], nn.Module],
         cache_cap_mb: int | None = None, available: int | None = None, total: int | None = None) -> MemoryPlan:
    """The memory plan of a run whose processes take ``batch`` images a step (see the module docstring): the whole
    batch as it is when it fits, else the largest micro-batches that fit; when those would hold fewer than
    :data:`MIN_MICRO_BATCH` images, the backbone checkpointed if that lets larger ones fit (the whole batch when it
    can). ``cache_cap_mb``: the user's own limit for the cache (None: as much as fits). ``available`` / ``total``
    (MB) default to this machine's. Raises ConfigError when not even one image a step fits."""
    available = available_mb() if available is None else available
    total = total_mb() if total is None else total
    share = available // local_processes()
    budget = max(0, share - max(RESERVE_MB, total // 10) // local_processes())
    if device.type == "cuda":  # the step lives on the GPU: the host keeps everything for the cache
        cache = budget if cache_cap_mb is None else min(budget, int(cache_cap_mb))
        return _logged(MemoryPlan(available, budget, batch, batch, 0, 0, cache, max(batch, 32)))
    with allocator.probing():
        plain = measure_step(build, img_size)
        assert plain is not None
        state = 4 * plain.param_mb  # weights, gradients, two moments (Adam; SGD's momentum is one)
        cost, micro, full = plain, batch, 0
        if plain.step_mb(batch) + state > budget:
            full = plain.step_mb(batch)
            options = [(_largest_fit(plain, batch, budget - state), plain)]
            if options[0][0] < min(MIN_MICRO_BATCH, batch):
                checkpointed = measure_step(build, img_size, checkpoint=True)
                if checkpointed is not None:
                    options.append((_largest_fit(checkpointed, batch, budget - state), checkpointed))
            micro, cost = max(options, key=lambda o: (o[0], o[1] is plain))  # a tie: no recomputation
            if not micro:
                least = min(o[1].step_mb(1) for o in options) + state
                raise ConfigError(f"a training step of one {img_size} px image needs about {least} MB and "
                                  f"{budget} MB are free for this run ({available} MB available, less "
                                  f"{available - budget} MB kept for the rest of the machine): close other "
                                  "programs, or train a smaller model or a smaller --img-size")
    step = cost.step_mb(micro)
    cache = max(0, budget - step - state)
    if cache_cap_mb is not None:
        cache = min(cache, int(cache_cap_mb))
    eval_batch = max(batch, 32) if micro == batch else micro
    if plain.eval_per_image_mb > 0:  # the test pass reuses the step's memory: at most as many images as fit there
        eval_batch = max(1, min(eval_batch, int(step / (STEP_FACTOR * plain.eval_per_image_mb))))
    # a checkpointed run's big blocks get pages of their own: those of a sixteenth of its largest tensor and more
    own = min(32, max(1, int(round(cost.largest_mb * micro / 16)))) if cost.checkpointed else 0
    return _logged(MemoryPlan(available, budget, batch, micro, step, state, cache, eval_batch, cost.checkpointed,
                              full, own))


def apply(mem: MemoryPlan, model: nn.Module) -> None:
    """What the plan chose for the model it planned: its backbone's stages checkpointed and the big blocks on pages
    of their own (:mod:`engine.training.allocator`) when ``mem.checkpoint``; nothing otherwise."""
    if mem.checkpoint:
        set_checkpointing(model, True)
        allocator.own_pages(mem.own_pages_mb)


def _largest_fit(cost: StepCost, batch: int, room: int) -> int:
    """The largest divisor of ``batch`` whose step fits in ``room`` MB (0: none)."""
    return next((d for d in range(batch, 0, -1) if batch % d == 0 and cost.step_mb(d) <= room), 0)


def _logged(result: MemoryPlan) -> MemoryPlan:
    log.info("%s", result.describe())
    return result


__all__ = ["MemoryPlan", "StepCost", "LiveTensors", "STEP_FACTOR", "CHECKPOINT_FACTOR", "MIN_MICRO_BATCH",
           "RESERVE_MB", "PROBE_BATCHES", "MEMORY_ENV", "memory_override", "available_mb", "total_mb",
           "local_processes", "measure_step", "plan", "apply"]
