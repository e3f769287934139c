"""The Explore workspace's jobs: plain functions over the engine that run on a worker thread (no Qt here).

Everything they return is plain data (numpy arrays, dataclasses, floats) that the GUI thread can hold without
touching a model: the loaded model stays in :class:`ModelCache`, which only the worker thread uses. Maps come
from :func:`engine.maps.explain.explain`, parts from :func:`engine.maps.parts.find_parts`, and TASN's structure- and
detail-preserved views (Zheng et al., CVPR 2019, §3.2) from :func:`engine.maps.explain.resampled_views`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Generator, Protocol

import cv2
import numpy as np

from engine.data import DataReport
from engine.errors import ConfigError, DataError
from engine.events import Message, Progress
from engine.maps.parts import Part, crop, find_parts

log = logging.getLogger(__name__)

DISPLAY_MAX = 1280  # the longest side shown; larger photos are shown scaled (coordinates stay original pixels)
VIEW_SIZE = 320  # side of the resampled views
THUMB = 84  # side of a map thumbnail
TOP_K = 5
METHOD_LABELS = {"channels": "Part channels (MC-Loss)", "ccmp": "CCMP (all channels)", "tasn": "TASN attention",
                 "cam": "CAM", "gradcam": "Grad-CAM", "guided-gradcam": "Guided Grad-CAM"}


class TokenLike(Protocol):
    """What the jobs use of :class:`app.explore.lane.Token` (kept Qt-free, so a test can pass a stub)."""

    def check(self) -> None: ...

    def is_stale(self) -> bool: ...


@dataclass(frozen=True)
class RunInfo:
    """What Explore shows about a run: its classes, the map methods its model supports, saved figures."""

    path: str
    model: str
    method: str
    classes: tuple[str, ...]
    methods: tuple[str, ...]
    evaluation: dict[str, Any] | None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def default_method(self) -> str:
        for m in ("channels", "tasn", "gradcam"):
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
    (S, S, 2) as numpy; ``in_size`` the original (H, W) the grids map back to."""

    structure: np.ndarray
    detail: np.ndarray
    structure_grid: np.ndarray
    detail_grid: np.ndarray
    in_size: tuple[int, int]


@dataclass
class MapResult:
    """Everything Explore shows for (run, image, method, class). ``image`` and ``maps`` are at display size
    (``scale`` = display / original); parts, boxes and grids are in original pixels."""

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

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probs)) if self.probs.size else -1

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (the cache's budget counts it)."""
        arrays = [self.image, self.probs, self.maps, self.thumbs, *self.crops]
        arrays += [a for v in self.views for a in (v.structure, v.detail, v.structure_grid, v.detail_grid)]
        return int(sum(a.nbytes for a in arrays))

    def top_k(self, k: int = TOP_K) -> list[tuple[int, float]]:
        order = np.argsort(-self.probs)[:k]
        return [(int(i), float(self.probs[i])) for i in order]


class ModelCache:
    """Loaded runs and per-image probabilities, used on the worker thread only (never by widgets)."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._runs: OrderedDict[str, Any] = OrderedDict()
        self._probs: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def get(self, path: str):
        """The :class:`engine.runs.LoadedRun` of ``path`` (loaded on first use, on the best device)."""
        from engine.device import resolve_device
        from engine.runs import load_run

        if path not in self._runs:
            self._runs[path] = load_run(path, device=resolve_device("auto"))
            while len(self._runs) > self.keep:
                self._runs.popitem(last=False)
        self._runs.move_to_end(path)
        return self._runs[path]

    def probs(self, run_path: str, image_path: str, image: np.ndarray) -> np.ndarray:
        from engine.data.transforms import Preprocessing
        from engine.maps.explain import predict_probs

        key = (run_path, image_path)
        if key not in self._probs:
            run = self.get(run_path)
            pp = Preprocessing.from_dict(run.preprocessing)
            self._probs[key] = predict_probs(run.model, [image], pp)[0].astype(np.float32)
            while len(self._probs) > 512:
                self._probs.popitem(last=False)
        return self._probs[key]


def valid_methods(model) -> list[str]:
    """The map methods of :mod:`engine.maps.explain` that ``model`` supports, in the engine's order."""
    from engine.maps.explain import METHODS, get_method

    out = []
    for name in METHODS:
        try:
            get_method(name).check(model)
        except ConfigError:
            continue
        out.append(name)
    return out


def load_run_info(path: str, models: ModelCache, token: TokenLike) -> RunInfo:
    """Load the run (into ``models``) and describe it."""
    from engine.runs import read_evaluation

    token.check()
    run = models.get(path)
    meta = run.meta
    return RunInfo(str(run.run_dir), (meta.get("arch") or {}).get("name", "?"), run.method, tuple(run.classes),
                   tuple(valid_methods(run.model)), read_evaluation(run.run_dir), dict(meta.get("metrics") or {}))


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
    for m in ms.maps:
        v = resampled_views(image, m, out)
        views.append(MapView(v.structure, v.detail, v.structure_grid.numpy().astype(np.float32),
                             v.detail_grid.numpy().astype(np.float32), v.in_size))
    shown, scale = _fit(image, DISPLAY_MAX)
    maps = ms.maps if scale == 1.0 else np.stack(
        [cv2.resize(m, (shown.shape[1], shown.shape[0]), interpolation=cv2.INTER_AREA) for m in ms.maps])
    thumbs = np.stack([cv2.resize(m, (THUMB, THUMB), interpolation=cv2.INTER_AREA) for m in ms.maps])
    return MapResult(req.run, req.path, req.method, cls, shown, (h, w), scale, probs, list(ms.names),
                     maps.astype(np.float32, copy=False), thumbs.astype(np.float32), parts, crops, views)


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
