"""Explanation maps for every registered model, in one template (the pattern of pytorch-grad-cam's
``base_cam.py``: the base class owns the pass and its hooks, each method overrides one function).

Methods (docs/METHODS.md#maps):

* ``channels``: the ξ part channels of a class (Chang et al., "The Devil is in the Channels: Mutual-Channel Loss
  for Fine-Grained Image Classification", IEEE TIP 2020): the maps MC-Loss trains to be the class's parts.
* ``ccmp``: their cross-channel max pooling, one map per class (same paper).
* ``tasn``: the structure and detail attention maps of a TASN model (Zheng et al., "Looking for the Devil in the
  Details", CVPR 2019).
* ``cam``: Σ_k w_{c,k} F_k with the linear head's weights over the part channels (Zhou et al., "Learning Deep
  Features for Discriminative Localization", CVPR 2016).
* ``gradcam``: ReLU(Σ_k α_k F_k), α_k = spatial mean of ∂y_c/∂F_k (Selvaraju et al., "Grad-CAM", ICCV 2017).
  For a GAP + linear head α_k = w_{c,k}/(h·w), so Grad-CAM = ReLU(CAM)/(h·w): after the min-max normalisation
  below the two maps are equal wherever CAM is non-negative everywhere (tested).
* ``guided-gradcam``: Grad-CAM (upsampled to the input) × guided backpropagation (Springenberg et al., "Striving
  for Simplicity", ICLR 2015 workshop), reduced to one map as max over colour of |∂y_c/∂x|. Guided backprop
  clamps at 0 the gradient every ``nn.ReLU``/``nn.ReLU6`` module passes back, through backward hooks removed
  afterwards (functional ReLUs, e.g. inside TASN's attention head, are left as they are).
* ``guided-backprop``: that guided backpropagation on its own, max over colour of |∂y_c/∂x| at the input size.
* ``deconvnet``: the deconvnet's reconstruction (Zeiler & Fergus, "Visualizing and Understanding Convolutional
  Networks", ECCV 2014): the gradient w.r.t. the input with every ``nn.ReLU``/``nn.ReLU6`` module passing back
  max(g, 0) of the gradient g it receives, whatever its forward input (ReLU6 keeps its upper clip), rendered as
  guided backprop is.
* ``racnn``: the squares an RA-CNN model zooms into at scales 2 and 3 (Fu et al., "Look Closer to See Better",
  CVPR 2017), each its boxcar mask peaked at the centre, the same for every class (docs/METHODS.md#racnn).
* ``attention``: the spatial maps of a model's attention blocks (``--attention``; CBAM, Woo et al., ECCV 2018;
  residual attention, Wang et al., CVPR 2017), one per block, the same for every class
  (docs/METHODS.md#attention-blocks).

Methods under different ReLU rules get a forward pass each; the others share the first one (the rules change
only the backward through ReLU modules, and their gradients w.r.t. the features go through the head alone, which
has none).

Input convention: each image (RGB uint8, any size) is resized as a whole to ``img_size × img_size`` (no crop,
so the maps cover the whole photo) and normalised with the run's :class:`Preprocessing`. Every map comes back
as float32 H×W at the image's original resolution (bilinear, align_corners=False), min-max normalised to [0, 1]
with the raw (min, max) of the model's own map kept in ``raw_ranges`` (a constant map becomes all zeros).
Models are left as found: hooks removed, ``requires_grad`` and train/eval mode restored, parameter ``.grad``
never touched (gradients are taken with ``torch.autograd.grad`` w.r.t. activations and the input only).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.data.transforms import Preprocessing, normalize
from engine.errors import ConfigError
from engine.maps.methods import (METHODS, REGISTRY, MapMethod, Pass, get_method,  # noqa: F401
                                 session)  # (METHODS, REGISTRY, MapMethod, get_method re-exported)
from engine.models.shared_parts import has_shared_parts
from engine.maps.views import ResampledViews, resampled_views  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

_EPS = 1e-12


@dataclass
class MapSet:
    """The maps of one image for one class and method.

    ``maps`` (K, H, W) float32 in [0, 1] at the original image size; ``raw_ranges[k]`` the (min, max) of map k
    as the model computed it; ``low_res`` (K, h, w) those raw values at the method's own resolution (the feature
    map; the input size for guided Grad-CAM, guided backprop, deconvnet and TASN); ``channels`` the model
    channel behind each map (-1 when a map is not one channel); ``predicted`` the model's top-1 class for the
    image."""

    method: str
    class_index: int
    maps: np.ndarray
    names: list[str]
    raw_ranges: list[tuple[float, float]]
    image_size: tuple[int, int]  # (H, W)
    low_res: np.ndarray | None = None
    channels: list[int] = field(default_factory=list)
    probability: float = float("nan")
    predicted: int = -1  # the model's top-1 class for this image

    def raw(self) -> np.ndarray:
        """The maps in the model's own units (K, H, W): map·(max − min) + min."""
        lo = np.array([r[0] for r in self.raw_ranges], np.float32)[:, None, None]
        hi = np.array([r[1] for r in self.raw_ranges], np.float32)[:, None, None]
        return self.maps * (hi - lo) + lo


# --------------------------------------------------------------------------------------------- the pass
def prepare(images: Sequence[np.ndarray], pp: Preprocessing, device: torch.device | str) -> torch.Tensor:
    """RGB uint8 images of any sizes → the normalised batch (B, 3, S, S): whole image resized, no crop."""
    s = pp.img_size
    batch = []
    for img in images:
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ConfigError(f"images must be RGB uint8 (H, W, 3) arrays; got {img.dtype} {img.shape}")
        h, w = img.shape[:2]
        interp = cv2.INTER_AREA if h * w > s * s else cv2.INTER_LINEAR
        batch.append(cv2.resize(img, (s, s), interpolation=interp) if (h, w) != (s, s) else img)
    return normalize(torch.from_numpy(np.stack(batch)).to(device), pp)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _predict_logits(model: nn.Module, x: torch.Tensor, head_logits: torch.Tensor) -> torch.Tensor:
    """The model's prediction: the head on the features for a PartNet; TASN predicts with its master net, RA-CNN
    with its fused classifier."""
    if hasattr(model, "attention_maps") or hasattr(model, "zoom_squares"):
        with torch.no_grad():
            return model(x)
    return head_logits.detach()


def predict_probs(model: nn.Module, images: Sequence[np.ndarray], preprocessing: Preprocessing) -> np.ndarray:
    """Class probabilities (B, c) under the explanation input convention (whole image resized, no crop)."""
    with session(model), torch.no_grad():
        x = prepare(images, preprocessing, model_device(model))
        return model(x).float().softmax(1).cpu().numpy()


def _targets(class_index: int | Sequence[int | None] | None, probs: torch.Tensor, top_k: int) -> list[list[int]]:
    b, c = probs.shape
    if class_index is None:
        k = max(1, min(int(top_k), c))
        return probs.topk(k, dim=1).indices.tolist()
    top1 = probs.argmax(dim=1).tolist()
    if isinstance(class_index, (int, np.integer)):
        idx = [int(class_index)] * b
    else:
        idx = [top1[n] if i is None else int(i) for n, i in enumerate(class_index)]
    if len(idx) != b:
        raise ConfigError(f"class_index has {len(idx)} entries for {b} images: give one per image, one int, or None")
    bad = [i for i in idx if not 0 <= i < c]
    if bad:
        raise ConfigError(f"class index {bad[0]} is out of range: the model has {c} classes (0..{c - 1})")
    return [[i] for i in idx]


def _to_original(raw: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Raw (K, h, w) → (K, H, W) float32 in [0, 1] by the raw range of each map, and those ranges."""
    raw = raw.detach().float()
    lo = raw.flatten(1).amin(dim=1)
    hi = raw.flatten(1).amax(dim=1)
    up = raw[None] if tuple(raw.shape[-2:]) == tuple(size) else F.interpolate(
        raw[None], size=size, mode="bilinear", align_corners=False)
    span = (hi - lo).view(-1, 1, 1)
    norm = torch.where(span > _EPS, (up[0] - lo.view(-1, 1, 1)) / span.clamp_min(_EPS), torch.zeros_like(up[0]))
    return norm.clamp_(0.0, 1.0).cpu().numpy().astype(np.float32, copy=False), list(zip(lo.tolist(), hi.tolist()))


def explain(model: nn.Module, images: Sequence[np.ndarray], method: str | Sequence[str] = "channels",
            class_index: int | Sequence[int] | None = None, preprocessing: Preprocessing | None = None,
            top_k: int = 1, keep_low_res: bool = True) -> list[list[MapSet]]:
    """Maps of ``images`` (RGB uint8 arrays, sizes may differ) for one or several methods, in one forward pass
    (one per ReLU rule when methods need different ones: guided backprop and deconvnet).

    ``class_index``: None → the ``top_k`` predicted classes of each image; an int → that class for every image;
    a list → one class per image (None entries: the predicted class). Returns, per image, one :class:`MapSet`
    per (class, method): classes in ``top_k`` order, then methods in the order given. Tensors follow the model.
    """
    pp = preprocessing or Preprocessing()
    methods = [get_method(m) for m in ([method] if isinstance(method, str) else method)]
    if not methods or not len(images):
        return [[] for _ in images]
    for m in methods:
        m.check(model)
    sizes = [tuple(np.asarray(img).shape[:2]) for img in images]
    x = prepare(images, pp, model_device(model))
    done: dict[tuple[int, int], list[MapSet]] = {}  # (rank, method) → one MapSet per image
    targets: list[list[int]] = []
    for rule, group in _passes(methods):
        needs_grad = any(methods[i].needs_grad for i in group)
        with session(model, rule=rule), torch.set_grad_enabled(needs_grad):
            p = _forward(model, x, needs_grad, rule is not None)
            if not targets:  # the forward values are the same under every rule
                probs = _predict_logits(model, p.x, p.logits).float().softmax(1)
                targets = _targets(class_index, probs, top_k)
                top1 = probs.argmax(dim=1).tolist()
            for rank in range(len(targets[0])):
                t = torch.tensor([row[rank] for row in targets], device=p.x.device)
                for i in group:
                    raw, names, chans = methods[i].maps(p, t)
                    raw = [p.in_frame(r, b) for b, r in enumerate(raw)]
                    done[rank, i] = []
                    for b, r in enumerate(raw):
                        maps, ranges = _to_original(r, sizes[b])
                        done[rank, i].append(MapSet(methods[i].name, int(t[b]), maps, names[b], ranges, sizes[b],
                                                    r.detach().float().cpu().numpy() if keep_low_res else None,
                                                    list(chans[b]), float(probs[b, t[b]]), int(top1[b])))
            p.release()
    out: list[list[MapSet]] = [[] for _ in images]
    for rank in range(len(targets[0])):
        for i in range(len(methods)):
            for b, ms in enumerate(done[rank, i]):
                out[b].append(ms)
    return out


def _passes(methods: Sequence[MapMethod]) -> list[tuple[str | None, list[int]]]:
    """The forward passes ``methods`` need: (ReLU rule, indices of the methods it serves), in first-use order.
    Methods without a rule join the first pass (a rule changes only the backward through ReLU modules, which no
    registered head has, so their gradients w.r.t. the features are the plain ones)."""
    rules = list(dict.fromkeys(m.relu_rule for m in methods if m.relu_rule is not None)) or [None]
    return [(rule, [i for i, m in enumerate(methods)
                    if m.relu_rule == rule or (m.relu_rule is None and rule == rules[0])]) for rule in rules]


def _forward(model: nn.Module, x: torch.Tensor, needs_grad: bool, input_grad: bool) -> Pass:
    """One forward pass (inside :func:`session` and the right grad mode); ``input_grad``: the input is a leaf that
    requires grad (a pass under a ReLU rule, whose methods want ∂y/∂x)."""
    squares = None
    if has_shared_parts(model):  # zoomed to the bird when the model zooms; maps go back with Pass.in_frame
        x, squares = model.zoomed(x)
    if input_grad:
        x = x.detach().requires_grad_(True)
    if has_shared_parts(model):  # the head needs the fine features z as well as the part maps
        z = model.embed(x)
        if needs_grad and not z.requires_grad:
            z.requires_grad_(True)
        maps = model.part_maps(z)
        return Pass(model, x, maps, model.forward_head(maps, z), input_grad, squares)
    features = model.forward_features(x)
    if needs_grad and not features.requires_grad:
        features.requires_grad_(True)  # a leaf: the graph covers only the head
    return Pass(model, x, features, model.forward_head(features), input_grad)


def low_res_maps(model: nn.Module, x: torch.Tensor, method: str, targets: torch.Tensor) -> list[torch.Tensor]:
    """Raw maps (K, h, w) per sample of an already prepared batch ``x`` for classes ``targets`` (B,), at the
    model's own resolution: no resizing (for fast evaluation)."""
    m = get_method(method)
    m.check(model)
    with session(model, rule=m.relu_rule), torch.set_grad_enabled(m.needs_grad):
        p = _forward(model, x, m.needs_grad, m.relu_rule is not None)
        raw, _, _ = m.maps(p, targets.to(x.device))
        return [p.in_frame(r, b).detach() for b, r in enumerate(raw)]


def resolve_class(name: str, classes: Sequence[str]) -> int:
    """A class name (or its number) → index; ConfigError naming it and listing the valid ones."""
    if name in classes:
        return list(classes).index(name)
    folded = [c.lower() for c in classes]
    if name.lower() in folded:
        return folded.index(name.lower())
    shown = ", ".join(classes[:20]) + (f", ... ({len(classes)} in all)" if len(classes) > 20 else "")
    raise ConfigError(f"class {name!r} is not a class of this model: use one of {shown}")


__all__ = ["METHODS", "MapSet", "MapMethod", "Pass", "session", "explain", "predict_probs", "prepare",
           "resolve_class", "get_method", "low_res_maps", "ResampledViews", "resampled_views"]
