"""Compare's jobs for a ``parts`` run (no Qt): the per-part class scores of the test images, the confusion they
give, for one pair of species the parts ranked by how well their scores separate the two, each with its
strongest crops from both species, and the run's on-bird shares (which parts lie on the bird and which on the
background / habitat, :mod:`engine.fieldmarks.onbird`), computed once over its training photos when the run
folder holds none.

With shared parts (PDiscoNet, van der Klis et al., ICCV 2023) every part has the same meaning on every bird and
its own class scores, so :func:`engine.fieldmarks.rank_parts` can rank the parts for any pair: those that
separate it are its field marks. MC-Loss and TASN maps belong to one class each; their runs keep the per-class
view of :mod:`.compute`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Generator

import numpy as np

from engine.data import DataReport
from engine.errors import DecodeError
from engine.events import Message, Progress

from ..common.tokens import TokenLike, checked
from .compute import MAX_PAIRS, Confusion, Pair, rank_pairs

log = logging.getLogger(__name__)

CROP_SIZE = 144  # side of each crop as computed; the rows show it smaller, the selected part at this size
MAX_ROWS = 9  # rows per group (on the bird / background / all together); the keys 1-9 select the first nine


@dataclass(frozen=True)
class PartCrop:
    """The part's box cut from one test image: ``margin`` is the part's score for A minus its score for B."""

    image: np.ndarray
    margin: float
    path: str
    present: bool  # the part is active on the image


@dataclass
class PartRow:
    """One part of the ranking: its separation (Cohen's d of the margin between the two species' images) and
    the strongest crops of each species (A: largest margins, B: smallest)."""

    part: int  # 0-based
    label: str  # its name, or "part k"
    separation: float
    mean_a: float
    mean_b: float
    crops_a: list[PartCrop] = field(default_factory=list)
    crops_b: list[PartCrop] = field(default_factory=list)


@dataclass
class PairSeparation:
    """The parts of a run ranked for the pair (a, b): every part, best first (the view groups them by place)."""

    run: str
    a: int
    b: int
    crops: int
    rows: list[PartRow]
    parts: int  # the run's K
    images_a: int
    images_b: int


def scores_job(run_path: str, report: DataReport, token: TokenLike) -> Generator[Progress | Message, None, Any]:
    """The run's per-part class scores over its test images (:func:`engine.fieldmarks.collect_part_scores`, on
    the run's saved split): computed once per run and data, then every pair is ranked from them."""
    from engine.device import resolve_device
    from engine.fieldmarks import collect_part_scores

    job = collect_part_scores(run_path, report, split="test", device=str(resolve_device("auto")),
                              should_stop=token.is_stale)
    return (yield from checked(job, token))


def places_job(run_path: str, report: DataReport, token: TokenLike) -> Generator[Progress | Message, None, list]:
    """The run's on-bird shares (:func:`engine.fieldmarks.onbird.compute_places`): read from the run folder, or
    computed over its training photos (Progress("part scores", ...)) and saved there."""
    from engine.device import resolve_device
    from engine.fieldmarks.onbird import compute_places

    job = compute_places(run_path, report, device=str(resolve_device("auto")), should_stop=token.is_stale)
    return list((yield from checked(job, token)))


def confusion_from_scores(run_path: str, scores: Any) -> Confusion:
    """The confusion the part scores give (the model's own logits: the mean of the K parts' class scores). The
    pairs: those of :func:`engine.fieldmarks.confused_pairs` (errors both ways, most first), then, up to
    :data:`MAX_PAIRS`, the error-free pairs by the probability the run gives each to the other."""
    from engine.fieldmarks import confused_pairs

    labels = np.asarray(scores.labels, np.int64)
    predictions = np.asarray(scores.predictions, np.int64)
    c = len(scores.classes)
    matrix = np.zeros((c, c), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    psum = np.zeros((c, c), np.float64)
    np.add.at(psum, labels, np.asarray(scores.probabilities, np.float64))
    mean = psum / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    pairs = [Pair(int(a), int(b), int(errors), float(mean[a, b] + mean[b, a]))
             for a, b, errors in confused_pairs(scores, top=MAX_PAIRS)]
    seen = {(p.a, p.b) for p in pairs}
    pairs += [p for p in rank_pairs(matrix, mean, limit=c * c) if (p.a, p.b) not in seen]
    return Confusion(run_path, matrix, mean, pairs[:MAX_PAIRS], int(len(labels)))


def _crop(scores: Any, images: dict[int, np.ndarray], i: int, part: int, a: int, b: int) -> PartCrop | None:
    from engine.maps.parts import crop

    image = images.get(i)
    if image is None:
        return None
    margin = float(scores.scores[i, part, a] - scores.scores[i, part, b])
    box = tuple(float(v) for v in scores.boxes[i, part])
    return PartCrop(crop(image, box, CROP_SIZE), margin, str(scores.paths[i]), bool(scores.present[i, part]))


def separation_job(run_path: str, scores: Any, a: int, b: int, crops: int,
                   token: TokenLike) -> Generator[Progress, None, PairSeparation]:
    """Rank the run's parts for the pair (``a``, ``b``) (:func:`engine.fieldmarks.rank_parts`, the default ranking)
    and cut each part's strongest crops from the original test images (each image decoded once)."""
    from engine.data.imageio import read_image
    from engine.fieldmarks import part_label, rank_parts, read_part_names

    ranking = rank_parts(scores, a, b, crops=crops)
    names = read_part_names(run_path)
    needed = sorted({i for s in ranking for i in (*s.examples_a, *s.examples_b)})
    images: dict[int, np.ndarray] = {}
    yield Progress("crops", 0, len(needed))
    for n, i in enumerate(needed, 1):
        token.check()
        try:
            images[i] = read_image(scores.paths[i])
        except DecodeError as exc:
            log.warning("skipped %s: %s", scores.paths[i], exc)
        yield Progress("crops", n, len(needed))
    rows = []
    for s in ranking:
        row = PartRow(int(s.part), part_label(int(s.part), names), float(s.separation), float(s.mean_a),
                      float(s.mean_b))
        row.crops_a = [c for i in s.examples_a if (c := _crop(scores, images, i, s.part, a, b)) is not None]
        row.crops_b = [c for i in s.examples_b if (c := _crop(scores, images, i, s.part, a, b)) is not None]
        rows.append(row)
    labels = np.asarray(scores.labels)
    return PairSeparation(run_path, a, b, crops, rows, int(np.asarray(scores.scores).shape[1]),
                          int((labels == a).sum()), int((labels == b).sum()))
