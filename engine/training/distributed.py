"""Multi-GPU / multi-node training with DistributedDataParallel: the process group, rank helpers, reductions,
samplers, the DDP wrapper and the local launcher. Every helper is a no-op when the job is not distributed, so
:mod:`engine.training.loop` has one code path.

Launching (docs/CLI.md#multi-gpu):

* ``torchrun --nproc-per-node N -m engine train DATA --out RUN ...`` (multi-node: add ``--nnodes``,
  ``--node-rank`` and ``--rdzv-endpoint``, or ``--rdzv-backend c10d``, as for any torchrun job; the run folder must be
  on a shared file system for ``--resume``, since every rank reads ``resume.pt``);
* ``fieldmark train DATA --out RUN --nproc N`` on one machine: :func:`launch_local` runs torch's elastic launcher
  (the machinery behind torchrun) in the calling process, and it starts N fresh interpreters running
  ``python -m engine train ...`` with the same arguments. Fresh interpreters rather than ``fork``: the parent may
  hold CUDA or OpenMP state that a forked child must not inherit; the launcher forwards SIGINT/SIGTERM to the
  workers, stops them all when one fails, and the exit status is the failing rank's.

Semantics: ``batch_size`` is the *global* batch; each of the W processes takes ``batch_size / W`` (it must divide).
The training set is shuffled by a :class:`~torch.utils.data.DistributedSampler` seeded with the config's seed
(``set_epoch`` each epoch), so that the union of the ranks' batches at a step is exactly the batch a single
process takes at that step; the test set is sharded without padding and the metric sums are all-reduced. Only
rank 0 writes the run folder and emits events. Backend: NCCL on CUDA (BatchNorm converted to SyncBatchNorm),
gloo on the CPU, where PyTorch's SyncBatchNorm does not run: there each rank normalises its own share of the
batch (as "ghost" batch norm), and rank 0's running statistics are the model's (DDP broadcasts them).
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import uuid
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler, Sampler

from engine.device import local_device, resolve_device
from engine.errors import ConfigError

log = logging.getLogger(__name__)

#: How long a rank waits for the others in a collective before the job fails (a dead peer, a stuck GPU). The
#: ranks meet at every step (the stop and finite-loss checks), so the longest honest wait is one rank's extra work
#: between two meetings: rank 0 saving an epoch, or a rank decoding the images more slowly than the others.
#: ``FIELDMARK_DIST_TIMEOUT`` (seconds) changes it, e.g. for a data set that takes the slowest node longer.
TIMEOUT = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Context:
    """This process's place in the job. ``world_size == 1``: not distributed, every helper is a no-op."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_rank() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them; (0, 1, 0) outside a launcher."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as exc:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK are not integers ({exc}): start with torchrun") from exc


def is_main_process() -> bool:
    """True unless this process is a rank other than 0 of a launched job (for front ends deciding to print)."""
    return env_rank()[0] == 0


def init_from_env(device_name: str = "auto") -> Context:
    """Join the process group when a launcher started this process (WORLD_SIZE > 1), else a single-process
    context on :func:`engine.device.resolve_device`'s device. Close it with :func:`close`."""
    rank, world, local = env_rank()
    if world <= 1:
        return Context(resolve_device(device_name))
    device = local_device(local, device_name)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=timeout(), device_id=device if device.type == "cuda" else None)
        owns = True
    elif dist.get_world_size() != world:
        raise ConfigError(f"a process group of {dist.get_world_size()} processes exists, WORLD_SIZE says {world}")
    log.info("rank %d of %d (local %d) on %s, backend %s", rank, world, local, device, backend)
    return Context(device, rank, world, local, backend, owns)


def timeout() -> datetime.timedelta:
    """:data:`TIMEOUT`, or ``FIELDMARK_DIST_TIMEOUT`` seconds when set."""
    raw = os.environ.get("FIELDMARK_DIST_TIMEOUT")
    if not raw:
        return TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"FIELDMARK_DIST_TIMEOUT={raw!r}: give the seconds a rank waits for the others, e.g. 600")
    return datetime.timedelta(seconds=seconds)


def close(ctx: Context) -> None:
    """Leave the process group this context created (nothing when it made none)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def _comm_device(ctx: Context) -> torch.device:
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")


def all_reduce_sum(values: Sequence[float], ctx: Context) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (float64); the values themselves when not distributed."""
    if not ctx.distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def any_rank(flag: bool, ctx: Context) -> bool:
    """True on every rank when ``flag`` is true on any (a stop request seen by one rank stops all together)."""
    if not ctx.distributed:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_comm_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def nonfinite_losses(loss: torch.Tensor, ctx: Context) -> list[tuple[int, float]]:
    """(rank, loss) of each rank whose loss is NaN or infinite: the same list on every rank, from one all-gather of
    one number per rank. Called after the forward pass and before ``backward``, so that a non-finite loss on one
    rank stops all ranks at the same step with the same error, instead of leaving the others waiting in the
    gradient all-reduce until :data:`TIMEOUT`. Only the loss is checked: GradScaler's skipped steps (fp16
    gradients that overflowed) are normal and never reach here as errors."""
    if not ctx.distributed:
        value = float(loss.detach())
        return [] if math.isfinite(value) else [(ctx.rank, value)]
    t = loss.detach().reshape(1).to(device=_comm_device(ctx), dtype=torch.float64)
    gathered = [torch.empty_like(t) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, t)
    values = torch.cat(gathered).cpu().tolist()
    return [(r, v) for r, v in enumerate(values) if not math.isfinite(v)]


def describe_losses(bad: Sequence[tuple[int, float]], ctx: Context) -> str:
    """``"nan"``, or ``"nan on rank 1 of 2"`` (``"inf on rank 0, nan on rank 1 of 2"``) in a distributed job."""
    if not ctx.distributed:
        return ", ".join(str(v) for _, v in bad)
    return ", ".join(f"{v} on rank {r}" for r, v in bad) + f" of {ctx.world_size}"


def broadcast_buffers(module: nn.Module, ctx: Context) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, so all evaluate rank 0's model."""
    if not ctx.distributed:
        return
    for buf in module.buffers():
        if ctx.backend == "nccl" or buf.device.type == "cpu":
            dist.broadcast(buf.data, src=0)
        else:  # pragma: no cover - gloo with buffers off the CPU
            tmp = buf.data.cpu()
            dist.broadcast(tmp, src=0)
            buf.data.copy_(tmp)


def per_rank_batch(global_batch: int, ctx: Context) -> int:
    """``batch_size`` is the global batch: each rank takes ``global_batch / world_size`` images per step."""
    w = ctx.world_size
    if global_batch % w:
        near = max(w, round(global_batch / w) * w)
        raise ConfigError(f"batch_size={global_batch} is the global batch, split over {w} processes: it must be a "
                          f"multiple of {w} (e.g. {near})")
    return global_batch // w


def train_sampler(dataset: Dataset, ctx: Context, seed: int) -> DistributedSampler:
    """The training sampler of every run (W = 1 included): a seeded shuffle per epoch (call ``set_epoch``), each
    rank taking every W-th index, so that the ranks' batches at a step together make the single-process batch."""
    n = len(dataset)  # type: ignore[arg-type]
    if n < ctx.world_size:
        raise ConfigError(f"{n} training images cannot be shared by {ctx.world_size} processes: use fewer "
                          "processes or more images")
    return DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed,
                              drop_last=True)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + W, ...`` in order, no padding: every item is seen by exactly one rank (for
    evaluation, where DistributedSampler's padding would count some images twice)."""

    def __init__(self, n: int, ctx: Context):
        self.n, self.rank, self.world = n, ctx.rank, ctx.world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def wrap(module: nn.Module, ctx: Context) -> nn.Module:
    """Wrap ``module`` (already on ``ctx.device``) in DistributedDataParallel; itself when not distributed.
    On CUDA its BatchNorm layers become SyncBatchNorm first (in place: the parameters stay the same objects)."""
    if not ctx.distributed:
        return module
    if ctx.device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # buffers (BatchNorm statistics) are synced from rank 0 before every forward: DDP's default
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None)


def describe(ctx: Context, device_text: str) -> str:
    """The device line of the Started event: the device itself, or "2 processes (gloo), rank 0 on CPU ..."."""
    if not ctx.distributed:
        return device_text
    return f"{ctx.world_size} processes ({ctx.backend}), rank 0 on {device_text}"


# ------------------------------------------------------------------------------------------ local launcher
def launch_local(nproc: int, argv: list[str], verbose: bool = False) -> int:
    """Run ``python -m engine <argv>`` in ``nproc`` processes on this machine with torch's elastic launcher
    (rendezvous on a free loopback port). Returns 0, or the exit status of the first rank that failed
    (128 + signal number for a rank killed by a signal)."""
    import sys

    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: give at least 1 process")
    if "OMP_NUM_THREADS" not in os.environ:  # N processes × all cores' threads would oversubscribe the CPU
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    if not verbose:
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"fieldmark-{uuid.uuid4().hex}",
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1", max_restarts=0,
                          monitor_interval=0.2, logs_specs=DefaultLogsSpecs(log_dir=os.devnull))
    try:
        elastic_launch(config, sys.executable)("-m", "engine", *argv)
    except ChildFailedError as exc:
        codes = [f.exitcode for _, f in sorted(exc.failures.items())]
        code = next((c for c in codes if c > 0), codes[0] if codes else 1)
        return code if code > 0 else 128 - code
    except SignalException as exc:  # the launcher was told to stop: it has stopped the workers
        return 128 + int(exc.sigval)
    return 0


__all__ = ["Context", "env_rank", "is_main_process", "init_from_env", "timeout", "close", "barrier",
           "all_reduce_sum", "any_rank", "nonfinite_losses", "describe_losses", "broadcast_buffers",
           "per_rank_batch", "train_sampler", "ShardSampler", "wrap", "describe", "launch_local"]
