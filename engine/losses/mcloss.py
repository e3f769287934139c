"""Losses: the mutual-channel loss (Chang et al., "The Devil is in the Channels", IEEE TIP 2020,
arXiv 2002.04264) and the criteria the training loop calls.

A criterion is called as ``criterion(model, images, targets) -> (total, parts)`` where ``parts`` maps names to
scalar tensors for the logs. Every method (ce, mcloss, tasn) has one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError
from engine.losses.parts import spread
from engine.models.groups import as_groups, ccmp, group_max, group_sizes  # noqa: F401  (ccmp, group_sizes re-exported)


def cwa_mask(groups: int | Sequence[int], n_channels: int | None = None, batch: int | None = None,
             generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Channel-wise attention mask: in each group of ξ channels ⌈ξ/2⌉ are kept (1), the rest dropped (0), at
    random. Shape (N,) — one mask for the whole batch, as in the authors' code — or (batch, N) per sample."""
    if isinstance(groups, int) and n_channels is None:
        raise ConfigError("cwa_mask needs n_channels when groups is a single xi")
    sizes = as_groups(groups, n_channels if n_channels is not None else sum(groups))
    rows = 1 if batch is None else batch
    mask = torch.zeros(rows, sum(sizes))
    start = 0
    for size in sizes:
        keep = math.ceil(size / 2)
        scores = torch.rand(rows, size, generator=generator)
        idx = scores.argsort(dim=1)[:, :keep]
        mask[:, start:start + size].scatter_(1, idx, 1.0)
        start += size
    mask = mask.to(device) if device is not None else mask
    return mask[0] if batch is None else mask


@dataclass
class MCTerms:
    """The two MC-Loss terms. ``h`` is (B, c): h_i = Σ_k max_{j∈group i} softmax_k(F_j), in [1, ξ_i]."""

    dis: torch.Tensor
    div: torch.Tensor
    h: torch.Tensor


def mc_loss_terms(features: torch.Tensor, targets: torch.Tensor, groups: int | Sequence[int],
                  mask: torch.Tensor | None = None) -> MCTerms:
    """L_dis = CE(GAP(CCMP(F ⊙ mask)), y); L_div = 1 − mean_{b,i}(h_i / ξ_i) (the authors' code form).

    ``features`` (B, N, H, W) non-negative; ``groups`` ξ or the list of group sizes; ``mask`` (N,) or (B, N),
    None for no masking. Works in any float dtype, float64 included.
    """
    b, n = features.shape[:2]
    sizes = as_groups(groups, n)
    masked = features
    if mask is not None:
        mask = mask.to(device=features.device, dtype=features.dtype).detach()
        if mask.shape[-1] != n:
            raise ConfigError(f"mask has {mask.shape[-1]} channels, the features have {n}")
        masked = features * (mask.view(1, n, 1, 1) if mask.dim() == 1 else mask.view(b, n, 1, 1))
    logits = group_max(masked, sizes).flatten(2).mean(dim=2)
    dis = F.cross_entropy(logits, targets)
    soft = features.flatten(2).softmax(dim=2)  # (B, N, HW), unmasked
    h = group_max(soft, sizes).sum(dim=2)  # (B, c)
    xi = torch.tensor(sizes, dtype=features.dtype, device=features.device)
    div = 1.0 - (h / xi).mean()
    return MCTerms(dis=dis, div=div, h=h)


def class_concentration(features: torch.Tensor, targets: torch.Tensor, groups: int | Sequence[int]) -> torch.Tensor:
    """Fieldmark's concentration term for MC-Loss (not in the paper; docs/METHODS.md#mc-loss-concentration):
    PDiscoNet's concentration (:func:`engine.losses.parts.spread`) of the true class's channels, each divided by
    its own sum over the h·w cells (so it measures the channel's shape, not its strength), averaged over the batch,
    the class's channels and the h·w cells. 0 when every channel of the true class is one cell; an all-zero
    channel counts 0."""
    b, n, h, w = features.shape
    sizes = as_groups(groups, n)
    size = torch.tensor(sizes, device=features.device)
    start = torch.cumsum(size, 0) - size
    xi = max(sizes)
    offset = torch.arange(xi, device=features.device).view(1, xi)
    valid = offset < size[targets].view(b, 1)  # (B, ξ_max): uneven groups have fewer channels
    index = torch.where(valid, start[targets].view(b, 1) + offset, start[targets].view(b, 1))
    own = features.gather(1, index.view(b, xi, 1, 1).expand(b, xi, h, w))
    unit = own / own.sum(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    return (spread(unit) * valid).sum() / (valid.sum() * h * w)


class MCLoss(nn.Module):
    """The mutual-channel loss of the paper: L = L_CE + μ·(L_dis − λ·mean h), written as the authors' code does,
    L_CE + μ·L_dis + μ·λ·ξ̄·L_div^code (same gradient; ξ̄ = mean group size), plus ``conc`` times
    :func:`class_concentration` when ``conc`` > 0 (Fieldmark's, not the paper's). Returns (total, parts)."""

    def __init__(self, groups: int | Sequence[int], mu: float = 0.005, lam: float = 10.0,
                 per_sample_mask: bool = False, conc: float = 0.0):
        super().__init__()
        self.groups = groups
        self.mu, self.lam, self.per_sample_mask = float(mu), float(lam), per_sample_mask
        self.conc = float(conc)

    def forward(self, features: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sizes = as_groups(self.groups, features.shape[1])
        if mask is None and self.training:
            mask = cwa_mask(sizes, batch=features.shape[0] if self.per_sample_mask else None,
                            device=features.device)
        ce = F.cross_entropy(logits, targets)
        # softmax over HW in half precision loses the small values that h sums: compute in float32 at least
        if features.dtype in (torch.float16, torch.bfloat16):
            features = features.float()
        terms = mc_loss_terms(features, targets, sizes, mask)
        xi_mean = sum(sizes) / len(sizes)
        total = ce + self.mu * terms.dis + self.mu * self.lam * xi_mean * terms.div
        parts = {"ce": ce.detach(), "dis": terms.dis.detach(), "div": terms.div.detach(),
                 "regions": terms.h.detach().mean()}
        if self.conc:
            conc = class_concentration(features, targets, sizes)
            total = total + self.conc * conc
            parts["conc"] = conc.detach()
        return total, parts


class CECriterion(nn.Module):
    """Plain cross-entropy on the same models (the comparison method)."""

    def forward(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        return self.terms(None, model(images), targets)

    def terms(self, features: torch.Tensor | None, logits: torch.Tensor, targets: torch.Tensor):
        """The loss of one pass's logits (``features`` unused; GAIN shares its pass, engine.losses.gain)."""
        ce = F.cross_entropy(logits, targets)
        return ce, {"ce": ce.detach()}


class MCLossCriterion(nn.Module):
    """MC-Loss for a part model exposing ``forward_features`` / ``forward_head`` and ``groups``."""

    def __init__(self, groups: Sequence[int], mu: float, lam: float, per_sample_mask: bool = False,
                 conc: float = 0.0):
        super().__init__()
        self.loss = MCLoss(list(groups), mu, lam, per_sample_mask, conc)

    def forward(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
        features = model.forward_features(images)
        return self.terms(features, model.forward_head(features), targets)

    def terms(self, features: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor):
        """The loss of one pass's features and logits (GAIN shares its pass, engine.losses.gain)."""
        return self.loss(features, logits, targets)
