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
    peaks: np.ndarray | None = None  # (N, K, 2) x, y of each part map's maximum (cell centre), image pixels
    bird_boxes: np.ndarray | None = None  # (N, 4) x0, y0, x1, y1 of the data set's bird box; NaN rows: none
    peak_on_foreground: np.ndarray | None = None  # (N, K) the peak's cell is foreground (1 - background map above
    # half its maximum): the run's own idea of where the bird is, for folders without boxes
    vectors: np.ndarray | None = None  # (N, K, D) the part vectors after modulation (what the classifier scores)
    _scales: dict = field(default_factory=dict, repr=False)

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
                        device: str = "cpu", batch_size: int = 16, should_stop: Callable[[], bool] | None = None,
                        keep_vectors: bool = False) -> Generator[Progress | Message, None, PartScores]:
    """Score every image of ``split`` of the data folder (laid under the run's saved split) with each part of a
    ``parts`` run; yields Progress("part scores", done, total) per batch and Message lines about the split;
    returns the :class:`PartScores`, with the part vectors when ``keep_vectors`` (the probe ranking needs them).
    Stops between batches when the generator is closed, or with Cancelled when ``should_stop()`` turns true."""
    loaded = open_run(run, device)
    report = open_data(data)
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split={split!r}: use train, val or test")
    if report.layout == "flat":
        raise DataError(f"{report.root!r} is a flat folder of images: separating species needs labelled photos "
                        "(class folders or the CUB layout)")
    report, samples = yield from labelled_samples(loaded, report, split)
    n_kp = len(report.part_names) if report.has_parts else 0
    acc: dict[str, list] = {k: [] for k in ("labels", "pred", "paths", "scores", "boxes", "present", "centres",
                                            "probs", "kp", "peaks", "bird", "fg", "vectors")}
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
            _score_batch(loaded, batch, n_kp, acc, keep_vectors)
        yield Progress("part scores", min(start + batch_size, len(samples)), len(samples))
    if not acc["labels"]:
        raise DataError(f"no {split} image of {report.root!r} could be read: check the files")
    k = loaded.model.parts
    return PartScores(list(loaded.classes), np.array(acc["labels"], np.int64), np.array(acc["pred"], np.int64),
                      acc["paths"], np.concatenate(acc["scores"]).astype(np.float32),
                      np.concatenate(acc["boxes"]).reshape(-1, k, 4), np.concatenate(acc["present"]).reshape(-1, k),
                      np.concatenate(acc["centres"]).reshape(-1, k, 2), np.concatenate(acc["probs"]),
                      np.stack(acc["kp"]) if n_kp else None, list(report.part_names) if n_kp else [],
                      str(loaded.run_dir), np.concatenate(acc["peaks"]).reshape(-1, k, 2),
                      np.array(acc["bird"], np.float64).reshape(-1, 4),
                      np.concatenate(acc["fg"]).reshape(-1, k),
                      np.concatenate(acc["vectors"]) if keep_vectors else None)


@torch.no_grad()
def _score_batch(run: LoadedRun, batch: list[tuple[Sample, tuple]], n_kp: int, acc: dict[str, list],
                 keep_vectors: bool = False) -> None:
    model = run.model
    pp = Preprocessing.from_dict(run.preprocessing)
    images = [dec.rgb for _, dec in batch]
    x = prepare(images, pp, model_device(model))
    with session(model):
        out = model.forward_parts(x)
    fg = out.maps[:, :model.parts].float().cpu().numpy()  # (B, K, h, w), background dropped
    bird = 1.0 - out.maps[:, model.parts].float().cpu().numpy()  # (B, h, w): the run's foreground
    h, w = fg.shape[-2:]
    peaks = map_peaks(fg)
    rows, cols = peaks.cell[..., 0], peaks.cell[..., 1]  # (B, K)
    for b, (sample, dec) in enumerate(batch):
        size = dec.rgb.shape[:2]
        acc["peaks"].append(map_peaks(fg[b], size).argmax)
        fg_mask = bird[b] > 0.5 * bird[b].max()
        acc["fg"].append(fg_mask[rows[b], cols[b]])
        box = dec.info.xywh_to_image(sample.bbox) if sample.bbox is not None else None
        acc["bird"].append((box[0], box[1], box[0] + box[2], box[1] + box[3]) if box is not None else (np.nan,) * 4)
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
    if keep_vectors:  # (N, K, D): only the probe ranking needs them, and they are large on big folders
        vectors = out.part_vectors[:, :model.parts] * model.modulation[:, :model.parts].t().unsqueeze(0)
        acc["vectors"].append(vectors.float().cpu().numpy())
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


#: The ways to rank the parts for a pair (docs/METHODS.md#separation): "dprime", Cohen's d' of the part's margin
#: s_k[a] - s_k[b] between the two species' photos; "normalised", that d' divided by the part's usual d' over every
#: pair of species (its root mean square), so that a part which carries most of every class's evidence does not
#: come first for every pair; "probe", a logistic regression of a against b on the part vectors (the pair's own
#: linear probe) and the d' of each part's share w_k . v_k of its logit. Dropping a part (its vector zeroed, as part
#: dropout does) changes the pair's logit margin by exactly m_k / K, so an ablation ranking equals "dprime".
RANKINGS = ("dprime", "normalised", "probe")
DEFAULT_RANKING = "dprime"


def _cohen_d(ma: np.ndarray, mb: np.ndarray) -> np.ndarray:
    """Cohen's d of the columns of ma (images of a) against those of mb: (mean a - mean b) / pooled std."""
    na, nb = len(ma), len(mb)
    var_a = ma.var(axis=0, ddof=1) if na > 1 else np.zeros(ma.shape[1])
    var_b = mb.var(axis=0, ddof=1) if nb > 1 else np.zeros(mb.shape[1])
    pooled = np.sqrt(((na - 1) * var_a + (nb - 1) * var_b) / max(na + nb - 2, 1))
    return (ma.mean(axis=0) - mb.mean(axis=0)) / np.maximum(pooled, _EPS)


def part_scale(scores: PartScores) -> np.ndarray:
    """(K,) each part's usual separation: the root mean square of its d' over every pair of species that both have
    images in the scores (computed once per :class:`PartScores`)."""
    if "rms" not in scores._scales:
        present = [c for c in range(len(scores.classes)) if len(scores.of_class(c))]
        total, n = np.zeros(scores.parts), 0
        for i, a in enumerate(present):
            ia = scores.of_class(a)
            for b in present[i + 1:]:
                ib = scores.of_class(b)
                margin = scores.scores[:, :, a].astype(np.float64) - scores.scores[:, :, b]
                total += _cohen_d(margin[ia], margin[ib]) ** 2
                n += 1
        scores._scales["rms"] = np.sqrt(total / max(n, 1))
    return scores._scales["rms"]


def probe_contributions(scores: PartScores, ia: np.ndarray, ib: np.ndarray, l2: float = 1.0,
                        steps: int = 200) -> np.ndarray:
    """(len(ia) + len(ib), K): each part's share of a logistic regression of a (1) against b (0) fitted on the
    images' part vectors, every feature standardised over the pair's images, with an L2 penalty ``l2`` / n on the
    weights (L-BFGS, deterministic): c_k = w_k . v_k for the images ia then ib."""
    if scores.vectors is None:
        raise ConfigError("the probe ranking needs the part vectors: collect the scores with collect_part_scores")
    v = scores.vectors[np.concatenate([ia, ib])].astype(np.float64)  # (n, K, D)
    n, k, d = v.shape
    x = v.reshape(n, k * d)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    y = torch.tensor(np.r_[np.ones(len(ia)), np.zeros(len(ib))], dtype=torch.float64)
    xt = torch.tensor(x)
    w = torch.zeros(k * d, dtype=torch.float64, requires_grad=True)
    b0 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b0], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b0, y) + 0.5 * l2 / n * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return (x.reshape(n, k, d) * w.detach().numpy().reshape(1, k, d)).sum(-1)


def separation_values(scores: PartScores, a: int, b: int, ranking: str = DEFAULT_RANKING) -> np.ndarray:
    """(K,) the value each part is ranked by for species a against b under ``ranking`` (:data:`RANKINGS`)."""
    if ranking not in RANKINGS:
        raise ConfigError(f"ranking={ranking!r}: use one of {', '.join(RANKINGS)}")
    ia, ib = _check_class(scores, a, "a"), _check_class(scores, b, "b")
    if ranking == "probe":
        c = probe_contributions(scores, ia, ib)
        return _cohen_d(c[:len(ia)], c[len(ia):])
    margin = scores.scores[:, :, a].astype(np.float64) - scores.scores[:, :, b]  # (N, K)
    d = _cohen_d(margin[ia], margin[ib])
    if ranking == "normalised":
        d = d / np.maximum(part_scale(scores), _EPS)
    return d


def rank_parts(scores: PartScores, a: int, b: int, crops: int = 3, ranking: str = DEFAULT_RANKING
               ) -> list[Separation]:
    """The parts ranked by their separation of species ``a`` from ``b`` (class indices) under ``ranking``
    (:data:`RANKINGS`; by default d'), largest first; each with up to ``crops`` example images per species (module
    docstring)."""
    if a == b:
        raise ConfigError(f"a={a} and b={b} are the same species: give two different classes")
    ia, ib = _check_class(scores, a, "a"), _check_class(scores, b, "b")
    d = separation_values(scores, a, b, ranking)
    margin = scores.scores[:, :, a].astype(np.float64) - scores.scores[:, :, b]  # (N, K)
    ma, mb = margin[ia], margin[ib]
    na, nb = len(ia), len(ib)
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


__all__ = ["NOT_PARTS", "PartScores", "Separation", "collect_part_scores", "rank_parts", "confused_pairs", "RANKINGS",
           "DEFAULT_RANKING", "separation_values", "part_scale", "probe_contributions",
           "confusion", "nearest_species", "open_run", "open_data"]
