"""TASN: Trilinear Attention Sampling Network (Zheng et al., "Looking for the Devil in the Details: Learning
Trilinear Attention Sampling Network for Fine-grained Image Recognition", CVPR 2019), as docs/METHODS.md#tasn.

Pipeline: an attention network (stride-8 features X, its own BN + ReLU + GAP + linear + CE head) → trilinear
attention M(X) (C maps, treated as constants) → structure map (channel sum, squared) and detail map (one random
channel per sample in training, the sum at test time) → the attention sampler (``engine.models.sampler``) makes the
structure-preserved I_s and detail-preserved I_d images → one backbone sees both (part net on I_d, master net
on I_s, shared weights), pooled z_d, z_s → fc_part(z_d), fc_master(z_s) and a shared fc on both → distillation
from the part net to the master net. Prediction: fc_master on I_s (the master net).

The file reads top to bottom: trilinear attention, the attention network, the model, the loss, the builders.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from engine.errors import ConfigError
from engine.models.sampler import detail_map, detail_preserved, structure_map, structure_preserved
from engine.models.backbones import resnet_body
from engine.models.weights import load_into

log = logging.getLogger(__name__)


def trilinear_attention(x: torch.Tensor, tau: float = 7.0) -> torch.Tensor:
    """M(X) = N₂(N₁(τX)·Xᵀ)·X (TASN eq. 2): X (B, C, H, W) → C attention maps (B, C, H, W).

    N₁ is a softmax over the spatial positions of each channel (τ = 7 in the authors' code, to sharpen it), N₂ a
    softmax over each row of the C×C channel-relation matrix, so every output map is a convex combination of the
    input channels, weighted by how much they co-occur with that channel's peak."""
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    relation = torch.softmax(tau * f, dim=2) @ f.transpose(1, 2)  # (B, C, C)
    return (torch.softmax(relation, dim=2) @ f).reshape(b, c, h, w)


class MultiDilationConvs(nn.Module):
    """The authors' attention head: a 3×3 conv applied at dilations 1, 2 (shared weights, each ReLU'd, summed),
    then a second 3×3 conv at dilations 1, 2, 3 the same way. Output non-negative, same size as the input."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    @staticmethod
    def _multi(conv: nn.Conv2d, x: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
        return sum(F.relu(F.conv2d(x, conv.weight, conv.bias, padding=d, dilation=d)) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._multi(self.conv2, self._multi(self.conv1, x, (1, 2)), (1, 2, 3))


class AttentionNet(nn.Module):
    """``body`` (an image → stride-8 feature extractor) followed by :class:`MultiDilationConvs`."""

    def __init__(self, body: nn.Module, body_width: int, width: int):
        super().__init__()
        self.body = body
        self.head = MultiDilationConvs(body_width, width)
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass
class TASNOutputs:
    """Everything the TASN loss needs from one training pass (logits are (B, num_classes))."""

    att_logits: torch.Tensor            # attention network's own head
    part_logits: torch.Tensor           # fc_part(z_d): part net on the detail-preserved image
    master_logits: torch.Tensor         # fc_master(z_s): master net on the structure-preserved image
    shared_part_logits: torch.Tensor    # fc(z_d)
    shared_master_logits: torch.Tensor  # fc(z_s)
    structure_images: torch.Tensor      # I_s (B, 3, S, S)
    detail_images: torch.Tensor         # I_d (B, 3, S, S)
    structure_grid: torch.Tensor        # (B, S, S, 2), for mapping points back (engine.models.sampler)
    detail_grid: torch.Tensor


def _infer_width(module: nn.Module) -> int:
    width = getattr(module, "out_channels", None)
    if isinstance(width, int):
        return width
    was_training = module.training
    module.eval()
    with torch.no_grad():
        width = int(module(torch.zeros(1, 3, 64, 64)).shape[1])
    module.train(was_training)
    return width


class TASN(nn.Module):
    """TASN (Zheng et al., CVPR 2019) around any attention network and classification backbone.

    ``attention_backbone``: image → non-negative stride-8 feature map X (its width read from ``out_channels``);
    it sees the image resized to ``sample_size`` (the authors: 224 for a 512 input). ``backbone``: image →
    (B, ``feature_width``, h, w), shared by the part net and the master net. ``input_size``: the image size the
    model is trained at (the sampler reads the actual size, so others work too); ``sample_size``: S, the side of
    I_s and I_d. ``forward`` returns the master net's logits (train and eval); ``tasn_outputs`` all of them.
    ``forward_features`` / ``forward_head`` are the attention network's feature map X (the "part channels" the
    application shows; ``attention_maps`` gives the trilinear maps M(X) built from them) and its own head.
    """

    groups = None  # no per-class channel groups (those are MC-Loss's)

    def __init__(self, attention_backbone: nn.Module, backbone: nn.Module, feature_width: int, num_classes: int,
                 input_size: int, sample_size: int):
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
        if input_size < 16 or sample_size < 16:
            raise ConfigError(f"input_size={input_size}, sample_size={sample_size}: use at least 16 px "
                              "(the authors use 512 and 224)")
        self.attention_backbone = attention_backbone
        self.backbone = backbone
        att_width = _infer_width(attention_backbone)
        self.att_bn = nn.BatchNorm2d(att_width)
        self.att_fc = nn.Linear(att_width, num_classes)
        self.fc_part = nn.Linear(feature_width, num_classes)
        self.fc_master = nn.Linear(feature_width, num_classes)
        self.fc = nn.Linear(feature_width, num_classes)
        self.num_classes, self.feature_width, self.attention_width = num_classes, feature_width, att_width
        self.input_size, self.sample_size = input_size, sample_size
        self.tau, self.dense, self.iters = 7.0, 4.0, 5  # authors' values (docs/METHODS.md#tasn-sampler)

    # ------------------------------------------------------------------------------------ attention network
    def _attention_input(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sample_size
        if x.shape[-2:] == (s, s):
            return x
        return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The attention network's feature map X (B, C, h, w), non-negative, stride 8 of ``sample_size``."""
        return self.attention_backbone(self._attention_input(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The attention network's head on X: BN + ReLU + GAP (+ linear), as the authors' MXNet code."""
        pooled = F.relu(self.att_bn(features)).mean(dim=(2, 3))
        return pooled if pre_logits else self.att_fc(pooled)

    def _maps(self, features: torch.Tensor, size: tuple[int, int],
              random_detail: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(trilinear (B, C, h, w), structure (B, H, W), detail (B, H, W)), all without gradient: the sampler
        treats the maps as constants (the attention net learns from its own CE only)."""
        with torch.no_grad(), torch.autocast(features.device.type, enabled=False):  # softmax(7X) wants float32
            tri = trilinear_attention(features.detach().float(), self.tau)
            index = (torch.randint(tri.shape[1], (tri.shape[0],), device=tri.device) if random_detail else None)
            return tri, structure_map(tri, size), detail_map(tri, size, index)

    def attention_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"trilinear": (B, C, h, w), "structure": (B, H, W), "detail": (B, H, W)} at the input's size; the
        detail map is a random channel per sample in training mode and the channel sum in eval mode."""
        with torch.no_grad():
            tri, s, d = self._maps(self.forward_features(x), tuple(x.shape[-2:]), self.training)
        return {"trilinear": tri, "structure": s, "detail": d}

    # ------------------------------------------------------------------------------------ part / master nets
    def _pooled(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images).mean(dim=(2, 3))

    def tasn_outputs(self, x: torch.Tensor) -> TASNOutputs:
        """One full TASN pass: attention logits, I_s and I_d, and the five logits of the part/master nets."""
        features = self.forward_features(x)
        att_logits = self.forward_head(features)
        _, s_map, d_map = self._maps(features, tuple(x.shape[-2:]), self.training)
        i_s, g_s = structure_preserved(x, s_map, self.sample_size, self.dense, self.iters)
        i_d, g_d = detail_preserved(x, d_map, self.sample_size, self.dense, self.iters)
        z_d, z_s = self._pooled(torch.cat((i_d, i_s))).chunk(2)  # one backbone, one batch (as the authors)
        return TASNOutputs(att_logits, self.fc_part(z_d), self.fc_master(z_s), self.fc(z_d), self.fc(z_s),
                           i_s, i_d, g_s, g_d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Master net on the structure-preserved image → logits (B, num_classes): the paper's prediction."""
        with torch.no_grad():  # the attention net only places the samples here
            _, s_map, _ = self._maps(self.forward_features(x), tuple(x.shape[-2:]), False)
        i_s, _ = structure_preserved(x, s_map, self.sample_size, self.dense, self.iters)
        return self.fc_master(self._pooled(i_s))

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(pretrained-side parameters, new parameters) for the two learning rates: the attention body and the
        backbone, then the multi-dilation convs, the attention head and the three linear layers."""
        att = self.attention_backbone
        body = list(att.body.parameters()) if isinstance(att, AttentionNet) else list(att.parameters())
        head = list(att.head.parameters()) if isinstance(att, AttentionNet) else []
        for m in (self.att_bn, self.att_fc, self.fc_part, self.fc_master, self.fc):
            head += list(m.parameters())
        return body + list(self.backbone.parameters()), head


class TASNCriterion(nn.Module):
    """The authors' TASN loss: CE(att) + ½·[CE(fc_part z_d) + CE(fc_master z_s) + CE(fc z_d) + CE(fc z_s)]
    − Σ softmax(fc_part z_d / T)·log_softmax(fc_master z_s / T), T = 10, weight 1, means over the batch (the
    distillation target is not detached, as in their MXNet code). ``parts``: unweighted, detached terms
    ("shared" is CE(fc z_d) + CE(fc z_s)); total = att + ½(part + master + shared) + distill."""

    def __init__(self, temperature: float = 10.0):
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature={temperature}: use a positive value (the authors use 10)")
        self.temperature = temperature

    def forward(self, model: TASN, images: torch.Tensor,
                targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = model.tasn_outputs(images)
        ce = F.cross_entropy
        att = ce(out.att_logits.float(), targets)
        part = ce(out.part_logits.float(), targets)
        master = ce(out.master_logits.float(), targets)
        shared = ce(out.shared_part_logits.float(), targets) + ce(out.shared_master_logits.float(), targets)
        t = self.temperature
        soft_part = torch.softmax(out.part_logits.float() / t, dim=1)
        distill = -(soft_part * torch.log_softmax(out.master_logits.float() / t, dim=1)).sum(dim=1).mean()
        total = att + 0.5 * (part + master + shared) + distill
        parts = {"att": att, "part": part, "master": master, "shared": shared, "distill": distill}
        return total, {k: v.detach() for k, v in parts.items()}


# ------------------------------------------------------------------------------------------------ builders
def _torchvision(ctor, state: dict[str, torch.Tensor] | None, ignore: tuple[str, ...], **kwargs) -> nn.Module:
    net = ctor(weights=None, **kwargs)
    if state is not None:
        load_into(net, state, "pretrained_backbone", ignore_prefixes=ignore)
    return net


def _stride_one(layer: nn.Sequential) -> None:
    """Remove the stride 2 of a ResNet stage (its first block's conv and shortcut), as the authors do."""
    for m in layer[0].modules():
        if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
            m.stride = (1, 1)


def tasn_resnet18(num_classes: int, pretrained_backbone: dict[str, torch.Tensor] | None = None,
                  input_size: int = 224, sample_size: int = 224) -> TASN:
    """The authors' attention network: ResNet-18 with stages 2 and 4 at stride 1 (total stride 8; the authors
    drop the stride without dilating, and torchvision's BasicBlock refuses ``replace_stride_with_dilation``),
    then the multi-dilation convs (512 wide). Backbone: ResNet-18 conv1..layer4 (512). Both start from
    ``pretrained_backbone`` (a torchvision resnet18 state dict) when given."""
    att = _torchvision(tvm.resnet18, pretrained_backbone, ("fc.",))
    _stride_one(att.layer2)
    _stride_one(att.layer4)
    master = _torchvision(tvm.resnet18, pretrained_backbone, ("fc.",))
    return TASN(AttentionNet(resnet_body(att), 512, 512), resnet_body(master), 512, num_classes,
                input_size, sample_size)


def tasn_resnet50(num_classes: int, pretrained_backbone: dict[str, torch.Tensor] | None = None,
                  input_size: int = 224, sample_size: int = 224) -> TASN:
    """Attention network from the same ResNet-50 (so that one state dict initialises both): conv1..layer3 with
    layer3 dilated (``replace_stride_with_dilation``; stride 8, 1024 channels), then the multi-dilation convs
    (512 wide), about the cost of the authors' ResNet-18 one. Backbone: ResNet-50 conv1..layer4 (2048)."""
    att = _torchvision(tvm.resnet50, pretrained_backbone, ("fc.",), replace_stride_with_dilation=[False, True, True])
    body = nn.Sequential(att.conv1, att.bn1, att.relu, att.maxpool, att.layer1, att.layer2, att.layer3)
    master = _torchvision(tvm.resnet50, pretrained_backbone, ("fc.",))
    return TASN(AttentionNet(body, 1024, 512), resnet_body(master), 2048, num_classes, input_size, sample_size)


def tasn_mobilenet_v2(num_classes: int, pretrained_backbone: dict[str, torch.Tensor] | None = None,
                      input_size: int = 224, sample_size: int = 224) -> TASN:
    """A CPU-friendly TASN: attention network = MobileNetV2 ``features[:7]`` (stride 8, 32 channels) widened to
    128 by the multi-dilation convs (0.35 GMAC at 28x28; 256 wide costs 1.4); backbone = MobileNetV2 ``features`` (1280)."""
    att = _torchvision(tvm.mobilenet_v2, pretrained_backbone, ("classifier.",))
    master = _torchvision(tvm.mobilenet_v2, pretrained_backbone, ("classifier.",))
    return TASN(AttentionNet(att.features[:7], 32, 128), master.features, 1280, num_classes,
                input_size, sample_size)


__all__ = ["trilinear_attention", "MultiDilationConvs", "AttentionNet", "TASN", "TASNOutputs", "TASNCriterion",
           "tasn_resnet18", "tasn_resnet50", "tasn_mobilenet_v2"]
