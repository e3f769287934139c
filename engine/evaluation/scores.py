"""The figures of :mod:`engine.evaluation.evaluate` from gathered part positions (docs/METHODS.md#part-evaluation),
for the run and for its baselines: part hit rate, keypoint regression error (Huang et al., "Interpretable and
Accurate Fine-grained Recognition via Region Grouping", CVPR 2020; PDiscoNet, ICCV 2023), NMI / ARI, and toy
birds' mark recall.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import engine.evaluation.metrics as metrics

log = logging.getLogger(__name__)

PART_KEYS = ("part_hit_rate", "peaks_in_box", "peaks_on_border", "box_share_above_half", "keypoint_error",
             "keypoint_error_all", "nmi", "ari", "mark_recall")


@dataclass
class PartSet:
    """Discovered parts of N images in original pixels. ``peaks``/``centroids`` (N, K, 2) (NaN where a part does
    not exist), ``values`` (N, K) peak strength relative to the image's strongest part, ``kp_labels`` (N, P) the
    part label at each keypoint (-1 invisible); ``all_centroids``/``all_values``: the "all channels" gathering;
    ``on_border`` (N, K) whether each peak lies on the outer ring of cells of its map (None: not read from maps);
    ``box_share`` (N,) :func:`~engine.evaluation.metrics.box_share_above_half` of the maps (None: no maps)."""

    peaks: np.ndarray
    centroids: np.ndarray
    values: np.ndarray
    kp_labels: np.ndarray
    all_centroids: np.ndarray
    all_values: np.ndarray
    on_border: np.ndarray | None = None
    box_share: np.ndarray | None = None

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


@dataclass(frozen=True)
class Marks:
    """Toy birds' truth for mark recall: ``cols[class index]`` the keypoint column of each defining mark,
    ``names[class index]`` the marks' names in the same order, ``extra`` the (left, right) pairs behind the
    columns past the data's own keypoints (see :func:`either_side`)."""

    cols: dict[int, list[int]]
    names: dict[int, list[str]]
    extra: list[tuple[int, int]]


def mark_columns(root: str, classes: Sequence[str], part_names: Sequence[str]) -> Marks | None:
    """Toy birds: the :class:`Marks` of the classes when ``root`` holds toybirds.json (else None).

    A mark on an eye, wing or leg sits on the visible side, so it gets an extra column: the visible one of the
    (left, right) keypoints (``extra`` lists those pairs; columns P, P+1, ... in that order)."""
    from engine.toybirds.dataset import TRUTH_FILE, class_marks

    if not (Path(root) / TRUTH_FILE).is_file():
        return None
    marks = class_marks(root)
    index = {name: i for i, name in enumerate(part_names)}
    extra: list[tuple[int, int]] = []
    out: dict[int, list[int]] = {}
    names: dict[int, list[str]] = {}
    for cname, pairs in marks.items():
        if cname not in classes:
            log.warning("mark recall: toy-bird class %r is not in the data's classes", cname)
            continue
        cols, named = [], []
        for mark, part in pairs:
            side, _, base = part.partition(" ")
            if side in ("left", "right") and f"left {base}" in index and f"right {base}" in index:
                pair = (index[f"left {base}"], index[f"right {base}"])
                if pair not in extra:
                    extra.append(pair)
                cols.append(len(part_names) + extra.index(pair))
                named.append(mark)
            elif part in index:
                cols.append(index[part])
                named.append(mark)
            else:
                log.warning("mark recall: mark %r of class %r is on %r, which the data has no keypoint for",
                            mark, cname, part)
        out[list(classes).index(cname)] = cols
        names[list(classes).index(cname)] = named
    return Marks(out, names, extra)


def either_side(keypoints: np.ndarray, extra: list[tuple[int, int]]) -> np.ndarray:
    """Append, per (left, right) pair, the visible one of the two keypoints as a new column."""
    kp = np.asarray(keypoints, np.float64)
    cols = []
    for left, right in extra:
        use_left = kp[:, left, 2] > 0
        cols.append(np.where(use_left[:, None], kp[:, left], kp[:, right]))
    return np.concatenate([kp] + [c[:, None] for c in cols], axis=1) if cols else kp


def part_scores(train: PartSet, test: PartSet, tr: Truth, te: Truth,
                marks: Marks | None) -> dict[str, float | None]:
    """The part figures of one method on the test split (keypoint regression fitted on the training split)."""
    out: dict[str, float | None] = {}
    out["part_hit_rate"] = metrics.part_hit_rate(test.peaks, te.keypoints, te.boxes, valid=test.valid)
    out["peaks_in_box"] = metrics.peaks_in_box(test.peaks, te.boxes, valid=test.valid)
    out["peaks_on_border"] = None
    if test.on_border is not None and test.valid.any():
        out["peaks_on_border"] = float(test.on_border[test.valid].mean())
    out["box_share_above_half"] = None
    if test.box_share is not None and len(test.box_share):
        out["box_share_above_half"] = float(test.box_share.mean())
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
        out["mark_recall"] = metrics.mark_recall(test.peaks, te.labels, marks.cols,
                                                 either_side(te.keypoints, marks.extra), te.boxes)
    return {k: _clean(v) for k, v in out.items()}


def mark_table(test: PartSet, te: Truth, marks: Marks, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Per (class, defining mark): test images where the mark is visible, how many have a part on it, and
    whether that counts as recalled (at least half) — what ``mark_recall`` averages."""
    rows = metrics.mark_recall_table(test.peaks, te.labels, marks.cols, either_side(te.keypoints, marks.extra),
                                     te.boxes)
    order = {c: iter(names) for c, names in marks.names.items()}
    return [{"class": classes[r.class_index], "mark": next(order[r.class_index]), "images": r.images,
             "hits": r.hits, "fraction": _clean(r.fraction), "recalled": r.recalled} for r in rows]


def format_marks(rows: list[dict[str, Any]]) -> str:
    """The mark table as text: one line per (class, mark)."""
    if not rows:
        return ""
    width = max(len(r["class"]) for r in rows)
    mwidth = max(len(r["mark"]) for r in rows)
    lines = [f"{'class':<{width}}  {'mark':<{mwidth}}  {'on the mark':>11}  recalled"]
    for r in rows:
        frac = "-" if r["fraction"] is None else f"{100 * r['fraction']:.0f}%"
        lines.append(f"{r['class']:<{width}}  {r['mark']:<{mwidth}}  {frac:>5} {r['hits']:>2}/{r['images']:<3}"
                     f"  {'yes' if r['recalled'] else 'no'}")
    return "\n".join(lines)


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
            ("peaks in the bird's box (%)", "peaks_in_box", 100.0),
            ("peaks on the map's border (%)", "peaks_on_border", 100.0),
            ("box share above half max (%)", "box_share_above_half", 100.0),
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
    split = info.get("split", "test")
    lines.append(f"{info.get('n_test', 0)} {split} / {info.get('n_train', 0)} train images; parts: "
                 f"{info.get('source', '?')}, {info.get('parts', '?')} per image (true class), "
                 f"{info.get('parts_all', '?')} in the all-channels regression; {info.get('seconds', 0):.1f} s")
    if info.get("top1_per_scale"):  # an RA-CNN run
        per_scale = info["top1_per_scale"].items()
        lines.append("top1 per scale (%): " + ", ".join(f"{k} {100 * v:.2f}" for k, v in per_scale))
    if info.get("squares"):  # an RA-CNN run: where its APNs cut, and how much that moves from photo to photo
        lines.append(f"squares on the photo (mean ± sd over the {split} photos, fractions of its side): " + "; ".join(
            f"{k} centre ({d['centre_x'][0]:.3f} ± {d['centre_x'][1]:.3f}, {d['centre_y'][0]:.3f} ± "
            f"{d['centre_y'][1]:.3f}), half side {d['half_side'][0]:.3f} ± {d['half_side'][1]:.3f}"
            for k, d in info["squares"].items()))
    if result.get("protocol"):
        lines += ["", format_protocol(result["protocol"])]
    return "\n".join(lines)


def format_protocol(protocol: dict[str, Any]) -> str:
    """The published protocol's figures (Huang et al. 2020 / PDiscoNet 2023), columns run / random / gradcam."""
    cols = [(k, v) for k, v in (("run", protocol.get("own")), ("random", protocol.get("random")),
                                ("gradcam", protocol.get("gradcam"))) if v]
    rows = [("keypoint error (% box, lower is better)", "keypoint_error"), ("NMI (x100)", "nmi"),
            ("ARI (x100)", "ari")]
    width = max(len(r[0]) for r in rows)
    lines = ["published protocol (shorter side resized, no crop; regression fitted on the train split):",
             f"{'':<{width}}  " + "  ".join(f"{name:>9}" for name, _ in cols)]
    for label, key in rows:
        cells = [f"{'-' if d.get(key) is None or d.get(key) != d.get(key) else f'{d[key]:.2f}':>9}" for _, d in cols]
        lines.append(f"{label:<{width}}  " + "  ".join(cells))
    for name, d in cols:
        meta = d.get("protocol", {})
        lines.append(f"  {name}: {meta.get('maps', '?')}" + ("; background its own label" if meta.get("background")
                                                              else "; no background map"))
    own = protocol.get("own") or {}
    lines.append(f"  {own.get('n_keypoints', 0)} visible test keypoints scored; images "
                 f"{(own.get('n_images') or {}).get('train', 0)} train / {(own.get('n_images') or {}).get('test', 0)} test")
    return "\n".join(lines)


__all__ = ["PART_KEYS", "PartSet", "Truth", "Marks", "nearest_labels", "random_partset", "mark_columns",
           "mark_table", "format_marks", "either_side",
           "part_scores", "format_table", "format_protocol"]
