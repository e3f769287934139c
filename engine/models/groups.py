"""Channel groups of the MC-Loss part network (Chang et al., IEEE TIP 2020): which contiguous channels belong to
which class, the maximum over each group, and cross-channel max pooling (docs/METHODS.md#mc-loss)."""

from __future__ import annotations

from typing import Sequence

import torch

from engine.errors import ConfigError


def group_sizes(n_channels: int, n_classes: int) -> list[int]:
    """Split ``n_channels`` among ``n_classes`` contiguous groups, the smaller groups first
    (2048 channels, 200 classes → 152 groups of 10 then 48 of 11)."""
    if n_classes < 1 or n_channels < n_classes:
        raise ConfigError(f"cannot split {n_channels} channels among {n_classes} classes: "
                          "each class needs at least one channel")
    base, extra = divmod(n_channels, n_classes)
    return [base] * (n_classes - extra) + [base + 1] * extra


def as_groups(groups: int | Sequence[int], n_channels: int) -> list[int]:
    if isinstance(groups, int):
        if groups < 1 or n_channels % groups:
            raise ConfigError(f"xi={groups} does not divide the {n_channels} feature channels: "
                              "pass the list of group sizes instead")
        return [groups] * (n_channels // groups)
    sizes = [int(g) for g in groups]
    if sum(sizes) != n_channels or min(sizes) < 1:
        raise ConfigError(f"group sizes sum to {sum(sizes)}, the feature map has {n_channels} channels")
    return sizes


def _runs(sizes: list[int]) -> list[tuple[int, int, int]]:
    """Consecutive groups of equal size as (first channel, group size, number of groups)."""
    runs, start, i = [], 0, 0
    while i < len(sizes):
        j = i
        while j < len(sizes) and sizes[j] == sizes[i]:
            j += 1
        runs.append((start, sizes[i], j - i))
        start += sizes[i] * (j - i)
        i = j
    return runs


def group_max(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Maximum over each channel group: (B, N, ...) → (B, c, ...). Gradient goes to one maximal channel
    (``max`` with indices semantics), never split between ties."""
    outs = []
    for start, size, count in _runs(sizes):
        block = x[:, start:start + size * count]
        block = block.reshape(x.shape[0], count, size, *x.shape[2:])
        outs.append(block.max(dim=2).values)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


def ccmp(features: torch.Tensor, groups: int | Sequence[int]) -> torch.Tensor:
    """Cross-channel max pooling: (B, N, H, W) → (B, c, H, W)."""
    return group_max(features, as_groups(groups, features.shape[1]))
