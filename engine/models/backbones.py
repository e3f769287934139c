"""Backbones: torchvision feature extractors (and a small CPU net) returning (B, C, H, W) maps.

Each builder returns ``(features: nn.Module, width: int, stride: int)``. ImageNet weights are loaded into the
full torchvision network first (so torchvision's own state dict names match), then its body is taken.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm

from engine.errors import ConfigError
from engine.models.weights import load_into, load_state_dict_file, looks_like_path, torchvision_state_dict

BackboneBuilder = Callable[[str | None], tuple[nn.Module, int, int]]


def pretrained_state(name: str, pretrained: str | None) -> dict | None:
    """The state dict that ``pretrained`` names for torchvision network ``name``: a local file, or a torchvision
    weights name (DEFAULT, IMAGENET1K_V1, ...); None for none."""
    if pretrained in (None, "", "none", "None"):
        return None
    if looks_like_path(pretrained):
        return load_state_dict_file(pretrained)
    return torchvision_state_dict(_TV[name][1], pretrained)


def torchvision_net(name: str, pretrained: str | None = None, **kwargs) -> nn.Module:
    """A whole torchvision network with its weights loaded (used by TASN, which takes its own layers)."""
    ctor, _enum, ignore = _TV[name]
    net = ctor(weights=None, **kwargs)
    state = pretrained_state(name, pretrained)
    if state is not None:
        load_into(net, state, pretrained, ignore_prefixes=ignore)
    return net


_TV = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights, ("fc.",)),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights, ("fc.",)),
    "vgg16_bn": (tvm.vgg16_bn, tvm.VGG16_BN_Weights, ("classifier.",)),
    "mobilenet_v2": (tvm.mobilenet_v2, tvm.MobileNet_V2_Weights, ("classifier.",)),
}


def resnet_body(net: nn.Module) -> nn.Module:
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)


def resnet18(pretrained: str | None = None) -> tuple[nn.Module, int, int]:
    return resnet_body(torchvision_net("resnet18", pretrained)), 512, 32


def resnet50(pretrained: str | None = None) -> tuple[nn.Module, int, int]:
    return resnet_body(torchvision_net("resnet50", pretrained)), 2048, 32


def vgg16_bn(pretrained: str | None = None) -> tuple[nn.Module, int, int]:
    net = torchvision_net("vgg16_bn", pretrained)
    return nn.Sequential(*list(net.features)[:-1]), 512, 16  # drop the last max-pool: 14x14 maps at 224 px


def mobilenet_v2(pretrained: str | None = None) -> tuple[nn.Module, int, int]:
    return torchvision_net("mobilenet_v2", pretrained).features, 1280, 32


class SmallNet(nn.Module):
    """A small CNN (about 60 k parameters, stride 8, receptive field 17 px) for training from scratch on a CPU:
    the toy-birds demo and fast tests. 16x16 part maps at 128 px.

    The receptive field is kept small on purpose: a part channel can then only fire where its evidence is, so
    its peak stays on the field mark. With the usual 3x3 stacks (receptive field 61 px) the channels of a class
    fired at junctions between marks and beside them (they still saw the mark from there) and the demo's mark
    recall was 50-70 %; at 17 px it is 85 % (measured on the demo, docs/RESULTS.md#demo-changes)."""

    def __init__(self, width: int = 128):
        super().__init__()

        def conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        # receptive field / stride after each block: 3/2, 3/2, 5/4, 13/4, 13/4, 17/8, 17/8, 17/8
        self.body = nn.Sequential(*conv(3, 32, 3, 2), *conv(32, 48, 1), nn.MaxPool2d(2), *conv(48, 64, 3),
                                  *conv(64, 64, 1), nn.MaxPool2d(2), *conv(64, width, 1), *conv(width, width, 1))
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def smallnet(pretrained: str | None = None) -> tuple[nn.Module, int, int]:
    net = SmallNet()
    if pretrained not in (None, "", "none", "None"):
        if not looks_like_path(pretrained):
            from engine.errors import WeightsError

            raise WeightsError(f"smallnet has no published weights ({pretrained!r}): train from scratch "
                               "(no --pretrained) or pass a local file saved from a smallnet")
        load_into(net, load_state_dict_file(pretrained), pretrained)
    return net, net.width, 8


BACKBONES: dict[str, tuple[BackboneBuilder, str]] = {
    "resnet18": (resnet18, "ResNet-18 (torchvision), 512 channels, stride 32"),
    "resnet50": (resnet50, "ResNet-50 (torchvision), 2048 channels, stride 32"),
    "vgg16_bn": (vgg16_bn, "VGG-16-BN (torchvision) without its last pool, 512 channels, stride 16"),
    "mobilenet_v2": (mobilenet_v2, "MobileNetV2 (torchvision), 1280 channels, stride 32"),
    "smallnet": (smallnet, "small CNN for CPU training from scratch (toy birds, tests), 128 channels, stride 8, "
                           "receptive field 17 px"),
}


PADDINGS = ("zeros", "replicate", "reflect")


def set_padding(module: nn.Module, mode: str) -> nn.Module:
    """Pad every padded convolution of ``module`` with ``mode`` (``zeros``, torchvision's, or ``replicate`` /
    ``reflect``), in place; the weights are untouched, so pretrained weights load the same. Zero padding lets a
    network tell the frame's edge from its inside: MC-Loss's diversity term uses that to park part peaks on the
    border (docs/METHODS.md#mc-loss-border)."""
    if mode not in PADDINGS:
        raise ConfigError(f"padding={mode!r}: use one of {', '.join(PADDINGS)}")
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and (m.padding == "same" or (isinstance(m.padding, tuple) and any(m.padding))):
            m.padding_mode = mode
    return module
