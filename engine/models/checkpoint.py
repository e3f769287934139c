"""Activation checkpointing of a partnet backbone's stages (``torch.utils.checkpoint``, non-reentrant): what the
memory plan (:mod:`engine.training.memory`) turns on when a training step of the whole batch would not fit.

A checkpointed backbone keeps only each segment's input for the backward pass; the backward pass runs each
segment's forward again to get the rest. The gradients are the same (the recomputation sees the same input, the
same batch statistics in BatchNorm and the same random state), and so are BatchNorm's running statistics: the
recomputation's own update of them is undone. The price is one more forward pass of the backbone per step.

Segments: the backbone's stage containers (a plain ``nn.Sequential`` body, a fine backbone's two halves, the small
net's body) are cut before each child that has weights of its own and is not a norm layer; a child without
weights (ReLU, pooling) or a norm layer stays in the segment before it, so an in-place activation never works on
another segment's output. A plain ``nn.Sequential`` child (a ResNet layer) is cut into its own children.
Turning it on changes no module's name or weights: a saved model loads the same with or without it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from engine.models.fine import FineFeatures
from engine.models.partnet import PartNet
from engine.models.shared_parts import SharedPartsNet

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class CheckpointedSequential(nn.Sequential):
    """An ``nn.Sequential`` whose segments (``_ckpt_segments``: lists of its descendants, run in order) are
    checkpointed while gradients are on; with gradients off it runs as a plain ``nn.Sequential``."""

    _ckpt_segments: list[list[nn.Module]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return super().forward(x)
        for segment in self._ckpt_segments:
            x = checkpoint(_run, segment, x, use_reentrant=False,
                           context_fn=lambda seg=segment: (contextlib.nullcontext(), _statistics_kept(seg)))
        return x


def _run(segment: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for module in segment:
        x = module(x)
    return x


@contextlib.contextmanager
def _statistics_kept(segment: list[nn.Module]) -> Iterator[None]:
    """Around a segment's recomputation: its norm layers' running statistics as they were before it (the first
    forward pass has already updated them once)."""
    buffers = [b for m in segment for sub in m.modules() if isinstance(sub, _NORMS) for b in sub.buffers()]
    with torch.no_grad():
        saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in zip(buffers, saved):
                b.copy_(value)


def segments(container: nn.Sequential) -> list[list[nn.Module]]:
    """The checkpoint segments of ``container`` (see the module docstring)."""
    out: list[list[nn.Module]] = []
    for child in container.children():
        if type(child) is nn.Sequential:
            out += segments(child)
        elif out and (isinstance(child, _NORMS) or not any(True for _ in child.parameters())):
            out[-1].append(child)
        else:
            out.append([child])
    return out


def stage_containers(model: nn.Module) -> list[nn.Sequential]:
    """The backbone's stage containers that checkpointing cuts: those of a part network (MC-Loss / CE, shared
    parts); none for another model (TASN, RA-CNN)."""
    if not isinstance(model, (PartNet, SharedPartsNet)):
        return []
    backbone = model.backbone
    if isinstance(backbone, FineFeatures):
        parts = [backbone.early, backbone.late]
    elif isinstance(getattr(backbone, "body", None), nn.Sequential):
        parts = [backbone.body]  # the small net
    else:
        parts = [backbone]
    return [p for p in parts if isinstance(p, nn.Sequential)]


def set_checkpointing(module: nn.Module, on: bool = True) -> int:
    """Turn activation checkpointing of the backbone stages on or off for every part network inside ``module``
    (a model, or a model with its criterion), in place. Returns the number of segments checkpointed (0: none of
    its models has stages to checkpoint)."""
    count = 0
    for model in list(module.modules()):
        for container in stage_containers(model):
            if on:
                container.__class__ = CheckpointedSequential
                container._ckpt_segments = segments(container)
                count += len(container._ckpt_segments)
            elif isinstance(container, CheckpointedSequential):
                container.__class__ = nn.Sequential
                del container._ckpt_segments
    return count


def is_checkpointed(module: nn.Module) -> bool:
    return any(isinstance(m, CheckpointedSequential) for m in module.modules())


__all__ = ["CheckpointedSequential", "segments", "stage_containers", "set_checkpointing", "is_checkpointed"]
