"""The Explore workspace's jobs: plain functions over the engine that run on a worker thread (no Qt here).

Everything they return is plain data (numpy arrays, dataclasses, floats) that the GUI thread can hold without
touching a model: the loaded model stays in :class:`app.common.model_cache.ModelCache`, which only the worker
thread uses. Maps come from :func:`engine.maps.explain.explain`, parts from :func:`engine.maps.parts.find_parts`,
TASN's structure- and detail-preserved views (Zheng et al., CVPR 2019, §3.2) from
:func:`engine.maps.explain.resampled_views` (for an RA-CNN run's ``racnn`` maps, its zoom views in their place:
the squares of scales 2 and 3 and their zoomed crops, :func:`engine.maps.zoom.zoom_views`), and for a shared-parts
run (the ``parts`` method) the :class:`PartsLayer` that draws all K parts at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Generator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine.data import DataReport
from engine.errors import DataError
from engine.events import Message, Progress
from engine.evaluation.protocol import ACTIVE_THRESHOLD
from engine.maps.parts import Part, crop, find_parts
from engine.models.shared_parts import has_shared_parts
from engine.runs import RunInfo

from ..common.model_cache import ModelCache, valid_methods
from ..common.tokens import TokenLike, checked

log = logging.getLogger(__name__)

DISPLAY_MAX = 1280  # the longest side shown; larger photos are shown scaled (coordinates stay original pixels)
VIEW_SIZE = 320  # side of the resampled views
THUMB = 84  # side of a map thumbnail
TOP_K = 5


@dataclass(frozen=True)
class ExploreRun:
    """What Explore offers for a loaded run: the run folder's description, the map methods its model supports
    and its saved evaluation figures (None: not evaluated yet)."""

    run: RunInfo
    methods: tuple[str, ...]
    evaluation: dict[str, Any] | None
    parts: int = 0  # a shared-parts run's K (0: another method, whose maps belong to one class each)

    @property
    def default_method(self) -> str:
        for m in ("channels", "tasn", "racnn", "gradcam"):
            if m in self.methods:
                return m
        return self.methods[0] if self.methods else ""


@dataclass(frozen=True)
class MapRequest:
    """Maps of one image: ``class_index`` None means the predicted class."""

    run: str
    path: str
    method: str
    class_index: int | None = None


@dataclass
class MapView:
    """The structure- and detail-preserved views of the image for one map, with their sampling grids
    (S, S, 2) as numpy; ``in_size`` the original (H, W) the grids map back to. An RA-CNN run's zoom views take the
    two places (scale 2's crop, scale 3's), with their ``titles`` and the squares to draw on each view (``boxes``:
    view name → (x0, y0, x1, y1) in that view's pixels, pixel centres at whole numbers)."""

    structure: np.ndarray
    detail: np.ndarray
    structure_grid: np.ndarray
    detail_grid: np.ndarray
    in_size: tuple[int, int]
    titles: tuple[str, str] = ("Structure-preserved", "Detail-preserved")
    boxes: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)


ZOOM_TITLES = ("Scale 2 (zoomed)", "Scale 3 (zoomed)")


def zoom_view(model, image: np.ndarray, preprocessing, side: int) -> MapView:
    """An RA-CNN run's zoom views of ``image`` (Fu et al., CVPR 2017) as a :class:`MapView`: scale 2's and scale
    3's squares drawn on the photo, scale 3's drawn in scale 2's view too, and the two crops zoomed to ``side``."""
    from engine.maps.zoom import zoom_views

    z = zoom_views(model, image, preprocessing, side)
    b2, b3 = z.boxes()
    sx, sy = side / max(b2[2] - b2[0], 1e-9), side / max(b2[3] - b2[1], 1e-9)
    inner = ((b3[0] - b2[0]) * sx, (b3[1] - b2[1]) * sy, (b3[2] - b2[0]) * sx, (b3[3] - b2[1]) * sy)
    centred = [tuple(v - 0.5 for v in box) for box in (b2, b3, inner)]  # edges → the panel's pixel-centre frame
    return MapView(z.crops[0], z.crops[1], z.grids[0].numpy(), z.grids[1].numpy(), z.in_size, ZOOM_TITLES,
                   {"original": centred[:2], "structure": centred[2:]})


@dataclass
class PartsLayer:
    """A shared-parts run's K parts on one image, for the all-parts view: at display size, the part that wins
    each pixel (``labels``, K = the background part) and its probability (``alpha``, 0-255); per part, its map
    maximum (``peak_prob``: active on the image when above the §4 threshold 0.5) and its class scores
    (``scores`` (K, classes): the model's ``part_logits``, whose mean over the K parts is the image's logits)."""

    labels: np.ndarray  # (h, w) uint8
    alpha: np.ndarray  # (h, w) uint8
    peak_prob: np.ndarray  # (K,) float32
    scores: np.ndarray  # (K, classes) float32

    @property
    def parts(self) -> int:
        return int(self.scores.shape[0])

    @property
    def active(self) -> np.ndarray:
        return self.peak_prob > ACTIVE_THRESHOLD

    def part_at(self, x: int, y: int) -> int | None:
        """The part drawn at display pixel (x, y); None on the background or outside."""
        h, w = self.labels.shape
        if not (0 <= x < w and 0 <= y < h):
            return None
        k = int(self.labels[y, x])
        return k if k < self.parts else None

    def logit(self, cls: int) -> float:
        """The image's logit of class ``cls``: the mean of the parts' scores."""
        return float(self.scores[:, cls].mean())

    @property
    def nbytes(self) -> int:
        return int(self.labels.nbytes + self.alpha.nbytes + self.peak_prob.nbytes + self.scores.nbytes)


def parts_layer(model, image: np.ndarray, preprocessing, display_size: tuple[int, int]) -> PartsLayer:
    """The :class:`PartsLayer` of ``image`` for a shared-parts ``model`` under the explanation input convention
    (whole image resized, no crop: the same input as the part maps of :func:`engine.maps.explain.explain`); the
    K+1 part maps are resized to ``display_size`` (H, W) before each pixel's winner is taken."""
    from engine.maps.explain import model_device, prepare, session

    with session(model), torch.no_grad():
        out = model.forward_parts(prepare([image], preprocessing, model_device(model)))
    maps = out.maps[0].float()
    up = F.interpolate(maps[None], size=tuple(display_size), mode="bilinear", align_corners=False)[0]
    prob, labels = up.max(dim=0)
    k = model.parts
    return PartsLayer(labels.to(torch.uint8).cpu().numpy(),
                      torch.round(prob.clamp(0.0, 1.0) * 255).to(torch.uint8).cpu().numpy(),
                      maps[:k].flatten(1).amax(dim=1).cpu().numpy().astype(np.float32),
                      out.part_logits[0].float().cpu().numpy())


@dataclass
class MapResult:
    """Everything Explore shows for (run, image, method, class). ``image`` and ``maps`` are at display size
    (``scale`` = display / original); parts, boxes and grids are in original pixels. ``maps`` are scaled to [0, 1]
    each; ``ranges`` keeps what 0 and 1 stand for (an attention block's gate: 1 leaves the features unchanged)."""

    run: str
    path: str
    method: str
    class_index: int
    image: np.ndarray
    image_size: tuple[int, int]
    scale: float
    probs: np.ndarray
    names: list[str]
    maps: np.ndarray
    thumbs: np.ndarray
    parts: list[Part]
    crops: list[np.ndarray]
    views: list[MapView]
    layer: PartsLayer | None = None  # a shared-parts run's part maps ("channels"): all parts at once
    ranges: list[tuple[float, float]] = field(default_factory=list)  # each map's (min, max) in the model's units

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probs)) if self.probs.size else -1

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (the cache's budget counts it)."""
        arrays = [self.image, self.probs, self.maps, self.thumbs, *self.crops]
        arrays += [a for v in self.views for a in (v.structure, v.detail, v.structure_grid, v.detail_grid)]
        return int(sum(a.nbytes for a in arrays)) + (self.layer.nbytes if self.layer is not None else 0)

    def top_k(self, k: int = TOP_K) -> list[tuple[int, float]]:
        order = np.argsort(-self.probs)[:k]
        return [(int(i), float(self.probs[i])) for i in order]


def open_run(path: str, models: ModelCache, token: TokenLike) -> ExploreRun:
    """Load the run (into ``models``) and describe it."""
    from engine.runs import read_evaluation

    token.check()
    run = models.get(path)
    return ExploreRun(RunInfo.from_meta(run.run_dir, run.meta), tuple(valid_methods(run.model)),
                      read_evaluation(run.run_dir), int(run.model.parts) if has_shared_parts(run.model) else 0)


def _fit(image: np.ndarray, longest: int) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    scale = min(1.0, longest / max(h, w))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def compute_maps(req: MapRequest, models: ModelCache, token: TokenLike) -> MapResult:
    """Predict, explain, find the parts, cut their crops (original resolution) and resample the image by each
    map; the token is checked between the steps so that a newer request ends this one early."""
    from engine.data.transforms import Preprocessing
    from engine.maps.explain import explain, resampled_views
    from engine.data.imageio import read_image

    token.check()
    run = models.get(req.run)
    image = read_image(req.path)
    token.check()
    probs = models.probs(req.run, req.path, image)
    cls = int(np.argmax(probs)) if req.class_index is None else int(req.class_index)
    token.check()
    ms = explain(run.model, [image], req.method, cls, Preprocessing.from_dict(run.preprocessing),
                 keep_low_res=False)[0][0]
    token.check()
    parts = find_parts(ms)
    crops = [crop(image, p.box) for p in parts]
    h, w = image.shape[:2]
    out = min(VIEW_SIZE, h, w)
    views = []
    if req.method == "racnn":  # the squares' zoom views, the same for both maps
        token.check()
        views = [zoom_view(run.model, image, Preprocessing.from_dict(run.preprocessing), out)] * len(ms.maps)
    for m in ms.maps if not views else ():
        v = resampled_views(image, m, out)
        views.append(MapView(v.structure, v.detail, v.structure_grid.numpy().astype(np.float32),
                             v.detail_grid.numpy().astype(np.float32), v.in_size))
    shown, scale = _fit(image, DISPLAY_MAX)
    maps = ms.maps if scale == 1.0 else np.stack(
        [cv2.resize(m, (shown.shape[1], shown.shape[0]), interpolation=cv2.INTER_AREA) for m in ms.maps])
    thumbs = np.stack([cv2.resize(m, (THUMB, THUMB), interpolation=cv2.INTER_AREA) for m in ms.maps])
    layer = None
    if req.method == "channels" and has_shared_parts(run.model):
        token.check()
        layer = parts_layer(run.model, image, Preprocessing.from_dict(run.preprocessing), shown.shape[:2])
    return MapResult(req.run, req.path, req.method, cls, shown, (h, w), scale, probs, list(ms.names),
                     maps.astype(np.float32, copy=False), thumbs.astype(np.float32), parts, crops, views, layer,
                     [(float(lo), float(hi)) for lo, hi in ms.raw_ranges])


def evaluate_job(run_path: str, report: DataReport, token: TokenLike) -> Generator[Progress | Message, None, dict]:
    """:func:`engine.evaluation.evaluate.evaluate` on a copy of the run of its own (on the run's saved split: its
    Message events say what differs); the figures are saved as the run's evaluation file and returned."""
    from engine.evaluation.evaluate import evaluate
    from engine.runs import load_run, write_evaluation

    if not report.has_parts:
        raise DataError(f"{report.root!r} has no part keypoints: evaluation needs a CUB-layout folder "
                        "(CUB-200-2011 or toy birds)")
    run = load_run(run_path)
    result = yield from evaluate(run, report, should_stop=token.is_stale)
    figures = result.saved()
    write_evaluation(run_path, figures)
    return figures


def places_job(run: str, report: DataReport, token: TokenLike) -> Generator[Progress | Message, None, list]:
    """The run's on-bird shares (:func:`engine.fieldmarks.onbird.compute_places`): read from the run folder, or
    computed over its training photos of ``report`` and saved there; Cancelled once the token is stale."""
    from engine.device import resolve_device
    from engine.fieldmarks.onbird import compute_places

    job = compute_places(run, report, device=str(resolve_device("auto")), should_stop=token.is_stale)
    return list((yield from checked(job, token)))


def propose_job(run: str, data: str, token: TokenLike) -> Generator[Progress | Message, None, list]:
    """:func:`engine.fieldmarks.propose_names` on ``run``'s training images of ``data``, Cancelled (between its
    progress events) once the token is stale; the engine's generator is closed either way."""
    from engine.device import resolve_device
    from engine.fieldmarks import propose_names

    gen = propose_names(run, data, split="train", device=str(resolve_device("auto")))
    return list((yield from checked(gen, token)))
