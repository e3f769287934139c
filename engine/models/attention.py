"""Attention blocks added to a partnet backbone (``--attention``, docs/METHODS.md#attention-blocks): one block after
each of the backbone's last two stages, initialised so that a pretrained backbone starts unchanged.

* ``cbam``: the Convolutional Block Attention Module (Woo, Park, Lee, Kweon, ECCV 2018, arXiv 1807.06521). Channel
  attention from one MLP shared by the average- and the max-pooled features, then spatial attention from a 7 × 7
  convolution of the channel-wise average and maximum. The paper's gates are ``sigmoid(z)``; here they are
  ``2·sigmoid(z)``, each z zero at the start: the MLP's second 1 × 1 convolution starts at zero, and the 7 × 7
  convolution's output passes a BatchNorm (the authors' code has one there) whose weight and bias start at zero.
  Both gates are exactly 1 at the start and can later damp (< 1) or amplify (< 2).
* ``residual``: the attention module of the Residual Attention Network (Wang et al., CVPR 2017, arXiv 1704.06904):
  a trunk branch T and a bottom-up / top-down mask branch M, output ``(1 + M) ⊙ T``. The trunk is the backbone's
  own stage (its pretrained output); the mask branch max-pools once (bottom-up), reduces to a quarter of the
  channels with a 1 × 1 and a 3 × 3 convolution, is upsampled bilinearly to the trunk's grid (top-down) and gives
  a mixed (per channel and position) mask through two 1 × 1 convolutions. The paper's M is ``sigmoid``, in
  [0, 1]; here M is ``tanh`` of the last convolution, which is zero-initialised: M = 0 and the output is T at the
  start (1 + M then lies in (0, 2), like CBAM's gates). No BatchNorm in the mask branch: its grid is as small as
  1 × 1 on small inputs, where BatchNorm cannot train on one image.

Each block's spatial map (CBAM's spatial gate; the channel mean of 1 + M) is what :func:`spatial_maps` returns and
the ``attention`` map method shows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError

ATTENTIONS = ("none", "cbam", "residual")
#: Per registry backbone: the body's children that end its last two stages, and their channels. The second slot is
#: the body's last child; the first ends the stage before the last downsampling (ResNet layer3, MobileNetV2
#: features[13] at stride 16, VGG-16-BN's conv4 block before pool4, the small net's block before its last pool).
STAGE_ENDS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "resnet18": ((6, 7), (256, 512)),
    "resnet50": ((6, 7), (1024, 2048)),
    "mobilenet_v2": ((13, 18), (96, 1280)),
    "vgg16_bn": ((32, 42), (512, 512)),
    "smallnet": ((12, 19), (64, 128)),
}


def _zero(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class GateNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm of CBAM's one-channel spatial logits, as the authors' code has it (their ``BasicConv``: eps 1e-5,
    momentum 0.01), its weight and bias starting at zero so that the gate starts at exactly 1. It is not an
    ``nn.BatchNorm2d``, so ``--freeze-bn`` (which fixes the pretrained backbone's) leaves this new layer learning.
    A batch with one value per channel (one photo, a 1 × 1 map) is normalised by the running statistics."""

    def __init__(self) -> None:
        super().__init__(1, eps=1e-5, momentum=0.01)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"GateNorm expects (B, 1, h, w) logits, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.numel() == x.shape[1]:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class CBAM(nn.Module):
    """CBAM with ``2·sigmoid`` gates that start at exactly 1 (the identity at initialisation): the channel MLP's last
    layer starts at zero, and the spatial logits pass a :class:`GateNorm` whose weight and bias start at zero.

    A run saved before the GateNorm (its state dict has no ``norm``) loads without it, as it was trained: a zero-
    initialised 7 × 7 convolution straight into the sigmoid. That form could die: on cub-parts-dev (seed 2) the
    last block's spatial logits ran to about −17 and below on every cell, the gate to 1e-7, and the network sat at
    chance from the first epoch on (docs/METHODS.md#attention-blocks)."""

    kind = "CBAM"

    def __init__(self, channels: int, reduction: int = 16, kernel: int = 7):
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                 _zero(nn.Conv2d(hidden, channels, 1)))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)
        self.norm: nn.Module = GateNorm()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        if prefix + "norm.weight" not in state_dict:  # saved before the GateNorm: the spatial logits as they were
            self.norm = nn.Identity()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(channel gate (B, C, 1, 1), spatial gate (B, 1, h, w)), each in (0, 2)."""
        channel = 2 * torch.sigmoid(self.mlp(x.mean(dim=(2, 3), keepdim=True)) +
                                    self.mlp(x.amax(dim=(2, 3), keepdim=True)))
        y = x * channel
        pooled = torch.cat((y.mean(dim=1, keepdim=True), y.amax(dim=1, keepdim=True)), dim=1)
        return channel, 2 * torch.sigmoid(self.norm(self.spatial(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel, spatial = self.gates(x)
        return x * channel * spatial

    def spatial_map(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial gate (B, h, w) of the block's input ``x``."""
        return self.gates(x)[1][:, 0]


class ResidualAttention(nn.Module):
    """``(1 + M) ⊙ T`` with T the input (the backbone stage's output) and M = tanh of a mask branch whose last
    convolution starts at zero (the identity at initialisation)."""

    kind = "residual attention"

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.down = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), nn.Conv2d(channels, hidden, 1),
                                  nn.ReLU(inplace=True), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.up = nn.Sequential(nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True),
                                _zero(nn.Conv2d(hidden, channels, 1)))

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """M (B, C, h, w) in (-1, 1): bottom-up (max-pool, convolutions), top-down (bilinear), two 1 × 1."""
        m = F.interpolate(self.down(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.tanh(self.up(m))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (1 + self.mask(x)) * x

    def spatial_map(self, x: torch.Tensor) -> torch.Tensor:
        """The channel mean of 1 + M (B, h, w): the mean gain at each position."""
        return (1 + self.mask(x)).mean(dim=1)


BLOCKS = {"cbam": CBAM, "residual": ResidualAttention}


class Attended(nn.Module):
    """A backbone stage followed by its attention block."""

    def __init__(self, stage: nn.Module, block: nn.Module):
        super().__init__()
        self.stage, self.block = stage, block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.stage(x))


def add_attention(body: nn.Module, backbone: str, kind: str) -> nn.Module:
    """``body`` (a registry backbone's, before :func:`~engine.models.fine.fine_split`) with a ``kind`` block after
    each of its last two stages, in place: the stage's child becomes an :class:`Attended` (same index, so the fine
    split still cuts where it did). ``"none"`` leaves it as it is."""
    if kind not in ATTENTIONS:
        raise ConfigError(f"attention={kind!r}: use one of {', '.join(ATTENTIONS)}")
    if kind == "none":
        return body
    if backbone not in STAGE_ENDS:
        raise ConfigError(f"attention={kind!r}: backbone {backbone!r} has no attention slots; use one of "
                          f"{', '.join(STAGE_ENDS)}, or leave --attention out")
    container = body.body if hasattr(body, "body") else body  # the small net keeps its layers in .body
    for index, channels in zip(*STAGE_ENDS[backbone]):
        container[index] = Attended(container[index], BLOCKS[kind](channels))
    return body


def attention_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's attention blocks, the next-to-last stage's first."""
    return [m for m in model.modules() if isinstance(m, (CBAM, ResidualAttention))]


@torch.no_grad()
def spatial_maps(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Every attention block's spatial map of input ``x`` (B, 3, S, S), from one pass of ``model.backbone``:
    (B, blocks, h, w) on the finest block's grid (coarser maps upsampled bilinearly)."""
    blocks = attention_blocks(model)
    if not blocks:
        raise ConfigError(f"{type(model).__name__} has no attention blocks: train with --attention cbam or residual")
    got: dict[int, torch.Tensor] = {}
    handles = [b.register_forward_hook(lambda m, inputs, out, i=i: got.__setitem__(i, m.spatial_map(inputs[0])))
               for i, b in enumerate(blocks)]
    try:
        model.backbone(x)
    finally:
        for h in handles:
            h.remove()
    maps = [got[i].float() for i in range(len(blocks))]
    size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
    return torch.stack([F.interpolate(m[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
                        if tuple(m.shape[-2:]) != tuple(size) else m for m in maps], dim=1)


__all__ = ["ATTENTIONS", "STAGE_ENDS", "GateNorm", "CBAM", "ResidualAttention", "Attended", "add_attention",
           "attention_blocks", "spatial_maps"]
