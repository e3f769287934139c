"""The parts that separate two species: every test image's per-part class scores of a ``parts`` run (shared parts,
docs/METHODS.md#shared-parts) and, for a pair of species, the parts ranked by how far their scores set the two
apart (docs/METHODS.md#separation).

A shared part k has its own class scores s_k (``part_logits``; the image's logits are their mean over the K
parts). For species a and b, the part's margin on an image is m_k = s_k[a] − s_k[b]: how much part k alone says
"a rather than b". Over the test images of a and of b, its separation is Cohen's d of that margin,
d' = (mean m_k over a-images − mean m_k over b-images) / pooled standard deviation: how many standard deviations
apart the two species sit on that part alone. A field mark that tells them apart gives a large d'; a part that
looks the same on both gives about 0.

MC-Loss channels belong to one class each, so there is no "same part" to compare across species: a non-parts
run raises ConfigError.

The pass reads each image whole, resized to the run's square input (the explanation convention of
:mod:`engine.maps.explain`), in batches, with the model in eval mode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator

import numpy as np
import torch

from engine.data.records import DataReport, Sample
from engine.data.transforms import Preprocessing
from engine.data.imageio import load_image
from engine.errors import Cancelled, CheckpointError, ConfigError, DataError, DecodeError
from engine.events import Message, Progress
from engine.evaluation.protocol import ACTIVE_THRESHOLD, input_to_original, part_centres
from engine.maps.explain import model_device, prepare, session
from engine.maps.parts import map_peaks, region_box, scale_box
from engine.models.shared_parts import has_shared_parts
from engine.runs import LoadedRun, load_run, use_run_split

log = logging.getLogger(__name__)

NOT_PARTS = ("separating parts need a `parts` run (shared parts); MC-Loss channels belong to one class each")
_EPS = 1e-6


@dataclass
class PartScores:
    """The per-part class scores of a ``parts`` run on one split of a data folder, one row per readable image.

    ``scores`` (N, K, C) float32: part k's class scores (``part_logits``, eval mode); ``probabilities`` (N, C) the
    image's class probabilities; ``boxes`` (N, K, 4) x0, y0, x1, y1 of each part's region (the connected area
    above half its peak) and ``centres`` (N, K, 2) x, y of its attention-weighted centroid (§4), both in pixels of
    the decoded (upright) image (boxes as :mod:`engine.maps.parts` gives them, pixel centres at integers, ready for
    :func:`engine.maps.parts.crop`; centres and keypoints in §4's frame, pixel i spanning [i, i + 1));
    ``present`` (N, K): the part is active on the image (map maximum > 0.5, the §4 rule); ``keypoints`` (N, P, 3) x, y, visible in the same frame for a CUB-layout folder, else None."""

    classes: list[str]
    labels: np.ndarray
    predictions: np.ndarray
    paths: list[str]
    scores: np.ndarray
    boxes: np.ndarray
    present: np.ndarray
    centres: np.ndarray
    probabilities: np.ndarray
    keypoints: np.ndarray | None = None
    keypoint_names: list[str] = field(default_factory=list)
    run_dir: str = ""

    @property
    def parts(self) -> int:
        return int(self.scores.shape[1])

    def of_class(self, c: int) -> np.ndarray:
        """Indices of the images of class ``c``."""
        return np.flatnonzero(self.labels == c)


@dataclass(frozen=True)
class Separation:
    """One part's separation of species a from b (module docstring): ``separation`` = d', ``mean_a`` / ``mean_b``
    the mean margin s_k[a] − s_k[b] over the images of a / of b; ``examples_a`` the images of a where the part
    says "a" most strongly, ``examples_b`` those of b where it says "b" most strongly (indices into the
    :class:`PartScores`, images where the part is active first)."""

    part: int
    separation: float
    mean_a: float
    mean_b: float
    examples_a: list[int]
    examples_b: list[int]


def open_run(run: str | Path | LoadedRun, device: str = "cpu") -> LoadedRun:
    """A loaded run (as given, or loaded from its folder) that has shared parts; ConfigError otherwise."""
    loaded = run if isinstance(run, LoadedRun) else load_run(run, device)
    if not has_shared_parts(loaded.model):
        raise ConfigError(f"{str(loaded.run_dir)!r} is a {loaded.method} run: {NOT_PARTS}")
    return loaded


def open_data(data: str | Path | DataReport) -> DataReport:
    """A scanned data folder (as given, or scanned from its path: :func:`engine.data.scan`)."""
    if isinstance(data, DataReport):
        return data
    from engine.data import scan

    return scan(data)


def labelled_samples(run: LoadedRun, report: DataReport, split: str
                     ) -> Generator[Progress | Message, None, tuple[DataReport, list]]:
    """The data laid under the run's saved split, checked against the run's classes, and its labelled ``split``
    photos (at least one)."""
    report = yield from use_run_split(run.run_dir, report, run.meta.get("config"))
    if list(report.classes) != run.classes:
        raise CheckpointError(f"the run {str(run.run_dir)!r} knows {len(run.classes)} classes, the data "
                              f"{len(report.classes)} (or other names): use the run trained on this data")
    samples = [s for s in report.split(split) if s.label >= 0]
    if not samples:
        raise DataError(f"{report.root!r} has no labelled {split} images: pick another split or folder")
    return report, samples


def collect_part_scores(run: str | Path | LoadedRun, data: str | Path | DataReport, split: str = "test",
                        device: str = "cpu", batch_size: int = 16, should_stop: Callable[[], bool] | None = None
                        ) -> Generator[Progress | Message, None, PartScores]:
    """Score every image of ``split`` of the data folder (laid under the run's saved split) with each part of a
    ``parts`` run; yields Progress("part scores", done, total) per batch and Message lines about the split;
    returns the :class:`PartScores`. Stops between batches when the generator is closed, or with Cancelled when
    ``should_stop()`` turns true."""
    loaded = open_run(run, device)
    report = open_data(data)
    if report.layout == "flat":
        raise DataError(f"{report.root!r} is a flat folder of images: separating species needs labelled photos "
                        "(class folders or the CUB layout)")
    report, samples = yield from labelled_samples(loaded, report, split)
    n_kp = len(report.part_names) if report.has_parts else 0
    acc: dict[str, list] = {k: [] for k in ("labels", "pred", "paths", "scores", "boxes", "present", "centres",
                                            "probs", "kp")}
    batch_size = max(1, int(batch_size))
    yield Progress("part scores", 0, len(samples))
    for start in range(0, len(samples), batch_size):
        if should_stop is not None and should_stop():
            raise Cancelled(f"part scores stopped after {start} of {len(samples)} images")
        batch = []
        for s in samples[start:start + batch_size]:
            try:
                batch.append((s, load_image(s.path)))
            except DecodeError as exc:
                yield Message("warning", f"{exc.path}: {exc.reason}; left out of the part scores")
        if batch:
            _score_batch(loaded, batch, n_kp, acc)
        yield Progress("part scores", min(start + batch_size, len(samples)), len(samples))
    if not acc["labels"]:
        raise DataError(f"no {split} image of {report.root!r} could be read: check the files")
    k = loaded.model.parts
    return PartScores(list(loaded.classes), np.array(acc["labels"], np.int64), np.array(acc["pred"], np.int64),
                      acc["paths"], np.concatenate(acc["scores"]).astype(np.float32),
                      np.concatenate(acc["boxes"]).reshape(-1, k, 4), np.concatenate(acc["present"]).reshape(-1, k),
                      np.concatenate(acc["centres"]).reshape(-1, k, 2), np.concatenate(acc["probs"]),
                      np.stack(acc["kp"]) if n_kp else None, list(report.part_names) if n_kp else [],
                      str(loaded.run_dir))


@torch.no_grad()
def _score_batch(run: LoadedRun, batch: list[tuple[Sample, tuple]], n_kp: int, acc: dict[str, list]) -> None:
    model = run.model
    pp = Preprocessing.from_dict(run.preprocessing)
    images = [dec.rgb for _, dec in batch]
    x = prepare(images, pp, model_device(model))
    with session(model):
        out = model.forward_parts(x)
    fg = out.maps[:, :model.parts].float().cpu().numpy()  # (B, K, h, w), background dropped
    h, w = fg.shape[-2:]
    peaks = map_peaks(fg)
    for b, (sample, dec) in enumerate(batch):
        size = dec.rgb.shape[:2]
        centres, maxima = part_centres(fg[b], (pp.img_size, pp.img_size))
        acc["centres"].append(input_to_original(centres, (pp.img_size, pp.img_size), size))
        acc["present"].append(maxima > ACTIVE_THRESHOLD)
        acc["boxes"].append(np.array([scale_box(region_box(fg[b, k], tuple(peaks.cell[b, k])), (h, w), size)
                                      for k in range(model.parts)]))
        acc["labels"].append(sample.label)
        acc["paths"].append(sample.path)
        if n_kp:
            kp = sample.keypoints()
            acc["kp"].append(dec.info.keypoints_to_image(kp) if kp is not None else np.zeros((n_kp, 3)))
    logits = out.logits.float()
    acc["scores"].append(out.part_logits.float().cpu().numpy())
    acc["probs"].append(logits.softmax(1).cpu().numpy())
    acc["pred"].extend(logits.argmax(1).cpu().tolist())


def _check_class(scores: PartScores, c: int, name: str) -> np.ndarray:
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < len(scores.classes):
        raise ConfigError(f"{name}={c!r}: give a class index 0..{len(scores.classes) - 1}")
    idx = scores.of_class(int(c))
    if not len(idx):
        raise DataError(f"species {scores.classes[c]!r} has no image in these scores: pick a species with test "
                        "photos")
    return idx


def rank_parts(scores: PartScores, a: int, b: int, crops: int = 3) -> list[Separation]:
    """The parts ranked by their separation d' of species ``a`` from ``b`` (class indices), largest first; each
    with up to ``crops`` example images per species (module docstring)."""
    if a == b:
        raise ConfigError(f"a={a} and b={b} are the same species: give two different classes")
    ia, ib = _check_class(scores, a, "a"), _check_class(scores, b, "b")
    margin = scores.scores[:, :, a].astype(np.float64) - scores.scores[:, :, b]  # (N, K)
    ma, mb = margin[ia], margin[ib]
    na, nb = len(ia), len(ib)
    var_a = ma.var(axis=0, ddof=1) if na > 1 else np.zeros(scores.parts)
    var_b = mb.var(axis=0, ddof=1) if nb > 1 else np.zeros(scores.parts)
    dof = max(na + nb - 2, 1)
    pooled = np.sqrt(((na - 1) * var_a + (nb - 1) * var_b) / dof)
    d = (ma.mean(axis=0) - mb.mean(axis=0)) / np.maximum(pooled, _EPS)
    out = []
    for k in range(scores.parts):
        # the strongest crops: images where the part is active first, then by how strongly it votes
        order_a = sorted(range(na), key=lambda i: (not scores.present[ia[i], k], -ma[i, k]))
        order_b = sorted(range(nb), key=lambda i: (not scores.present[ib[i], k], mb[i, k]))
        out.append(Separation(k, float(d[k]), float(ma[:, k].mean()), float(mb[:, k].mean()),
                              [int(ia[i]) for i in order_a[:max(0, crops)]],
                              [int(ib[i]) for i in order_b[:max(0, crops)]]))
    return sorted(out, key=lambda s: (-s.separation, s.part))


def confusion(scores: PartScores) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted."""
    c = len(scores.classes)
    m = np.zeros((c, c), np.int64)
    np.add.at(m, (scores.labels, scores.predictions), 1)
    return m


def confused_pairs(scores: PartScores, top: int = 15) -> list[tuple[int, int, int]]:
    """(a, b, errors both ways) with a < b for the ``top`` most confused pairs (errors > 0), most confused first."""
    m = confusion(scores)
    both = m + m.T
    pairs = [(a, b, int(both[a, b])) for a in range(len(m)) for b in range(a + 1, len(m)) if both[a, b] > 0]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))[:max(0, top)]


def nearest_species(scores: PartScores, a: int, n: int = 3) -> list[tuple[int, int, float]]:
    """The ``n`` species nearest ``a``: (b, errors both ways, similarity), by errors, then (where there are none)
    by similarity = the mean probability a-images give b plus the mean b-images give a (0..2)."""
    m = confusion(scores)
    ia = scores.of_class(a)
    out = []
    for b in range(len(scores.classes)):
        if b == a:
            continue
        ib = scores.of_class(b)
        sim = (float(scores.probabilities[ia, b].mean()) if len(ia) else 0.0) \
            + (float(scores.probabilities[ib, a].mean()) if len(ib) else 0.0)
        out.append((b, int(m[a, b] + m[b, a]), sim))
    return sorted(out, key=lambda t: (-t[1], -t[2], t[0]))[:max(0, n)]


__all__ = ["NOT_PARTS", "PartScores", "Separation", "collect_part_scores", "rank_parts", "confused_pairs",
           "confusion", "nearest_species", "open_run", "open_data"]
