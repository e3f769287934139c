"""One optimisation step's forward and backward passes, in micro-batches when memory asks for them
(:mod:`engine.training.memory`)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

import engine.training.distributed as ddp


def forward_backward(net: nn.Module, x: torch.Tensor, y: torch.Tensor, micro: int, scaler: torch.amp.GradScaler,
                     amp: torch.dtype | None, ctx: ddp.Context) -> tuple[float, dict[str, float], list]:
    """Forward and backward passes of the batch ``(x, y)`` through ``net`` (``forward(x, y) -> (loss, parts)``),
    ``micro`` images at a time, gradients accumulated: each micro-batch's mean loss is weighted by its share of
    the batch, so the gradients are the batch mean's (BatchNorm aside: it normalises each micro-batch on its
    own). One micro-batch of the whole batch is the plain step. Under DistributedDataParallel only the last
    micro-batch's backward all-reduces the gradients.

    Returns (the batch's mean loss, its mean loss parts, the non-finite losses). Before each backward every rank
    learns every rank's loss (:func:`engine.training.distributed.nonfinite_losses`); a non-empty list means the
    step stopped there, on every rank alike, and the optimizer must not step."""
    n = len(y)
    loss_sum, parts_sum = 0.0, {}
    for start in range(0, n, micro):
        xs, ys = x[start:start + micro], y[start:start + micro]
        last = start + micro >= n
        sync = net.no_sync() if not last and hasattr(net, "no_sync") else contextlib.nullcontext()
        with sync:
            with torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss, parts = net(xs, ys)
            bad = ddp.nonfinite_losses(loss, ctx)  # every rank's verdict, on every rank: all stop here together
            if bad:
                return loss_sum, parts_sum, bad
            share = len(ys) / n
            scaler.scale(loss if share == 1 else loss * share).backward()
        loss_sum += float(loss.detach()) * share
        for k, v in parts.items():
            parts_sum[k] = parts_sum.get(k, 0.0) + float(v) * share
    return loss_sum, parts_sum, []
