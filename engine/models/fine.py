"""Stride-16 "fine" features for every backbone of the registry (the shared-parts method,
docs/METHODS.md#shared-parts).

PDiscoNet (van der Klis et al., ICCV 2023) finds its parts on a grid finer than the last stage: the last stage,
bilinearly upsampled to the grid of the stage before it, concatenated with that stage (ResNet: layer4 + layer3,
3072 channels, 28 × 28 at 448 px for ResNet-50/101). Here:

- ResNet-18/50: layer4 (512/2048 ch) upsampled onto layer3 (256/1024 ch): 768/3072 channels, stride 16;
- MobileNetV2: ``features[14:]`` (1280 ch, stride 32) upsampled onto ``features[:14]`` (96 ch, stride 16):
  1376 channels;
- VGG-16-BN (the registry's body already drops the last pool: stride 16) and the small CPU net (stride 8): as
  they are.

The bodies come from :mod:`engine.models.backbones` (same builders, so weights load exactly as there), then are
split in two. Concatenation order follows the authors' code: upsampled last stage first, then the earlier stage.
Upsampling uses ``align_corners=False`` (cell centres of the stride-32 grid land on the right stride-16 positions);
the authors' ``upsample_bilinear`` is the ``align_corners=True`` variant, a sub-cell shift.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError
import engine.models.backbones as backbones

# name -> (channels of the stride-16 stage, channels of the last stage) for the two-stage bodies
_SPLIT_WIDTHS = {"resnet18": (256, 512), "resnet50": (1024, 2048), "mobilenet_v2": (96, 1280)}
_SPLIT_AT = {"resnet18": 7, "resnet50": 7, "mobilenet_v2": 14}  # index of the last stage in the body

FINE_BACKBONES: dict[str, str] = {
    "resnet18": "ResNet-18 layer4 (upsampled) + layer3, 768 channels, stride 16",
    "resnet50": "ResNet-50 layer4 (upsampled) + layer3, 3072 channels, stride 16",
    "vgg16_bn": "VGG-16-BN without its last pool (already stride 16), 512 channels",
    "mobilenet_v2": "MobileNetV2 features[14:] (upsampled) + features[:14], 1376 channels, stride 16",
    "smallnet": "small CPU net (already stride 8), 128 channels",
}


class FineFeatures(nn.Module):
    """``cat(upsample(late(early(x))), early(x))``: the last stage on the previous stage's grid."""

    def __init__(self, early: nn.Module, late: nn.Module):
        super().__init__()
        self.early = early
        self.late = late

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.early(x)
        last = self.late(mid)
        last = F.interpolate(last, size=mid.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat((last, mid), dim=1)


def fine_backbone(name: str, pretrained: str | None = None) -> tuple[nn.Module, int, int]:
    """``(module, width, stride)`` of the fine features of registry backbone ``name``; ``pretrained`` as for
    :data:`engine.models.backbones.BACKBONES` (None, a torchvision weights name, or a local file)."""
    if name not in backbones.BACKBONES:
        raise ConfigError(f"backbone {name!r} is unknown: use one of {', '.join(backbones.BACKBONES)}")
    return fine_split(name, *backbones.BACKBONES[name][0](pretrained))


def fine_split(name: str, body: nn.Module, width: int, stride: int) -> tuple[nn.Module, int, int]:
    """The fine features of registry backbone ``name``'s ``body`` (as its builder returned it, with its
    ``width`` and ``stride``): what :func:`fine_backbone` returns, for a body already changed (e.g. with
    attention blocks, :mod:`engine.models.attention`)."""
    if name not in _SPLIT_AT:
        return body, width, stride  # already stride 16 (VGG-16-BN) or finer (smallnet)
    layers = list(body.children())
    cut = _SPLIT_AT[name]
    mid, last = _SPLIT_WIDTHS[name]
    assert last == width, (name, width)
    early = nn.Sequential(*layers[:cut])
    late = layers[cut] if len(layers) == cut + 1 else nn.Sequential(*layers[cut:])
    return FineFeatures(early, late), mid + last, stride // 2


__all__ = ["FINE_BACKBONES", "FineFeatures", "fine_backbone", "fine_split"]
