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

``maps`` picks other maps of the run (``fieldmark evaluate --maps``, docs/METHODS.md#scored-maps): ``gradcam``, its
own Grad-CAM of the true class over its maximum (one part); ``attention``, the spatial map of each of its attention
blocks (the ``attention`` map method), each min-max normalised per image (one part per block), no background.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from engine.data.orientation import ImageInfo
from engine.data.records import Sample
from engine.data.transforms import Preprocessing, normalize, resize_shorter
from engine.errors import ConfigError
from engine.evaluation.protocol import ProtocolAccumulator
from engine.maps.explain import get_method, low_res_maps, model_device, session
from engine.models.attention import attention_blocks
from engine.models.shared_parts import has_shared_parts
from engine.runs import LoadedRun


#: What ``--maps`` may score: the run's own part maps, its Grad-CAM, its attention blocks' maps.
MAPS = ("own", "gradcam", "attention")


def _unit_max(maps: torch.Tensor) -> torch.Tensor:
    top = maps.max()
    return maps / top if float(top) > 0 else maps


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
def part_maps(model: nn.Module, x: torch.Tensor, label: int, maps: str = "own") -> torch.Tensor:
    """The maps the protocol scores for one prepared image ``x`` (1, 3, H, W): (P, h, w) on the model's grid."""
    if maps != "own":
        return other_maps(model, x, torch.tensor([label]), maps)[0]
    if has_shared_parts(model):
        with session(model):
            return model.forward_parts(x).maps[0].float()
    if getattr(model, "groups", None):
        with session(model):
            features = model.forward_features(x)[0].float()
        maps = _unit_max(features[list(model.class_channels(label))].clamp_min(0))
        pad = max(model.groups) - len(maps)  # uneven groups: the missing parts are empty maps (never active)
        return torch.cat((maps, maps.new_zeros(pad, *maps.shape[1:]))) if pad else maps
    if hasattr(model, "zoom_squares"):  # RA-CNN: the two squares, each peaked at 1 at its centre
        return low_res_maps(model, x, "racnn", torch.tensor([label]))[0].float().clamp_min(0)
    return _unit_max(low_res_maps(model, x, "tasn", torch.tensor([label]))[0][:1].float().clamp_min(0))


def gradcam_map(model: nn.Module, x: torch.Tensor, label: int) -> torch.Tensor:
    return _unit_max(low_res_maps(model, x, "gradcam", torch.tensor([label]))[0].float())


class PublishedPass:
    """Feeds one decoded image at a time to the run (and the Grad-CAM baseline run) and collects the protocol's
    inputs; :meth:`result` scores them."""

    def __init__(self, run: LoadedRun, baseline: LoadedRun | None = None, maps: str = "own"):
        check_maps(run, maps)
        self.run, self.baseline, self.maps = run, baseline, maps
        self.pp = Preprocessing.from_dict(run.preprocessing)
        what, self.background = describe_maps(run.model, maps)
        self.own = ProtocolAccumulator(what)
        self.gradcam = ProtocolAccumulator("Grad-CAM of the true class (CE baseline run), one part") \
            if baseline is not None else None
        self.base_pp = Preprocessing.from_dict(baseline.preprocessing) if baseline is not None else None

    def _input(self, img: np.ndarray, pp: Preprocessing, model: nn.Module) -> tuple[torch.Tensor, tuple[int, int]]:
        resized = resize_shorter(img, pp.img_size)
        x = normalize(torch.from_numpy(np.ascontiguousarray(resized))[None].to(model_device(model)), pp)
        return x, resized.shape[:2]

    def add(self, split: str, sample: Sample, img: np.ndarray, info: ImageInfo) -> None:
        """One decoded image; its keypoints and box move with the decoder's orientation and scale (``info``)."""
        if sample.parts is None or sample.label < 0:
            return
        kp = info.keypoints_to_image(sample.keypoints())
        h, w = img.shape[:2]
        box = info.xywh_to_image(sample.bbox) if sample.bbox is not None else (0.0, 0.0, float(w), float(h))
        x, size = self._input(img, self.pp, self.run.model)
        maps = part_maps(self.run.model, x, sample.label, self.maps).cpu().numpy()
        self.own.add(split, maps, self.background, (h, w), box, kp[:, :2], kp[:, 2], size)
        if self.gradcam is not None:
            bx, bsize = self._input(img, self.base_pp, self.baseline.model)
            cam = gradcam_map(self.baseline.model, bx, sample.label).cpu().numpy()
            self.gradcam.add(split, cam, False, (h, w), box, kp[:, :2], kp[:, 2], bsize)

    def result(self, seed: int = 0) -> dict[str, Any]:
        """``{"own": ..., "random": ..., "gradcam": ... or None}``, each the accumulator's figures."""
        return {"own": self.own.result(), "random": self.own.random_baseline(seed),
                "gradcam": self.gradcam.result() if self.gradcam is not None else None}


__all__ = ["MAPS", "PublishedPass", "check_maps", "other_maps", "part_maps", "gradcam_map", "describe_maps"]
