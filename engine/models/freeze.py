"""Freezing a pretrained partnet backbone for speed (``--freeze-bn``, ``--freeze-stages N``;
docs/METHODS.md#freezing).

* **Frozen BatchNorm.** Each ``nn.BatchNorm2d`` becomes a :class:`FrozenBatchNorm2d`: the running statistics and the
  affine weight and bias fixed (buffers, not parameters), so the layer is the affine map that eval-mode BatchNorm
  computes, in training too, as torchvision's detection models freeze theirs (``torchvision.ops.FrozenBatchNorm2d``).
  Where the BatchNorm directly follows a convolution (the next module of an ``nn.Sequential``; ``convN`` / ``bnN``
  of a torchvision ResNet block), the map is folded into that convolution (:class:`FoldedConv2d`: weight × scale,
  bias = shift), so the layer costs nothing forward or backward; the others compute ``x · scale + shift``. The
  statistics no longer depend on the batch, so micro-batches (``engine.training.memory``) change nothing.
* **Frozen stages.** The first N stages of the backbone (:data:`STAGES`) keep their pretrained weights:
  ``requires_grad`` False, so autograd neither back-propagates into them (when nothing before them needs a
  gradient) nor keeps their activations, and their BatchNorm layers frozen as above, which is eval mode whatever
  ``train()`` says (the stages have no dropout).

The state dict keeps the names, shapes and entries of ``nn.BatchNorm2d`` (``num_batches_tracked`` included), so a
frozen model saves as the same safetensors file and a run loads into the plain model (``engine.runs.load_run``),
which in eval mode computes what the frozen model computes.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from engine.errors import ConfigError
from engine.models.attention import Attended

#: Per registry backbone, its stages as ``[start, end)`` ranges over the body's children (the body as its builder
#: returns it, before ``fine_split`` and attention blocks, which keep the indices), each ending at one resolution:
#: ResNet: the stem (conv1, bn1, ReLU, max-pool: stride 4), then layer1-layer4 (strides 4, 8, 16, 32);
#: MobileNetV2: features[0:2] (the first convolution and bottleneck, stride 2), then the bottleneck groups that end
#: at strides 4, 8, 16 and 32 (features[2:4], [4:7], [7:14], [14:19] with the last 1 x 1 convolution);
#: VGG-16-BN: its five convolution blocks with the pool that ends each (conv5 without one); the small net: its
#: three blocks, ending at strides 2, 4 and 8.
STAGES: dict[str, tuple[tuple[int, int], ...]] = {
    "resnet18": ((0, 4), (4, 5), (5, 6), (6, 7), (7, 8)),
    "resnet50": ((0, 4), (4, 5), (5, 6), (6, 7), (7, 8)),
    "mobilenet_v2": ((0, 2), (2, 4), (4, 7), (7, 14), (14, 19)),
    "vgg16_bn": ((0, 7), (7, 14), (14, 24), (24, 34), (34, 43)),
    "smallnet": ((0, 6), (6, 13), (13, 20)),
}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine: ``y = (x − mean) / sqrt(var + eps) · weight + bias``, all four
    buffers. ``folded``: a :class:`FoldedConv2d` before it applies the map, and this layer passes its input on."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps, self.folded = eps, False
        for name, value in (("weight", torch.ones(channels)), ("bias", torch.zeros(channels)),
                            ("running_mean", torch.zeros(channels)), ("running_var", torch.ones(channels))):
            self.register_buffer(name, value)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> "FrozenBatchNorm2d":
        """The frozen copy of ``bn`` (its current statistics; weight 1 and bias 0 when it has no affine)."""
        frozen = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            if bn.track_running_stats:
                frozen.running_mean.copy_(bn.running_mean)
                frozen.running_var.copy_(bn.running_var)
                frozen.num_batches_tracked.copy_(bn.num_batches_tracked)
        return frozen.to(bn.running_mean.device if bn.running_mean is not None else bn.weight.device)

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) per channel: ``y = x · scale + shift``."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded:
            return x
        scale, shift = self.scale_shift()
        return torch.addcmul(shift.view(1, -1, 1, 1).to(x.dtype), x, scale.view(1, -1, 1, 1).to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}" + (", folded into the convolution before it"
                                                            if self.folded else "")


class FoldedConv2d(nn.Conv2d):
    """A convolution whose output goes straight into a :class:`FrozenBatchNorm2d`, computed as one convolution:
    weight × scale, bias × scale + shift. Made from an ``nn.Conv2d`` in place (:func:`fold`); its parameters stay its
    own (names, shapes), and the BatchNorm stays where it was, folded (the identity), holding the statistics."""

    folded_bn: FrozenBatchNorm2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.folded_bn.scale_shift()
        bias = shift if self.bias is None else self.bias * scale + shift
        return self._conv_forward(x, self.weight * scale.view(-1, 1, 1, 1), bias)


def fold(conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> None:
    """Fold ``bn`` into ``conv`` (in place): ``conv`` becomes a :class:`FoldedConv2d`, ``bn`` the identity."""
    conv.__class__ = FoldedConv2d
    object.__setattr__(conv, "folded_bn", bn)  # a plain reference: the state dict keeps bn where it is
    bn.folded = True


def _conv_before(parent: nn.Module, name: str) -> nn.Conv2d | None:
    """The convolution whose output is the only input of ``parent``'s child ``name``, where the structure says so:
    the child before it in an ``nn.Sequential``, ``convN`` for ``bnN`` in a torchvision ResNet block."""
    if isinstance(parent, nn.Sequential):
        names = [n for n, _ in parent.named_children()]
        i = names.index(name)
        before = getattr(parent, names[i - 1]) if i > 0 else None
    elif isinstance(parent, (BasicBlock, Bottleneck)) and name.startswith("bn"):
        before = getattr(parent, "conv" + name[2:], None)
    else:
        before = None
    return before if type(before) is nn.Conv2d else None


def freeze_batchnorm(module: nn.Module, only: set[int] | None = None) -> int:
    """Every ``nn.BatchNorm2d`` in ``module`` frozen (in place; SyncBatchNorm included), or those whose ``id`` is in
    ``only``, folded into the convolution before it where possible; returns how many."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.BatchNorm2d | nn.SyncBatchNorm) or (only is not None and id(child) not in only):
                continue
            frozen = FrozenBatchNorm2d.from_batchnorm(child)
            setattr(parent, name, frozen)
            conv = _conv_before(parent, name)
            if conv is not None:
                fold(conv, frozen)
            count += 1
    return count


def body_layers(model: nn.Module) -> list[nn.Module]:
    """The children of a partnet model's backbone body, in the builder's order (through ``fine_split``'s two halves
    and the small net's ``body``)."""
    from engine.models.fine import FineFeatures

    backbone = model.backbone
    if isinstance(backbone, FineFeatures):
        late = backbone.late
        whole = list(backbone.early.children()) + [late]
        name = model.arch["name"]
        if len(whole) != STAGES[name][-1][1]:  # the last stage was split off as a Sequential of several children
            whole = list(backbone.early.children()) + list(late.children())
        return whole
    return list((backbone.body if hasattr(backbone, "body") else backbone).children())


def stage_count(name: str) -> int:
    """How many stages backbone ``name`` has for ``--freeze-stages`` (0 when it has none defined)."""
    return len(STAGES.get(name, ()))


def freeze_stages(model: nn.Module, n: int) -> list[nn.Module]:
    """The first ``n`` stages of a partnet model's backbone frozen in place (weights without gradient, BatchNorm
    frozen); returns their modules."""
    name = model.arch["name"]
    if name not in STAGES:
        raise ConfigError(f"freeze_stages={n}: model {name!r} has no stages defined; use one of "
                          f"{', '.join(STAGES)}, or leave --freeze-stages out")
    if not 0 <= n <= len(STAGES[name]):
        raise ConfigError(f"freeze_stages={n}: {name} has {len(STAGES[name])} stages; give 0 to "
                          f"{len(STAGES[name])}")
    layers = body_layers(model)
    if len(layers) != STAGES[name][-1][1]:
        raise ConfigError(f"freeze_stages={n}: the body of {name} has {len(layers)} layers, not the "
                          f"{STAGES[name][-1][1]} its stages name; leave --freeze-stages out")
    # an attention block after a frozen stage (``--attention``) is a new layer: it still learns
    frozen = [layer.stage if isinstance(layer, Attended) else layer for layer in layers[:STAGES[name][n - 1][1]]] \
        if n else []
    for layer in frozen:
        for p in layer.parameters():
            p.requires_grad_(False)
    # through the backbone: a stage's BatchNorm may be a child of the body itself (VGG, the ResNet stem)
    freeze_batchnorm(model.backbone, {id(m) for layer in frozen for m in layer.modules()})
    return frozen


def apply_freezing(model: nn.Module, freeze_bn: bool, stages: int) -> None:
    """``--freeze-stages`` then ``--freeze-bn`` on a partnet model, in place, after its weights are loaded."""
    if stages:
        freeze_stages(model, stages)
    if freeze_bn:
        freeze_batchnorm(model.backbone)


def describe_frozen(model: nn.Module) -> str | None:
    """A line saying what of the model's backbone is frozen, or None when nothing is."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return None
    norms = sum(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    folded = sum(isinstance(m, FrozenBatchNorm2d) and m.folded for m in backbone.modules())
    weights = sum(p.numel() for p in backbone.parameters() if not p.requires_grad)
    if not norms and not weights:
        return None
    total = sum(p.numel() for p in backbone.parameters())
    return (f"frozen: {norms} BatchNorm layers of the backbone ({folded} folded into their convolutions), "
            f"{weights:,} of its {total:,} weights")


__all__ = ["STAGES", "FrozenBatchNorm2d", "FoldedConv2d", "fold", "freeze_batchnorm", "body_layers", "stage_count",
           "freeze_stages", "apply_freezing",
           "describe_frozen"]
