"""Parts from maps: peaks, boxes, scores, duplicate suppression and crops from the original image.

One part per map (per channel of a class for MC-Loss, Chang et al., IEEE TIP 2020): its peak (the argmax and the
attention-weighted centroid, as the part-discovery protocol of Huang et al., CVPR 2020 reads a part location), a
box, and a score. Coordinates are original-image pixels, x then y, pixel centres at integers (pixel i covers
[i − 0.5, i + 0.5)); boxes are (x0, y0, x1, y1) with x1, y1 exclusive, so a box's width is x1 − x0.

A map of h×w cells over an H×W image puts cell (r, c) at x = (c + 0.5)·W/w − 0.5, y = (r + 0.5)·H/h − 0.5 (the
cell centre, the convention of ``F.interpolate(..., align_corners=False)``): :func:`map_peaks` works on the
model's low-resolution maps as well as on full-resolution ones. Maps explained on a TASN resampled view (Zheng
et al., CVPR 2019) go back to the original image through the sampling grid (:func:`parts_to_original`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Sequence

import cv2
import numpy as np
import torch

from engine.errors import ConfigError

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Peaks:
    """Per map k: ``argmax`` (K, 2) and ``centroid`` (K, 2) as x, y in image pixels; ``value`` (K,) the map's
    value at its argmax; ``cell`` (K, 2) the argmax as (row, column) in the map."""

    argmax: np.ndarray
    centroid: np.ndarray
    value: np.ndarray
    cell: np.ndarray


def cells_to_pixels(xy: np.ndarray, map_size: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """Map coordinates (x = column, y = row, cell centres at integers) → image pixels (same convention)."""
    h, w = map_size
    hh, ww = image_size
    xy = np.asarray(xy, dtype=np.float64)
    return np.stack(((xy[..., 0] + 0.5) * ww / w - 0.5, (xy[..., 1] + 0.5) * hh / h - 0.5), axis=-1)


def pixels_to_cells(xy: np.ndarray, map_size: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`cells_to_pixels`."""
    h, w = map_size
    hh, ww = image_size
    xy = np.asarray(xy, dtype=np.float64)
    return np.stack(((xy[..., 0] + 0.5) * w / ww - 0.5, (xy[..., 1] + 0.5) * h / hh - 0.5), axis=-1)


def map_peaks(maps: np.ndarray | torch.Tensor, image_size: tuple[int, int] | None = None) -> Peaks:
    """Peaks of (K, h, w) maps (or (B, K, h, w): then every field has a leading B). ``image_size`` (H, W): return
    pixels of that image (cell centres); None: map coordinates. The centroid weighs each cell by its value minus
    the map's minimum (a constant map gives its centre)."""
    a = maps.detach().float().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps, np.float32)
    if a.ndim not in (3, 4) or a.shape[-1] < 1 or a.shape[-2] < 1:
        raise ConfigError(f"maps must be (K, h, w) or (B, K, h, w); got shape {a.shape}")
    h, w = a.shape[-2:]
    flat = a.reshape(*a.shape[:-2], h * w)
    idx = flat.argmax(axis=-1)
    value = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    rows, cols = np.divmod(idx, w)
    weights = np.nan_to_num(flat - flat.min(axis=-1, keepdims=True), nan=0.0).astype(np.float64)
    total = weights.sum(axis=-1)
    ys, xs = np.divmod(np.arange(h * w), w)
    safe = np.where(total > 0, total, 1.0)
    cx = np.where(total > 0, (weights * xs).sum(-1) / safe, (w - 1) / 2)
    cy = np.where(total > 0, (weights * ys).sum(-1) / safe, (h - 1) / 2)
    argmax = np.stack((cols, rows), axis=-1).astype(np.float64)
    centroid = np.stack((cx, cy), axis=-1)
    if image_size is not None:
        argmax = cells_to_pixels(argmax, (h, w), image_size)
        centroid = cells_to_pixels(centroid, (h, w), image_size)
    return Peaks(argmax, centroid, value.astype(np.float64), np.stack((rows, cols), axis=-1))


def region_box(m: np.ndarray, cell: tuple[int, int], fraction: float = 0.5) -> Box:
    """The box (map coordinates, exclusive end) of the connected region (8-connected) around ``cell`` (row, col)
    where ``m`` ≥ min + ``fraction``·(peak − min)."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"fraction={fraction}: must be in (0, 1] (a share of the peak height)")
    m = np.asarray(m, np.float32)
    r, c = int(cell[0]), int(cell[1])
    lo = float(m.min())
    mask = (m >= lo + fraction * (float(m[r, c]) - lo)).astype(np.uint8)
    mask[r, c] = 1
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    x, y, bw, bh, _ = stats[labels[r, c]]
    return float(x), float(y), float(x + bw), float(y + bh)


def scale_box(box: Box, map_size: tuple[int, int], image_size: tuple[int, int]) -> Box:
    """A box over map cells → image pixels (cell edges: cell c spans [c·W/w, (c+1)·W/w) in edge coordinates,
    i.e. [c·W/w − 0.5, ...) in pixel-centre coordinates)."""
    h, w = map_size
    hh, ww = image_size
    sx, sy = ww / w, hh / h
    return box[0] * sx - 0.5, box[1] * sy - 0.5, box[2] * sx - 0.5, box[3] * sy - 0.5


def fixed_box(center: Sequence[float], side: float, image_size: tuple[int, int]) -> Box:
    """A ``side``×``side`` box centred on ``center`` (x, y), shifted (not shrunk) to stay inside the image when
    it fits."""
    hh, ww = image_size
    out = []
    for c, limit in ((center[0], ww), (center[1], hh)):
        s = min(side, float(limit))
        lo = min(max(c + 0.5 - s / 2, 0.0), limit - s)
        out.append((lo - 0.5, lo - 0.5 + s))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def box_iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Part:
    """One discovered part. ``index``: the map's place in its MapSet (part_k = index + 1); ``channel``: the model
    channel (-1 if none); ``score``: the raw peak value; ``score_norm``: score / the largest score of its set
    (in [0, 1] for non-negative maps); ``duplicate_of``: the index of the kept part it repeats, or None."""

    index: int
    channel: int
    name: str
    peak: tuple[float, float]
    centroid: tuple[float, float]
    box: Box
    score: float
    score_norm: float
    duplicate_of: int | None = None

    def to_dict(self) -> dict:
        return {"part": self.index + 1, "channel": self.channel, "name": self.name,
                "peak": [round(v, 2) for v in self.peak], "centroid": [round(v, 2) for v in self.centroid],
                "box": [round(v, 2) for v in self.box], "score": self.score, "score_norm": self.score_norm,
                "duplicate_of": None if self.duplicate_of is None else self.duplicate_of + 1}


def find_parts(mapset, bird_box: Sequence[float] | None = None, box: str = "region", fraction: float = 0.5,
               size: float = 0.3, iou: float = 0.5, min_distance: float = 0.05) -> list[Part]:
    """One part per map of ``mapset`` (an :class:`engine.maps.explain.MapSet`), duplicates marked.

    ``box="region"``: the connected region above ``fraction`` of the peak (on the full-resolution map);
    ``"fixed"``: a square of ``size`` × the bird box's longer side (``bird_box`` x0, y0, w, h) or the image's.
    Suppression: parts in order of score; a part whose box overlaps a kept one by IoU > ``iou`` or whose peak
    lies within ``min_distance`` × the image (or bird box) diagonal of one is marked ``duplicate_of`` it. An RA-CNN
    run's squares (method ``racnn``) are never marked: scale 3's lies inside scale 2's by design, a closer look.
    """
    if box not in ("region", "fixed"):
        raise ConfigError(f"box={box!r}: use region or fixed")
    maps = np.asarray(mapset.maps)
    size_hw = tuple(mapset.image_size)
    peaks = map_peaks(maps, size_hw)
    raw_peak = np.array([lo + v * (hi - lo) for v, (lo, hi) in zip(peaks.value, mapset.raw_ranges)])
    top = float(raw_peak.max()) if raw_peak.size else 0.0
    ref = (float(bird_box[2]), float(bird_box[3])) if bird_box is not None else (size_hw[1], size_hw[0])
    parts = []
    for k in range(maps.shape[0]):
        if box == "region":
            b = scale_box(region_box(maps[k], tuple(peaks.cell[k]), fraction), maps.shape[-2:], size_hw)
        else:
            b = fixed_box(peaks.argmax[k], size * max(ref), size_hw)
        norm = float(raw_peak[k] / top) if top > 0 else 0.0
        chan = mapset.channels[k] if k < len(mapset.channels) else -1
        parts.append(Part(k, int(chan), mapset.names[k], tuple(map(float, peaks.argmax[k])),
                          tuple(map(float, peaks.centroid[k])), tuple(map(float, b)), float(raw_peak[k]), norm))
    if getattr(mapset, "method", "") == "racnn":
        return parts
    return suppress_duplicates(parts, iou, min_distance * float(np.hypot(*ref)))


def suppress_duplicates(parts: Sequence[Part], iou: float = 0.5, distance: float = 0.0) -> list[Part]:
    """Mark parts repeating a stronger one (box IoU > ``iou`` or peaks closer than ``distance`` pixels) with
    ``duplicate_of``; order and length are kept."""
    order = sorted(range(len(parts)), key=lambda i: -parts[i].score)
    kept: list[int] = []
    out = list(parts)
    for i in order:
        p = parts[i]
        dup = next((j for j in kept if box_iou(p.box, parts[j].box) > iou
                    or np.hypot(p.peak[0] - parts[j].peak[0], p.peak[1] - parts[j].peak[1]) < distance), None)
        if dup is None:
            kept.append(i)
        else:
            out[i] = replace(p, duplicate_of=parts[dup].index)
    return out


def parts_to_original(parts: Sequence[Part], grid: torch.Tensor, in_size: tuple[int, int]) -> list[Part]:
    """Parts found on a TASN resampled view → original pixels, through its sampling ``grid`` (S, S, 2) with
    :func:`engine.models.sampler.resampled_to_original` (points) and ``box_to_original`` (boxes: the grid is separable
    and monotone, so a box maps to a box)."""
    from engine.models.sampler import box_to_original, resampled_to_original

    if not parts:
        return []
    g = grid[None].double() if grid.dim() == 3 else grid.double()
    pts = torch.tensor([[p.peak, p.centroid] for p in parts], dtype=torch.float64).reshape(1, -1, 2)
    # box edges (pixel-centre coordinates, exclusive end) → the edge positions the grid interpolates
    boxes = torch.tensor([p.box for p in parts], dtype=torch.float64)[None]
    pts_o = resampled_to_original(pts, g, in_size)[0].reshape(-1, 2, 2)
    boxes_o = box_to_original(boxes, g, in_size)[0]
    hh, ww = in_size
    out = []
    for p, pt, b in zip(parts, pts_o.tolist(), boxes_o.tolist()):
        b = (max(b[0], -0.5), max(b[1], -0.5), min(b[2], ww - 0.5), min(b[3], hh - 0.5))
        out.append(replace(p, peak=tuple(pt[0]), centroid=tuple(pt[1]), box=tuple(b)))
    return out


def square_box(box: Box, image_size: tuple[int, int]) -> Box:
    """The square around a box's centre whose side is the box's longer side, shifted to stay in the image."""
    side = max(box[2] - box[0], box[3] - box[1], 1.0)
    return fixed_box(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), side, image_size)


def crop(image: np.ndarray, box: Box, size: int | None = None, square: bool = True) -> np.ndarray:
    """Cut ``box`` (pixel-centre coordinates, exclusive end) from the original ``image``; ``square`` widens it
    to a square first; ``size`` resizes the crop to size×size (or its longer side to ``size``)."""
    hh, ww = image.shape[:2]
    b = square_box(box, (hh, ww)) if square else box
    x0, y0 = int(np.clip(np.floor(b[0] + 0.5), 0, ww - 1)), int(np.clip(np.floor(b[1] + 0.5), 0, hh - 1))
    x1, y1 = int(np.clip(np.ceil(b[2] + 0.5), x0 + 1, ww)), int(np.clip(np.ceil(b[3] + 0.5), y0 + 1, hh))
    out = image[y0:y1, x0:x1]
    if size:
        ch, cw = out.shape[:2]
        scale = size / max(ch, cw)
        target = (size, size) if square else (max(1, round(cw * scale)), max(1, round(ch * scale)))
        out = cv2.resize(out, target, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return np.ascontiguousarray(out)


__all__ = ["Peaks", "Part", "map_peaks", "cells_to_pixels", "pixels_to_cells", "region_box", "scale_box",
           "fixed_box", "box_iou", "find_parts", "suppress_duplicates", "parts_to_original", "square_box", "crop"]
