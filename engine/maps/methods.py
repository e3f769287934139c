"""The map methods of :func:`engine.maps.explain.explain`: one template (:class:`MapMethod`, the pattern of
pytorch-grad-cam's ``base_cam.py``), the forward :class:`Pass` they share with its gradients, and the
:func:`session` that leaves a model as it found it. See :mod:`engine.maps.explain` for what each method shows."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError
from engine.models.attention import attention_blocks, spatial_maps
from engine.models.groups import ccmp
from engine.models.shared_parts import has_shared_parts

#: The backward rules a pass can put on every ``nn.ReLU`` / ``nn.ReLU6`` module (docs/METHODS.md#maps): "guided"
#: (Springenberg et al., ICLR 2015 workshop) and "deconvnet" (Zeiler & Fergus, ECCV 2014); None is the plain one.
RELU_RULES = ("guided", "deconvnet")


@dataclass
class Pass:
    """What one forward pass gives every method: input ``x`` (B, 3, S, S), ``features`` (B, N, h, w) and the
    head's ``logits`` (B, c); for a shared-parts model that zooms, ``x`` is the zoomed input and ``squares`` the
    squares it was cut to (:meth:`in_frame` puts maps back on the photo); gradients on demand (w.r.t. the features, and the input when ``input_grad``: a pass
    under a ReLU rule, whose gradient w.r.t. the input is that rule's)."""

    model: nn.Module
    x: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor
    input_grad: bool
    squares: torch.Tensor | None = None  # shared parts that zoom to the bird: the squares x was cut to (B, 3)
    _grads: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)

    def gradients(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(∂y_t/∂features, ∂y_t/∂x or None), one target class per sample; cached per target vector."""
        key = tuple(targets.tolist())
        if key not in self._grads:
            score = self.logits.gather(1, targets.view(-1, 1)).sum()  # samples are independent in eval mode
            inputs = [self.features, self.x] if self.input_grad else [self.features]
            grads = torch.autograd.grad(score, inputs, retain_graph=True)
            self._grads[key] = (grads[0], grads[1] if self.input_grad else None)
        return self._grads[key]

    def in_frame(self, raw: torch.Tensor, b: int) -> torch.Tensor:
        """Sample ``b``'s raw maps (M, h, w), computed on the zoomed input, on the photo's grid (unchanged without
        zoom): maps at the input's size stay that size, the low-resolution ones get the model's frame grid."""
        if self.squares is None:
            return raw
        from engine.models.shared_parts import to_frame

        size = tuple(raw.shape[-2:]) if tuple(raw.shape[-2:]) == tuple(self.x.shape[-2:]) else None
        return to_frame(raw[None].float(), self.squares[b:b + 1], size)[0]

    def release(self) -> None:
        """Drop the cached gradients (and with them the graph they keep alive)."""
        self._grads.clear()


# ------------------------------------------------------------------------------------------------ template
class MapMethod:
    """Template: :func:`engine.maps.explain.explain` owns the pass (inside :func:`session`, which always removes
    its hooks); a method overrides :meth:`maps` only. ``needs_grad`` and ``relu_rule`` say what the pass must
    provide: gradients, and the backward rule at the ReLU modules (one of :data:`RELU_RULES`, or None for the
    plain gradient); a pass under a rule also gives the gradient w.r.t. the input."""

    name = ""
    needs_grad = False
    relu_rule: str | None = None

    def check(self, model: nn.Module) -> None:
        """Raise ConfigError when the model cannot give this method's maps."""

    def maps(self, p: Pass, targets: torch.Tensor) -> tuple[list[torch.Tensor], list[list[str]], list[list[int]]]:
        """Per sample: raw maps (K, h, w), their names and model channels (-1 when not a channel)."""
        raise NotImplementedError


@contextmanager
def session(model: nn.Module, guided: bool = False, rule: str | None = None) -> Iterator[None]:
    """Eval mode and parameters frozen (so no ``.grad`` is ever written), and the backward ``rule`` at every
    ``nn.ReLU`` / ``nn.ReLU6`` module (``guided=True`` is ``rule="guided"``):

    * ``"guided"`` (guided backpropagation): a full backward hook clamps at 0 the gradient the module's own
      backward passes back, so it goes on where both the forward input and the gradient are positive;
    * ``"deconvnet"``: a forward hook routes the module's output through :class:`_DeconvnetRectifier` (same
      values), whose backward passes the incoming gradient where *it* is positive, whatever the forward input
      (a ReLU6 keeps its upper clip: nothing passes where the input was at or above 6).

    ``inplace`` is switched off while hooked (backward hooks refuse in-place outputs, and the deconvnet rule needs
    the module's input intact). Everything is restored on exit, also after an exception."""
    rule = rule or ("guided" if guided else None)
    if rule is not None and rule not in RELU_RULES:
        raise ConfigError(f"ReLU rule {rule!r} is unknown: use one of {', '.join(RELU_RULES)}")
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    relus: list[tuple[nn.Module, bool]] = []
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        if rule is not None:
            for m in model.modules():
                if isinstance(m, (nn.ReLU, nn.ReLU6)):
                    relus.append((m, m.inplace))
                    m.inplace = False
                    handles.append(m.register_full_backward_hook(_guided_relu_hook) if rule == "guided"
                                   else m.register_forward_hook(_deconvnet_relu_hook))
        yield
    finally:
        for h in handles:
            h.remove()
        for m, inplace in relus:
            m.inplace = inplace
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _guided_relu_hook(module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
    """Guided backprop: the ReLU's own backward (grad · 1[x > 0]; ReLU6: grad · 1[0 < x < 6]) then only the
    positive part goes on."""
    return tuple(g.clamp(min=0.0) if g is not None else None for g in grad_input)


class _DeconvnetRectifier(torch.autograd.Function):
    """clamp(x, 0, upper) forward; backward the deconvnet's rectification of the incoming gradient g:
    max(g, 0), ignoring where x was positive, times 1[x < upper] when there is an upper clip (ReLU6's
    saturation is not the rectification, and a saturated unit passes nothing in the plain gradient either)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float | None) -> torch.Tensor:
        ctx.upper = upper
        if upper is not None:
            ctx.save_for_backward(x)
        return x.clamp(min=0.0, max=upper)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        g = g.clamp(min=0.0)
        if ctx.upper is not None:
            (x,) = ctx.saved_tensors
            g = torch.where(x < ctx.upper, g, torch.zeros_like(g))
        return g, None


def _deconvnet_relu_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    """Deconvnet: the module's output, recomputed through :class:`_DeconvnetRectifier` (ReLU6: upper clip 6)."""
    return _DeconvnetRectifier.apply(inputs[0], float(module.max_val) if isinstance(module, nn.ReLU6) else None)


def _part_model(model: nn.Module, method: str) -> None:
    if method == "channels" and has_shared_parts(model):
        return
    if not getattr(model, "groups", None) or not hasattr(model, "class_channels"):
        raise ConfigError(f"method {method!r} needs per-class part channels (a PartNet trained with MC-Loss or CE); "
                          f"{type(model).__name__} has none: use gradcam, guided-gradcam, guided-backprop, "
                          "deconvnet"
                          + (" or tasn" if hasattr(model, "attention_maps") else "")
                          + (" or racnn" if hasattr(model, "zoom_squares") else ""))


class ChannelMaps(MapMethod):
    name = "channels"

    def check(self, model):
        _part_model(model, self.name)

    def maps(self, p, targets):
        if has_shared_parts(p.model):  # the K shared parts (background left out): the same for every class
            k = p.model.parts
            return list(p.features[:, :k]), [[f"part {i + 1}" for i in range(k)]] * len(targets), \
                [list(range(k))] * len(targets)
        out, names, chans = [], [], []
        for b, t in enumerate(targets.tolist()):
            rng = list(p.model.class_channels(t))
            out.append(p.features[b, rng[0]:rng[-1] + 1])
            names.append([f"part {k + 1} (ch {c})" for k, c in enumerate(rng)])
            chans.append(rng)
        return out, names, chans


class CCMPMap(MapMethod):
    name = "ccmp"

    def check(self, model):
        _part_model(model, self.name)

    def maps(self, p, targets):
        pooled = ccmp(p.features, p.model.groups)  # (B, c, h, w)
        b = torch.arange(len(targets), device=targets.device)
        return list(pooled[b, targets].unsqueeze(1)), [["CCMP"]] * len(targets), [[-1]] * len(targets)


def _cam_inputs(model: nn.Module, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations the head pools, its linear weights): F and ``fc`` on a PartNet; ReLU(BN(X)) and ``att_fc``
    on TASN's attention network."""
    if hasattr(model, "att_fc") and hasattr(model, "att_bn"):
        return F.relu(model.att_bn(features)), model.att_fc.weight
    return features, model.fc.weight


class CAM(MapMethod):
    name = "cam"

    def check(self, model):
        if not isinstance(getattr(model, "fc", None), nn.Linear) or has_shared_parts(model):
            raise ConfigError(f"method 'cam' needs a GAP + linear head (model.fc); {type(model).__name__} has none: "
                              "use gradcam")

    def maps(self, p, targets):
        acts, w = _cam_inputs(p.model, p.features)
        cam = torch.einsum("bnhw,bn->bhw", acts, w[targets].to(acts.dtype))
        return list(cam.unsqueeze(1)), [["CAM"]] * len(targets), [[-1]] * len(targets)


class GradCAM(MapMethod):
    name = "gradcam"
    needs_grad = True

    def maps(self, p, targets):
        grad, _ = p.gradients(targets)
        alpha = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((alpha * p.features).sum(dim=1, keepdim=True)).detach()
        return list(cam), [["Grad-CAM"]] * len(targets), [[-1]] * len(targets)


class GuidedGradCAM(MapMethod):
    name = "guided-gradcam"
    needs_grad = True
    relu_rule = "guided"

    def maps(self, p, targets):
        grad, xgrad = p.gradients(targets)
        alpha = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((alpha * p.features).sum(dim=1, keepdim=True)).detach()
        cam = F.interpolate(cam, size=p.x.shape[-2:], mode="bilinear", align_corners=False)
        return list(cam * _saliency(xgrad)), [["Guided Grad-CAM"]] * len(targets), [[-1]] * len(targets)


def _saliency(xgrad: torch.Tensor) -> torch.Tensor:
    """A pixel-space map (B, 1, S, S) of ∂y/∂x (B, 3, S, S): max over colour of the absolute value."""
    return xgrad.abs().amax(dim=1, keepdim=True).detach()


class _PixelSpace(MapMethod):
    """A gradient w.r.t. the input under one ReLU backward rule, drawn as :func:`_saliency`."""

    needs_grad = True
    label = ""

    def maps(self, p, targets):
        _, xgrad = p.gradients(targets)
        return list(_saliency(xgrad)), [[self.label]] * len(targets), [[-1]] * len(targets)


class GuidedBackprop(_PixelSpace):
    """Guided backpropagation (Springenberg et al., ICLR 2015 workshop) on its own, in pixel space."""

    name, label, relu_rule = "guided-backprop", "Guided backprop", "guided"


class Deconvnet(_PixelSpace):
    """The deconvnet's reconstruction of the class score in pixel space (Zeiler & Fergus, ECCV 2014): the
    gradient w.r.t. the input under the deconvnet ReLU rule."""

    name, label, relu_rule = "deconvnet", "Deconvnet", "deconvnet"


class TASNMaps(MapMethod):
    name = "tasn"

    def check(self, model):
        if not hasattr(model, "attention_maps"):
            raise ConfigError(f"method 'tasn' needs a TASN model (tasn_resnet18, tasn_resnet50, tasn_mobilenet_v2); "
                              f"{type(model).__name__} is not one: use channels, ccmp, cam or gradcam")

    def maps(self, p, targets):
        att = p.model.attention_maps(p.x)
        stacked = torch.stack((att["structure"], att["detail"]), dim=1)  # (B, 2, S, S), class-agnostic
        return list(stacked), [["structure", "detail"]] * len(targets), [[-1, -1]] * len(targets)


class RACNNSquares(MapMethod):
    """The squares an RA-CNN model zooms into (Fu et al., CVPR 2017; docs/METHODS.md#racnn), scales 2 and 3, on
    the input: each square's boxcar mask, peaked at its centre (:func:`engine.models.racnn.square_maps`), so that
    its part is the square's centre and box; class-agnostic."""

    name = "racnn"

    def check(self, model):
        if not hasattr(model, "zoom_squares"):
            raise ConfigError(f"method 'racnn' needs an RA-CNN model (racnn_<backbone>, trained with --method racnn); "
                              f"{type(model).__name__} is not one: use gradcam, cam or guided-backprop")

    def maps(self, p, targets):
        from engine.models.racnn import square_maps

        maps = square_maps(p.model.zoom_squares(p.x.detach()), tuple(p.x.shape[-2:]), p.model.steepness)
        return list(maps), [["scale 2 square", "scale 3 square"]] * len(targets), [[-1, -1]] * len(targets)


class AttentionMaps(MapMethod):
    """The spatial maps of a model's attention blocks (``--attention``, docs/METHODS.md#attention-blocks): CBAM's
    spatial gate, the residual attention's mean 1 + M; class-agnostic, one map per block."""

    name = "attention"

    def check(self, model):
        if not attention_blocks(model):
            raise ConfigError(f"method 'attention' needs a model trained with --attention cbam or residual; "
                              f"{type(model).__name__} has no attention blocks: use gradcam or guided-backprop")

    def maps(self, p, targets):
        blocks = attention_blocks(p.model)
        names = [f"{b.kind}, {where} stage" for b, where in zip(blocks, ("next-to-last", "last"))]
        return list(spatial_maps(p.model, p.x)), [names] * len(targets), [[-1] * len(blocks)] * len(targets)


REGISTRY: dict[str, type[MapMethod]] = {m.name: m for m in (ChannelMaps, CCMPMap, TASNMaps, CAM, GradCAM,
                                                             GuidedGradCAM, GuidedBackprop, Deconvnet,
                                                             AttentionMaps, RACNNSquares)}
#: The map methods' names, in the registry's order (the order the CLI and Explore offer them).
METHODS: tuple[str, ...] = tuple(REGISTRY)


def get_method(name: str) -> MapMethod:
    try:
        return REGISTRY[name]()
    except KeyError:
        raise ConfigError(f"map method {name!r} is unknown: use one of {', '.join(METHODS)}") from None
