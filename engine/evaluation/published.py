"""The published part-discovery figures of a run: keypoint regression error and NMI/ARI under the protocol of
Huang et al. (CVPR 2020) and PDiscoNet (ICCV 2023), with the random and Grad-CAM baselines scored the same way
(docs/METHODS.md#published-protocol; the scoring itself is :mod:`engine.evaluation.protocol`).

Each image is resized on its own, shorter side to the run's training size, no crop, and the maps are read on the
model's own grid:

- a ``parts`` run (shared parts): its K+1 softmax maps, background last;
- an MC-Loss or CE part network: the ξ channels of the image's true class in group order (uneven groups padded with
  empty maps), divided by their joint maximum (channels are unbounded; so the strongest part has maximum 1 and a part is active when it reaches half
  of it), no background;
- a TASN run: its structure attention map (one part), no background;
- an RA-CNN run: its two squares (scales 2 and 3; the ``racnn`` maps, peaked at the squares' centres), no
  background;
- the Grad-CAM baseline (a CE run): the true class's Grad-CAM, divided by its maximum (one part).

Photos of one resized shape go through a model together, up to ``batch_size`` (:class:`PublishedPass`; the caller
feeds them sorted by shape, :func:`shape_order`); each photo's maps are those it gets alone, up to float rounding
(the convolutions' summation order may depend on the batch), and each split is scored in its own order.

``maps`` picks other maps of the run (``fieldmark evaluate --maps``, docs/METHODS.md#scored-maps): ``gradcam``, its
own Grad-CAM of the true class over its maximum (one part); ``attention``, the spatial map of each of its attention
blocks (the ``attention`` map method), each min-max normalised per image (one part per block), no background.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.data.orientation import ImageInfo
from engine.data.records import Sample
from engine.data.transforms import Preprocessing, normalize, resize_shorter
from engine.errors import ConfigError
from engine.data.imagefile import file_facts
from engine.data.imageio import MAX_SIDE
from engine.evaluation.protocol import (SPLITS, ProtocolAccumulator, labels_at_keypoints_batch, original_to_input,
                                        protocol_input_size)
from engine.maps.explain import get_method, low_res_maps, model_device, session
from engine.models.attention import attention_blocks
from engine.models.shared_parts import has_shared_parts
from engine.runs import LoadedRun


#: What ``--maps`` may score: the run's own part maps, its Grad-CAM, its attention blocks' maps.
MAPS = ("own", "gradcam", "attention")


def _unit_max(maps: torch.Tensor) -> torch.Tensor:
    top = maps.max()
    return maps / top if float(top) > 0 else maps


def decoded_size(path: str) -> tuple[int, int] | None:
    """(H, W) a photo decodes to, from its header (orientation applied, :data:`MAX_SIDE` reduction estimated);
    None when the header does not say."""
    try:
        facts = file_facts(Path(path).read_bytes(), walk=False)
    except OSError:
        return None
    if not facts.size or min(facts.size) <= 0:
        return None
    w, h = facts.size if facts.orientation < 5 else facts.size[::-1]
    scale = min(1.0, MAX_SIDE / max(w, h))
    return max(1, round(h * scale)), max(1, round(w * scale))


def shape_order(samples: list[Sample], img_size: int) -> list[int]:
    """Indices of ``samples`` sorted (stably) by the shape their photos take with the shorter side resized to
    ``img_size``, so that photos of one shape come together; photos whose header does not say come first."""
    keys = []
    for s in samples:
        size = decoded_size(s.path)
        keys.append(protocol_input_size(*size, img_size) if size else (0, 0))
    return sorted(range(len(samples)), key=keys.__getitem__)


def check_maps(run: LoadedRun, maps: str) -> None:
    """ConfigError (one line, naming the run) when ``run`` cannot give the ``maps`` asked for."""
    if maps not in MAPS:
        raise ConfigError(f"maps {maps!r} is unknown: use one of {', '.join(MAPS)}")
    where = str(run.run_dir)
    if maps == "attention" and not attention_blocks(run.model):
        raise ConfigError(f"maps 'attention': the run {where!r} has no attention blocks (trained with --attention "
                          "none): score --maps own or gradcam, or a run trained with --attention cbam or residual")
    if maps == "gradcam":
        try:
            get_method("gradcam").check(run.model)
            if not (hasattr(run.model, "forward_features") and hasattr(run.model, "forward_head")):
                raise ConfigError(f"{type(run.model).__name__} has no feature map and head to take it from")
        except ConfigError as exc:
            raise ConfigError(f"maps 'gradcam': the run {where!r} has no Grad-CAM ({exc}): score --maps own") \
                from None


def other_maps(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, maps: str) -> torch.Tensor:
    """(B, P, h, w) ≥ 0 on the model's grid for prepared images ``x``: ``gradcam``, the Grad-CAM of ``labels`` over
    each image's maximum (P = 1); ``attention``, each block's spatial map min-max normalised per image (P = blocks;
    a constant map becomes zeros)."""
    raw = torch.stack(low_res_maps(model, x, maps, labels)).float()
    if maps == "gradcam":
        top = raw.amax(dim=(1, 2, 3), keepdim=True)
        return torch.where(top > 0, raw / torch.where(top > 0, top, torch.ones_like(top)), raw)
    lo, hi = raw.amin(dim=(2, 3), keepdim=True), raw.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (raw - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(raw))


def describe_maps(model: nn.Module, maps: str = "own") -> tuple[str, bool]:
    """(what the protocol scores for this model, whether the maps include a background)."""
    if maps == "gradcam":
        return "Grad-CAM of the true class (this run), over its maximum, one part", False
    if maps == "attention":
        blocks = attention_blocks(model)
        return (f"{blocks[0].kind} spatial maps of the {len(blocks)} attention blocks, each min-max normalised, "
                f"one part per block"), False
    if has_shared_parts(model):
        return f"shared-part softmax maps (K={model.parts} + background)", True
    if getattr(model, "groups", None):
        return f"MC-Loss channels of the true class (xi={max(model.groups)}), over their joint maximum", False
    if hasattr(model, "zoom_squares"):
        return "RA-CNN squares of scales 2 and 3 (two parts)", False
    return "TASN structure attention map (one part)", False


@torch.no_grad()
def part_maps(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, maps: str = "own") -> torch.Tensor:
    """The maps the protocol scores for prepared images ``x`` (B, 3, H, W) of true classes ``labels`` (B,):
    (B, P, h, w) on the model's grid, each image's maps as it gets them on its own."""
    if maps != "own":
        return other_maps(model, x, labels, maps)
    if has_shared_parts(model):  # the maps alone: forward_parts' maps without its part vectors and logits
        with session(model):
            return model.forward_features(x).float()
    if getattr(model, "groups", None):
        with session(model):
            features = model.forward_features(x).float()
        out = []
        for b, y in enumerate(labels.tolist()):
            m = _unit_max(features[b, list(model.class_channels(y))].clamp_min(0))
            pad = max(model.groups) - len(m)  # uneven groups: the missing parts are empty maps (never active)
            out.append(torch.cat((m, m.new_zeros(pad, *m.shape[1:]))) if pad else m)
        return torch.stack(out)
    if hasattr(model, "zoom_squares"):  # RA-CNN: the two squares, each peaked at 1 at its centre
        return torch.stack(low_res_maps(model, x, "racnn", labels)).float().clamp_min(0)
    return torch.stack([_unit_max(m[:1].float().clamp_min(0)) for m in low_res_maps(model, x, "tasn", labels)])


def gradcam_maps(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The Grad-CAM baseline's maps (B, 1, h, w): the true class's Grad-CAM over each image's maximum."""
    return other_maps(model, x, labels, "gradcam")


@dataclass(frozen=True)
class _Image:
    split: str
    index: int  # the image's place in its split's own order
    label: int
    size: tuple[int, int]  # (H, W) decoded
    box: tuple[float, float, float, float]
    keypoints: np.ndarray  # (P, 3) on the decoded image


class _Side:
    """One model of the pass (the run, or the Grad-CAM baseline): images wait in buckets of one resized shape until
    ``batch`` of them are there, or until more than ``batch`` wait in all (then the oldest shape goes); the maps
    are kept per image and handed to the accumulator in each split's own order (:meth:`feed`)."""

    def __init__(self, model: nn.Module, pp: Preprocessing, maps_of, background: bool, batch: int):
        self.model, self.pp, self.maps_of, self.background, self.batch = model, pp, maps_of, background, batch
        self.waiting: dict[tuple[int, int], list[tuple[_Image, np.ndarray]]] = {}
        self.done: dict[str, dict[int, tuple[_Image, np.ndarray, tuple[int, int], np.ndarray | None]]] = {
            s: {} for s in SPLITS}

    def add(self, image: _Image, img: np.ndarray) -> None:
        resized = np.ascontiguousarray(resize_shorter(img, self.pp.img_size))
        shape = tuple(resized.shape[:2])
        self.waiting.setdefault(shape, []).append((image, resized))
        if len(self.waiting[shape]) >= self.batch:
            self._run(shape)
        elif sum(len(v) for v in self.waiting.values()) > self.batch:
            self._run(next(iter(self.waiting)))

    def flush(self) -> None:
        while self.waiting:
            self._run(next(iter(self.waiting)))

    def _run(self, shape: tuple[int, int]) -> None:
        group = self.waiting.pop(shape)
        x = normalize(torch.from_numpy(np.stack([r for _, r in group])).to(model_device(self.model)), self.pp)
        maps = self.maps_of(self.model, x, torch.tensor([im.label for im, _ in group])).float().cpu()
        test = [i for i, (im, _) in enumerate(group) if im.split == "test"]
        labels: dict[int, np.ndarray] = {}
        if test:  # the NMI / ARI labels of the test images, one upsampling for the batch
            kp = np.stack([original_to_input(group[i][0].keypoints[:, :2], group[i][0].size, shape) for i in test])
            labels = dict(zip(test, labels_at_keypoints_batch(maps[test], shape, kp)))
        for i, (im, _) in enumerate(group):
            self.done[im.split][im.index] = (im, maps[i].numpy(), shape, labels.get(i))

    def feed(self, acc: ProtocolAccumulator) -> None:
        self.flush()
        for split in SPLITS:
            for index in sorted(self.done[split]):
                im, maps, shape, labels = self.done[split][index]
                acc.add(split, maps, self.background, im.size, im.box, im.keypoints[:, :2], im.keypoints[:, 2],
                        shape, labels=labels)
            self.done[split].clear()


class PublishedPass:
    """Feeds the decoded images to the run (and the Grad-CAM baseline run) in batches of photos of one resized
    shape, at most ``batch_size`` (1: one image at a time, as they come), and collects the protocol's inputs;
    :meth:`result` scores them, each split in its own order (``index``), whatever order the images came in."""

    def __init__(self, run: LoadedRun, baseline: LoadedRun | None = None, maps: str = "own", batch_size: int = 1):
        check_maps(run, maps)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r}: the published protocol's batch must be a whole number "
                              ">= 1 (1: one image at a time)")
        self.run, self.baseline, self.maps = run, baseline, maps
        what, background = describe_maps(run.model, maps)
        self.own = ProtocolAccumulator(what)
        self.sides = [_Side(run.model, Preprocessing.from_dict(run.preprocessing),
                            lambda m, x, y: part_maps(m, x, y, maps), background, batch_size)]
        self.gradcam = None
        if baseline is not None:
            self.gradcam = ProtocolAccumulator("Grad-CAM of the true class (CE baseline run), one part")
            self.sides.append(_Side(baseline.model, Preprocessing.from_dict(baseline.preprocessing), gradcam_maps,
                                    False, batch_size))
        self._next = {s: 0 for s in SPLITS}

    def add(self, split: str, sample: Sample, img: np.ndarray, info: ImageInfo, index: int | None = None) -> None:
        """One decoded image; its keypoints and box move with the decoder's orientation and scale (``info``).
        ``index``: its place in the split's own order (default: after the previous one)."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}; got {split!r}")
        index = self._next[split] if index is None else int(index)
        self._next[split] = index + 1
        if sample.parts is None or sample.label < 0:
            return
        kp = info.keypoints_to_image(sample.keypoints())
        h, w = img.shape[:2]
        box = info.xywh_to_image(sample.bbox) if sample.bbox is not None else (0.0, 0.0, float(w), float(h))
        image = _Image(split, index, int(sample.label), (h, w), tuple(float(v) for v in box), kp)
        for side in self.sides:
            side.add(image, img)

    def result(self, seed: int = 0) -> dict[str, Any]:
        """``{"own": ..., "random": ..., "gradcam": ... or None}``, each the accumulator's figures."""
        self.sides[0].feed(self.own)
        if self.gradcam is not None:
            self.sides[1].feed(self.gradcam)
        return {"own": self.own.result(), "random": self.own.random_baseline(seed),
                "gradcam": self.gradcam.result() if self.gradcam is not None else None}


__all__ = ["MAPS", "PublishedPass", "decoded_size", "shape_order", "check_maps", "other_maps", "part_maps", "gradcam_maps", "describe_maps"]
