"""The model registry: ``list_models()`` and ``create_model(name, num_classes, xi=3, pretrained=...)``.

Every model exposes ``forward_features`` (part channels) and ``forward_head`` (logits), a ``groups`` list (the
channel group of each class) and ``param_groups()`` (backbone, head) for the two learning rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from engine.errors import ConfigError
from engine.models.backbones import BACKBONES, set_padding
from engine.models.attention import ATTENTIONS, add_attention
from engine.models.fine import fine_split
from engine.models.partnet import PartNet
from engine.models.shared_parts import SharedPartsNet


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "partnet" (MC-Loss / CE), "tasn" or "racnn"
    description: str
    build: Callable[..., nn.Module]
    default_pretrained: str | None = None  # the torchvision weights name, when it has one


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> None:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec


def list_models(family: str | None = None) -> list[str]:
    return [n for n, s in _REGISTRY.items() if family is None or s.family == family]


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"model {name!r} is unknown: use one of {', '.join(_REGISTRY)} "
                          "(`fieldmark models` lists them)") from None


def create_model(name: str, num_classes: int, xi: int = 3, pretrained: str | None = None, **kwargs) -> nn.Module:
    """Build a registered model. ``pretrained``: None, a torchvision weights name ("DEFAULT",
    "IMAGENET1K_V1"), or a local .pth/.safetensors file of the backbone's torchvision state dict."""
    spec = get_spec(name)
    model = spec.build(num_classes=num_classes, xi=xi, pretrained=pretrained, **kwargs)
    model.arch = {"name": name, "num_classes": num_classes, "xi": xi, **kwargs}
    return model


HEADS = ("mcloss", "parts")


def _partnet_builder(backbone: str) -> Callable[..., nn.Module]:
    """A part network on ``backbone``. ``head="mcloss"`` (default, also the CE method's): per-class part channels
    (:class:`PartNet`); ``head="parts"``: K parts shared by all classes (:class:`SharedPartsNet`, PDiscoNet).
    ``fine``: stride-16 features, the last stage upsampled and concatenated with the one before it
    (:mod:`engine.models.fine`). ``padding``: how the backbone's convolutions pad (``zeros`` as torchvision,
    ``replicate`` or ``reflect``; :func:`~engine.models.backbones.set_padding`). ``zoom``: shared parts zoom to the
    bird with this margin (0: off; :class:`SharedPartsNet`). ``attention``: ``cbam`` or ``residual`` blocks after
    the backbone's last two stages, the identity at initialisation (:mod:`engine.models.attention`)."""

    def build(num_classes: int, xi: int = 3, pretrained: str | None = None, part_channels: str = "auto",
              head: str = "mcloss", fine: bool = False, parts: int = 8, part_dropout: float = 0.3,
              gumbel: bool = False, padding: str = "zeros", zoom: float = 0.0, attention: str = "none"
              ) -> nn.Module:
        if head not in HEADS:
            raise ConfigError(f"head={head!r}: use one of {', '.join(HEADS)}")
        body, width, stride = BACKBONES[backbone][0](pretrained)
        add_attention(body, backbone, attention)  # checks the name; none leaves the body as it is
        features, width, stride = fine_split(backbone, body, width, stride) if fine else (body, width, stride)
        set_padding(features, padding)  # checks the name; zeros leaves torchvision's padding as it is
        if head == "parts":
            return SharedPartsNet(features, width, stride, num_classes, parts, part_dropout, gumbel, zoom)
        return PartNet(features, width, stride, num_classes, xi, part_channels)

    return build


_DEFAULT_WEIGHTS = {"resnet18": "IMAGENET1K_V1", "resnet50": "IMAGENET1K_V2", "vgg16_bn": "IMAGENET1K_V1",
                    "mobilenet_v2": "IMAGENET1K_V1"}

for _name, (_builder, _desc) in BACKBONES.items():
    register(ModelSpec(_name, "partnet", _desc, _partnet_builder(_name), _DEFAULT_WEIGHTS.get(_name)))


def _tasn_builder(backbone: str) -> Callable[..., nn.Module]:
    """TASN (Zheng et al., CVPR 2019) on a torchvision backbone; ``xi`` does not apply (no class groups)."""

    def build(num_classes: int, xi: int = 3, pretrained: str | None = None, input_size: int = 224,
              sample_size: int = 224) -> nn.Module:
        import engine.models.tasn as tasn
        from engine.models.backbones import pretrained_state

        state = pretrained_state(backbone, pretrained)
        return getattr(tasn, f"tasn_{backbone}")(num_classes, pretrained_backbone=state, input_size=input_size,
                                                 sample_size=sample_size)

    return build


for _name, _desc in (("resnet18", "TASN, ResNet-18 attention net (stride 8) + ResNet-18 part/master net"),
                     ("resnet50", "TASN, ResNet-50 attention net (dilated, stride 8) + ResNet-50 part/master net"),
                     ("mobilenet_v2", "TASN, MobileNetV2 attention net (stride 8) + MobileNetV2 part/master net")):
    register(ModelSpec(f"tasn_{_name}", "tasn", _desc, _tasn_builder(_name), _DEFAULT_WEIGHTS[_name]))


def _racnn_builder(backbone: str) -> Callable[..., nn.Module]:
    """RA-CNN (Fu et al., CVPR 2017): three scales of ``backbone``; ``xi`` does not apply (no class groups)."""

    def build(num_classes: int, xi: int = 3, pretrained: str | None = None, steepness: float = 10.0,
              scale_size: int | None = None, apn_half: float | None = None) -> nn.Module:
        from engine.models.racnn import INIT_HALF, racnn

        return racnn(backbone, num_classes, pretrained, steepness, scale_size,
                     INIT_HALF if apn_half is None else apn_half)

    return build


for _name, (_builder, _desc) in BACKBONES.items():
    register(ModelSpec(f"racnn_{_name}", "racnn", f"RA-CNN, three scales of {_desc.split(',')[0]} with two APNs",
                       _racnn_builder(_name), _DEFAULT_WEIGHTS.get(_name)))


__all__ = ["ModelSpec", "register", "list_models", "get_spec", "create_model", "PartNet", "SharedPartsNet", "HEADS",
           "ATTENTIONS"]
