"""The Compare workspace's jobs (no Qt): the run's confusion over the test split, and each class's strongest
part crops per channel. Both are generators of :class:`engine.events.Progress` run on a worker lane; they return
plain data. The model lives in a :class:`app.common.model_cache.ModelCache` used by the lane's thread only.

Parts are the ξ channel maps of a class (Chang et al., "The Devil is in the Channels", IEEE TIP 2020) read by
:func:`engine.maps.parts.find_parts`; a run whose model has no class channels falls back to its TASN attention or its
Grad-CAM map (Selvaraju et al., ICCV 2017), one row per map.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field
from typing import Generator, Sequence

import numpy as np

from engine.data import DataReport, Sample
from engine.errors import CheckpointError, DataError
from engine.events import Message, Progress
from engine.maps.parts import crop, find_parts

from ..common.model_cache import ModelCache, valid_methods
from ..common.tokens import TokenLike

log = logging.getLogger(__name__)

BATCH = 16
CROP = 96  # side of a crop in the rows
MAX_PAIRS = 15


@dataclass(frozen=True)
class Pair:
    """Two classes and how often the run mixes them up on the test split."""

    a: int
    b: int
    errors: int  # test images of a predicted as b, plus of b predicted as a
    soft: float  # mean probability given to the other class, both ways summed


@dataclass
class Confusion:
    """The run's confusion matrix on the test split (rows: true class, columns: predicted) and the pairs it
    suggests, most confusable first."""

    run: str
    matrix: np.ndarray
    probs: np.ndarray  # (C, C) mean predicted probability of column j over the images of class i
    pairs: list[Pair]
    images: int
    notes: list[str] = field(default_factory=list)  # how the data differs from the run's saved split

    @property
    def accuracy(self) -> float:
        n = self.matrix.sum()
        return float(np.trace(self.matrix) / n) if n else float("nan")


@dataclass(frozen=True)
class Crop:
    image: np.ndarray
    score: float
    path: str


@dataclass
class ChannelRow:
    """One map of a class (a ξ channel) and its strongest crops over the class's test images, best first."""

    name: str
    channel: int
    crops: list[Crop] = field(default_factory=list)


@dataclass
class ClassParts:
    run: str
    class_index: int
    method: str
    rows: list[ChannelRow]
    images: int


def labelled_test_samples(report: DataReport, label: int | None = None) -> list[Sample]:
    """The labelled test images (all labelled images when the data has no test split), of one class or all."""
    labelled = [s for s in report.samples if s.label >= 0]
    test = [s for s in labelled if s.split == "test"] or labelled
    return [s for s in test if label is None or s.label == label]


def _check(run, report: DataReport) -> None:
    if report.layout == "flat":
        raise DataError(f"{report.root!r} has no classes: Compare needs a labelled data set")
    if list(report.classes) != run.classes:
        raise CheckpointError(f"the run knows {len(run.classes)} classes, the open data {len(report.classes)} (or "
                              "other names): open the data the run was trained on")


def _decode(samples: Sequence[Sample]) -> list[tuple[Sample, np.ndarray]]:
    from engine.errors import DecodeError
    from engine.data.imageio import read_image

    out = []
    for s in samples:
        try:
            out.append((s, read_image(s.path)))
        except DecodeError as exc:
            log.warning("skipped %s: %s", s.path, exc)
    return out


def rank_pairs(matrix: np.ndarray, probs: np.ndarray, limit: int = MAX_PAIRS) -> list[Pair]:
    """Class pairs by confusion: errors both ways, then the probability mass given to each other."""
    c = matrix.shape[0]
    pairs = [Pair(a, b, int(matrix[a, b] + matrix[b, a]), float(probs[a, b] + probs[b, a]))
             for a in range(c) for b in range(a + 1, c)]
    pairs.sort(key=lambda p: (-p.errors, -p.soft, p.a, p.b))
    return pairs[:limit]


def run_report(run, report: DataReport, notes: list[str] | None = None) -> Generator[Message, None, DataReport]:
    """``report`` in the run's saved split (:func:`engine.runs.run_split`): photos added since left out, missing
    or changed ones named in the yielded Message events (and appended to ``notes``)."""
    from engine.runs import run_split

    data = run_split(run.run_dir, report, run.meta.get("config"))
    for level, text in data.messages:
        if notes is not None:
            notes.append(text)
        yield Message(level, text)
    return data.report


def confusion_job(run_path: str, report: DataReport, models: ModelCache,
                  token: TokenLike) -> Generator[Progress | Message, None, Confusion]:
    """Predict every test image of the run's saved split (the explanation input convention: whole image
    resized) and count."""
    from engine.data.transforms import Preprocessing
    from engine.maps.explain import predict_probs

    run = models.get(run_path)
    notes: list[str] = []
    report = yield from run_report(run, report, notes)
    _check(run, report)
    pp = Preprocessing.from_dict(run.preprocessing)
    samples = labelled_test_samples(report)
    c = len(run.classes)
    matrix = np.zeros((c, c), np.int64)
    psum = np.zeros((c, c), np.float64)
    yield Progress("confusion", 0, len(samples))
    for start in range(0, len(samples), BATCH):
        token.check()
        items = _decode(samples[start:start + BATCH])
        if items:
            probs = predict_probs(run.model, [img for _, img in items], pp)
            for (s, _), p in zip(items, probs):
                matrix[s.label, int(np.argmax(p))] += 1
                psum[s.label] += p
        yield Progress("confusion", min(start + BATCH, len(samples)), len(samples))
    counts = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    mean = psum / counts
    return Confusion(str(run.run_dir), matrix, mean, rank_pairs(matrix, mean), int(matrix.sum()), notes)


def parts_method(model) -> str:
    """The map method whose maps are a class's parts: its ξ channels when it has them."""
    methods = valid_methods(model)
    for m in ("channels", "tasn", "gradcam"):
        if m in methods:
            return m
    raise CheckpointError(f"{type(model).__name__} gives no maps Compare can use")


def class_parts_job(run_path: str, report: DataReport, classes: Sequence[int], top_n: int, models: ModelCache,
                    token: TokenLike) -> Generator[Progress | Message, None, list[ClassParts]]:
    """For each class: explain its test images (the run's saved split) for that class, and keep each map's
    ``top_n`` parts by score."""
    from engine.data.transforms import Preprocessing
    from engine.maps.explain import explain

    run = models.get(run_path)
    report = yield from run_report(run, report)
    _check(run, report)
    pp = Preprocessing.from_dict(run.preprocessing)
    method = parts_method(run.model)
    per_class = {c: labelled_test_samples(report, c) for c in classes}
    total = sum(len(v) for v in per_class.values())
    done = 0
    out = []
    yield Progress("parts", 0, total)
    for c, samples in per_class.items():
        heaps: list[list[tuple[float, int, Crop]]] = []
        names: list[str] = []
        channels: list[int] = []
        tie = 0
        for start in range(0, len(samples), BATCH):
            token.check()
            items = _decode(samples[start:start + BATCH])
            sets = explain(run.model, [img for _, img in items], method, c, pp, keep_low_res=False) if items else []
            for (s, img), (ms, *_) in zip(items, sets):
                if not names:
                    names, channels = list(ms.names), list(ms.channels) or [-1] * len(ms.names)
                    heaps = [[] for _ in names]
                for k, part in enumerate(find_parts(ms)):
                    tie += 1
                    entry = (part.score, tie, Crop(crop(img, part.box, CROP), part.score, s.path))
                    if len(heaps[k]) < top_n:
                        heapq.heappush(heaps[k], entry)
                    elif part.score > heaps[k][0][0]:
                        heapq.heapreplace(heaps[k], entry)
            done += len(samples[start:start + BATCH])
            yield Progress(f"parts of {run.classes[c]}", done, total)
        rows = [ChannelRow(n, ch, [e[2] for e in sorted(h, key=lambda e: (-e[0], e[1]))])
                for n, ch, h in zip(names, channels, heaps)]
        out.append(ClassParts(str(run.run_dir), int(c), method, rows, len(samples)))
    return out
