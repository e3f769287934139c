"""The figures of :mod:`engine.evaluate` from gathered part positions (ALGORITHMS.md §4), for the run and for its
baselines: part hit rate, keypoint regression error (Huang et al., "Interpretable and Accurate Fine-grained
Recognition via Region Grouping", CVPR 2020; PDiscoNet, ICCV 2023), NMI / ARI, and toy birds' mark recall.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import metrics

log = logging.getLogger(__name__)

PART_KEYS = ("part_hit_rate", "keypoint_error", "keypoint_error_all", "nmi", "ari", "mark_recall")


@dataclass
class PartSet:
    """Discovered parts of N images in original pixels. ``peaks``/``centroids`` (N, K, 2) (NaN where a part does
    not exist), ``values`` (N, K) peak strength relative to the image's strongest part, ``kp_labels`` (N, P) the
    part label at each keypoint (-1 invisible); ``all_centroids``/``all_values``: the "all channels" gathering."""

    peaks: np.ndarray
    centroids: np.ndarray
    values: np.ndarray
    kp_labels: np.ndarray
    all_centroids: np.ndarray
    all_values: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return np.isfinite(self.peaks).all(axis=2)


@dataclass
class Truth:
    """Ground truth of one split: keypoints (N, P, 3), boxes (N, 4) x0, y0, w, h, labels (N,)."""

    keypoints: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def nearest_labels(points: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """(N, P) index of the nearest of each image's K points to each visible keypoint (-1 when invisible): the
    part label of point-like parts (the random baseline)."""
    kp = np.asarray(keypoints, np.float64)
    d = np.linalg.norm(kp[:, :, None, :2] - points[:, None, :, :], axis=-1)  # (N, P, K)
    lab = np.argmin(np.where(np.isfinite(d), d, np.inf), axis=2)
    return np.where(kp[:, :, 2] > 0, lab, -1)


def random_partset(truth: Truth, k: int, k_all: int, rng: np.random.Generator) -> PartSet:
    """The random baseline: ``k`` points uniform in each bird box (``k_all`` for the all-channels variant)."""
    pts = metrics.random_peaks(truth.boxes, k, rng)
    pts_all = metrics.random_peaks(truth.boxes, k_all, rng)
    n = len(truth.boxes)
    return PartSet(pts, pts, np.ones((n, k)), nearest_labels(pts, truth.keypoints), pts_all, np.ones((n, k_all)))


def mark_columns(root: str, classes: Sequence[str], part_names: Sequence[str]
                 ) -> tuple[dict[int, list[int]], list[tuple[int, int]]] | None:
    """Toy birds: ({class index: [keypoint column per mark]}, extra columns) when ``root`` holds toybirds.json.

    A mark on an eye, wing or leg sits on the visible side, so it gets an extra column: the visible one of the
    (left, right) keypoints (``extra`` lists those pairs; columns P, P+1, ... in that order)."""
    from .toybirds import TRUTH_FILE, class_marks

    if not (Path(root) / TRUTH_FILE).is_file():
        return None
    marks = class_marks(root)
    index = {name: i for i, name in enumerate(part_names)}
    extra: list[tuple[int, int]] = []
    out: dict[int, list[int]] = {}
    for cname, pairs in marks.items():
        if cname not in classes:
            log.warning("mark recall: toy-bird class %r is not in the data's classes", cname)
            continue
        cols = []
        for _, part in pairs:
            side, _, base = part.partition(" ")
            if side in ("left", "right") and f"left {base}" in index and f"right {base}" in index:
                pair = (index[f"left {base}"], index[f"right {base}"])
                if pair not in extra:
                    extra.append(pair)
                cols.append(len(part_names) + extra.index(pair))
            elif part in index:
                cols.append(index[part])
        out[list(classes).index(cname)] = cols
    return out, extra


def either_side(keypoints: np.ndarray, extra: list[tuple[int, int]]) -> np.ndarray:
    """Append, per (left, right) pair, the visible one of the two keypoints as a new column."""
    kp = np.asarray(keypoints, np.float64)
    cols = []
    for left, right in extra:
        use_left = kp[:, left, 2] > 0
        cols.append(np.where(use_left[:, None], kp[:, left], kp[:, right]))
    return np.concatenate([kp] + [c[:, None] for c in cols], axis=1) if cols else kp


def part_scores(train: PartSet, test: PartSet, tr: Truth, te: Truth,
                marks: tuple[dict[int, list[int]], list[tuple[int, int]]] | None) -> dict[str, float | None]:
    """The part figures of one method on the test split (keypoint regression fitted on the training split)."""
    out: dict[str, float | None] = {}
    out["part_hit_rate"] = metrics.part_hit_rate(test.peaks, te.keypoints, te.boxes, valid=test.valid)
    if len(tr.boxes):
        out["keypoint_error"] = metrics.keypoint_regression_error(
            train.centroids, train.values, tr.keypoints, tr.boxes, test.centroids, test.values, te.keypoints,
            te.boxes)
        out["keypoint_error_all"] = metrics.keypoint_regression_error(
            train.all_centroids, train.all_values, tr.keypoints, tr.boxes, test.all_centroids, test.all_values,
            te.keypoints, te.boxes)
    else:
        log.warning("keypoint regression needs training images: the split has none")
        out["keypoint_error"] = out["keypoint_error_all"] = None
    out["nmi"], out["ari"] = metrics.nmi_ari(test.kp_labels, te.keypoints)
    out["mark_recall"] = None
    if marks is not None:
        cols, extra = marks
        out["mark_recall"] = metrics.mark_recall(test.peaks, te.labels, cols, either_side(te.keypoints, extra),
                                                 te.boxes)
    return {k: _clean(v) for k, v in out.items()}


def _clean(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if not np.isfinite(v) else v


def format_table(result: dict[str, Any], info: dict[str, Any]) -> str:
    """A readable table: one row per figure, columns run / random / gradcam."""
    base = result.get("baselines") or {}
    cols = [("run", result)] + [(k, v) for k, v in base.items() if v is not None]
    rows = [("top1 (%)", "top1", 100.0), ("part hit rate (%)", "part_hit_rate", 100.0),
            ("keypoint error (% box), ξ parts", "keypoint_error", 1.0),
            ("keypoint error (% box), all channels", "keypoint_error_all", 1.0), ("NMI", "nmi", 1.0),
            ("ARI", "ari", 1.0), ("regions per class (h)", "regions_per_class", 1.0),
            ("mark recall (%)", "mark_recall", 100.0)]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{name:>9}" for name, _ in cols)]
    for label, key, scale in rows:
        cells = []
        for _, d in cols:
            v = d.get(key)
            cells.append(f"{'-' if v is None else f'{v * scale:.2f}':>9}")
        lines.append(f"{label:<{width}}  " + "  ".join(cells))
    lines.append(f"{info.get('n_test', 0)} test / {info.get('n_train', 0)} train images; parts: "
                 f"{info.get('source', '?')}, {info.get('parts', '?')} per image (true class), "
                 f"{info.get('parts_all', '?')} in the all-channels regression; {info.get('seconds', 0):.1f} s")
    return "\n".join(lines)


__all__ = ["PART_KEYS", "PartSet", "Truth", "nearest_labels", "random_partset", "mark_columns", "either_side",
           "part_scores", "format_table"]
