"""The MC-Loss part network (Chang et al., IEEE TIP 2020): a backbone, part channels (c·ξ, one contiguous
group per class), then global average pooling and a linear layer for prediction.

When the backbone width is not c·ξ, a 1×1 conv + BN + ReLU projects to c·ξ "part channels"
(``part_channels="project"``, the default when needed); ``"split"`` keeps the backbone's own channels and
splits them unevenly among the classes (smaller groups first).
"""

from __future__ import annotations

import torch
from torch import nn

from engine.errors import ConfigError
from engine.models.attention import attention_blocks
from engine.models.groups import group_sizes


class PartNet(nn.Module):
    def __init__(self, backbone: nn.Module, width: int, stride: int, num_classes: int, xi: int = 3,
                 part_channels: str = "auto"):
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
        if xi < 1:
            raise ConfigError(f"xi={xi}: each class needs at least one channel (the paper uses 3)")
        if part_channels not in ("auto", "project", "split"):
            raise ConfigError(f"part_channels={part_channels!r}: use auto, project or split")
        self.backbone = backbone
        self.stride = stride
        self.num_classes = num_classes
        self.xi = xi
        want = num_classes * xi
        if part_channels == "split" or (part_channels == "auto" and width == want):
            self.groups = group_sizes(width, num_classes)
            self.proj = nn.Identity()
            n = width
        else:
            self.groups = [xi] * num_classes
            self.proj = nn.Sequential(nn.Conv2d(width, want, 1, bias=False), nn.BatchNorm2d(want),
                                      nn.ReLU(inplace=True))
            n = want
        self.part_channels = part_channels
        self.num_features = n
        self.fc = nn.Linear(n, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Part channels F (B, N, h, w), non-negative; class i owns a contiguous group of them."""
        return self.proj(self.backbone(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3))
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, head parameters): they train at different learning rates. Attention blocks
        (``--attention``, new layers inside the backbone) learn with the head."""
        new = [p for block in attention_blocks(self.backbone) for p in block.parameters()]
        fresh = {id(p) for p in new}
        head = new + list(self.proj.parameters()) + list(self.fc.parameters())
        return [p for p in self.backbone.parameters() if id(p) not in fresh], head

    def class_channels(self, class_index: int) -> range:
        start = sum(self.groups[:class_index])
        return range(start, start + self.groups[class_index])
