"""Scores for discovered parts against CUB-200-2011 part keypoints (docs/METHODS.md#part-evaluation). NumPy and
scikit-learn only.

Conventions: N images, K discovered parts per image, P keypoints (15 on CUB, in the order of :data:`CUB_PARTS`).
All coordinates are in original image pixels, x then y. ``keypoints`` is (N, P, 3): x, y, visible (0/1);
``bboxes`` is (N, 4): x0, y0, w, h. Protocols follow Huang et al., "Interpretable and Accurate Fine-grained
Recognition via Region Grouping" (CVPR 2020) and PDiscoNet (van der Klis et al., ICCV 2023).

Degenerate cases never raise: a score that cannot be computed is NaN and a warning is logged. Inputs of the
wrong shape are caller bugs and raise ``ValueError``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from engine.data.records import CUB_PARTS

log = logging.getLogger(__name__)


_STD_EPS = 1e-12


def _keypoints(keypoints: np.ndarray, n: int | None = None) -> np.ndarray:
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[2] != 3:
        raise ValueError(f"keypoints must be (N, P, 3) x, y, visible; got shape {kp.shape}")
    if n is not None and kp.shape[0] != n:
        raise ValueError(f"keypoints hold {kp.shape[0]} images, expected {n}")
    return kp


def _bboxes(bboxes: np.ndarray, n: int) -> np.ndarray:
    bb = np.asarray(bboxes, dtype=np.float64)
    if bb.shape != (n, 4):
        raise ValueError(f"bboxes must be (N, 4) x0, y0, w, h with N={n}; got shape {bb.shape}")
    bad = np.flatnonzero(~((bb[:, 2] > 0) & (bb[:, 3] > 0)))
    if bad.size:
        raise ValueError(f"bounding boxes need w > 0 and h > 0; image {bad[0]} has {bb[bad[0]].tolist()}")
    return bb


def _points(points: np.ndarray, name: str) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[2] != 2:
        raise ValueError(f"{name} must be (N, K, 2) x, y; got shape {pts.shape}")
    return pts


def _visible(kp: np.ndarray) -> np.ndarray:
    return (kp[:, :, 2] > 0) & np.isfinite(kp[:, :, 0]) & np.isfinite(kp[:, :, 1])


def _diagonal(bb: np.ndarray) -> np.ndarray:
    return np.hypot(bb[:, 2], bb[:, 3])


def part_hit_rate(peaks: np.ndarray, keypoints: np.ndarray, bboxes: np.ndarray, threshold: float = 0.1,
                  valid: np.ndarray | None = None) -> float:
    """Fraction of discovered parts within ``threshold`` × box diagonal (distance ≤ radius) of any visible
    keypoint of the same image, in [0, 1].

    Decisions: images with no visible keypoint are excluded (their parts count neither as hits nor as misses);
    parts with ``valid[n, k] == False`` are excluded; a part with non-finite coordinates that is still valid
    counts as a miss (pass ``valid`` to exclude it instead). NaN (with a warning) when no part is counted.
    """
    pts = _points(peaks, "peaks")
    n, k = pts.shape[:2]
    kp = _keypoints(keypoints, n)
    bb = _bboxes(bboxes, n)
    mask = np.ones((n, k), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if mask.shape != (n, k):
        raise ValueError(f"valid must be (N, K) = {(n, k)}; got shape {mask.shape}")
    vis = _visible(kp)                                                   # (N, P)
    radius = threshold * _diagonal(bb)                                   # (N,)
    dist = np.linalg.norm(pts[:, :, None, :] - kp[:, None, :, :2], axis=-1)  # (N, K, P)
    with np.errstate(invalid="ignore"):
        near = (dist <= radius[:, None, None]) & vis[:, None, :]
    hit = near.any(axis=2)                                               # (N, K)
    counted = mask & vis.any(axis=1)[:, None]
    total = int(counted.sum())
    if total == 0:
        log.warning("part hit rate: no part to score (no valid part in an image with a visible keypoint)")
        return float("nan")
    return float((hit & counted).sum() / total)


def peaks_in_box(peaks: np.ndarray, bboxes: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Fraction of discovered parts whose peak lies inside the image's bird box (edges included), in [0, 1];
    parts with ``valid[n, k] == False`` are left out. NaN (with a warning) when no part is counted."""
    pts = _points(peaks, "peaks")
    n, k = pts.shape[:2]
    bb = _bboxes(bboxes, n)
    mask = np.ones((n, k), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if mask.shape != (n, k):
        raise ValueError(f"valid must be (N, K) = {(n, k)}; got shape {mask.shape}")
    x, y = pts[..., 0], pts[..., 1]
    x0, y0 = bb[:, 0:1], bb[:, 1:2]
    with np.errstate(invalid="ignore"):
        inside = (x >= x0) & (x <= x0 + bb[:, 2:3]) & (y >= y0) & (y <= y0 + bb[:, 3:4])
    total = int(mask.sum())
    if total == 0:
        log.warning("peaks in box: no part to score")
        return float("nan")
    return float((inside & mask).sum() / total)


def box_share_above_half(maps: np.ndarray, bboxes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per image (N,): the share of the bird box's cells where the map is at least half the image's map maximum.

    ``maps`` (N, h, w) cover the whole H×W photo (several parts: pass their per-cell maximum), ``sizes`` (N, 2)
    H, W. A cell belongs to the box when its centre, x = (col + 0.5)·W/w − 0.5 (y alike), lies in the box, edges
    included (as :func:`peaks_in_box`); a box holding no cell centre gets the cell nearest its own centre. The
    maximum is over the whole map; an image whose map maximum is ≤ 0 has share 0 (no cell is attended).
    """
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim != 3 or 0 in m.shape:
        raise ValueError(f"maps must be a non-empty (N, h, w) array; got shape {m.shape}")
    n, h, w = m.shape
    bb = _bboxes(bboxes, n)
    hw = np.asarray(sizes, dtype=np.float64).reshape(n, 2)
    xs = (np.arange(w) + 0.5) * hw[:, 1:2] / w - 0.5  # (N, w) cell centres in pixels
    ys = (np.arange(h) + 0.5) * hw[:, 0:1] / h - 0.5
    in_x = (xs >= bb[:, 0:1]) & (xs <= bb[:, 0:1] + bb[:, 2:3])
    in_y = (ys >= bb[:, 1:2]) & (ys <= bb[:, 1:2] + bb[:, 3:4])
    cells = in_y[:, :, None] & in_x[:, None, :]
    for i in np.flatnonzero(~cells.any(axis=(1, 2))):  # a box smaller than a cell: its centre's cell
        col = int(np.clip(np.floor((bb[i, 0] + bb[i, 2] / 2 + 0.5) * w / hw[i, 1]), 0, w - 1))
        row = int(np.clip(np.floor((bb[i, 1] + bb[i, 3] / 2 + 0.5) * h / hw[i, 0]), 0, h - 1))
        cells[i, row, col] = True
    top = m.reshape(n, -1).max(axis=1)
    hot = m >= 0.5 * top[:, None, None]
    share = (hot & cells).sum(axis=(1, 2)) / cells.sum(axis=(1, 2))
    return np.where(top > 0, share, 0.0)


def part_features(centroids: np.ndarray, peak_values: np.ndarray, bboxes: np.ndarray,
                  peak_threshold: float = 0.5) -> np.ndarray:
    """The (N, 2K) regression features of Huang et al. (CVPR 2020), before standardisation.

    Each centroid is normalised by its image's box, ((x − x0)/w, (y − y0)/h); a part whose peak value is below
    ``peak_threshold`` (or whose centroid is not finite) gets (0, 0). Layout: x1, y1, x2, y2, ... .
    """
    cen = _points(centroids, "centroids")
    n, k = cen.shape[:2]
    pv = np.asarray(peak_values, dtype=np.float64)
    if pv.shape != (n, k):
        raise ValueError(f"peak_values must be (N, K) = {(n, k)}; got shape {pv.shape}")
    bb = _bboxes(bboxes, n)
    norm = (cen - bb[:, None, :2]) / bb[:, None, 2:]
    keep = (pv >= peak_threshold) & np.isfinite(norm).all(axis=2)
    norm = np.where(keep[:, :, None], norm, 0.0)
    return norm.reshape(n, 2 * k)


def keypoint_regression_error(train_centroids: np.ndarray, train_peak_values: np.ndarray,
                              train_keypoints: np.ndarray, train_bboxes: np.ndarray,
                              test_centroids: np.ndarray, test_peak_values: np.ndarray,
                              test_keypoints: np.ndarray, test_bboxes: np.ndarray,
                              peak_threshold: float = 0.5) -> float:
    """Keypoint regression error in percent of the box (lower is better): Huang et al. (CVPR 2020), PDiscoNet
    (ICCV 2023).

    Features from :func:`part_features`, standardised with the training mean and population std (a column with
    std 0 is only centred). For each keypoint, one least-squares linear map *with* an intercept from the 2K
    features to its normalised (x, y), fitted on the training images where that keypoint is visible
    (``numpy.linalg.lstsq``, minimum-norm solution: deterministic). Error: the mean L2 distance, in normalised box
    units, pooled over all visible test keypoints, × 100.

    The project's first notes on the protocol said "standardised ... no intercept": with centred features and no
    intercept every prediction averages to 0 while the targets average about 0.5 (box units), so every method,
    random included, scored 60-65 % of the box on toy birds. The published protocol code fits on non-centred
    features; with standardised features the intercept is what restores the mean (same predictions as fitting raw
    features). docs/METHODS.md#published-protocol lists this among the differences.

    A keypoint never visible in training is left out of the error (warning). NaN (warning) when nothing can be
    fitted or no visible test keypoint remains.
    """
    x_tr = part_features(train_centroids, train_peak_values, train_bboxes, peak_threshold)
    x_te = part_features(test_centroids, test_peak_values, test_bboxes, peak_threshold)
    if x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(f"train has {x_tr.shape[1] // 2} parts per image, test {x_te.shape[1] // 2}")
    kp_tr = _keypoints(train_keypoints, x_tr.shape[0])
    kp_te = _keypoints(test_keypoints, x_te.shape[0])
    if kp_tr.shape[1] != kp_te.shape[1]:
        raise ValueError(f"train has {kp_tr.shape[1]} keypoints per image, test {kp_te.shape[1]}")
    if x_tr.shape[0] == 0:
        log.warning("keypoint regression: no training image, nothing to fit; error is NaN")
        return float("nan")
    bb_tr = _bboxes(train_bboxes, x_tr.shape[0])
    bb_te = _bboxes(test_bboxes, x_te.shape[0])

    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std = np.where(std > _STD_EPS, std, 1.0)
    z_tr = np.column_stack([np.ones(len(x_tr)), (x_tr - mean) / std])  # intercept first
    z_te = np.column_stack([np.ones(len(x_te)), (x_te - mean) / std])
    y_tr = (kp_tr[:, :, :2] - bb_tr[:, None, :2]) / bb_tr[:, None, 2:]   # (N, P, 2)
    y_te = (kp_te[:, :, :2] - bb_te[:, None, :2]) / bb_te[:, None, 2:]
    vis_tr, vis_te = _visible(kp_tr), _visible(kp_te)

    errors: list[np.ndarray] = []
    unfitted: list[int] = []
    for p in range(kp_tr.shape[1]):
        rows = vis_tr[:, p]
        if not rows.any():
            if vis_te[:, p].any():
                unfitted.append(p)
            continue
        coef, *_ = np.linalg.lstsq(z_tr[rows], y_tr[rows, p], rcond=None)  # (1 + 2K, 2)
        test_rows = vis_te[:, p]
        if test_rows.any():
            pred = z_te[test_rows] @ coef
            errors.append(np.linalg.norm(pred - y_te[test_rows, p], axis=1))
    if unfitted:
        log.warning("keypoint regression: keypoints %s are never visible in training; left out of the error",
                    unfitted)
    if not errors:
        log.warning("keypoint regression: no keypoint both visible in training and in test; error is NaN")
        return float("nan")
    return float(np.concatenate(errors).mean() * 100.0)


def labels_at_keypoints(label_maps: Sequence[np.ndarray] | np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Sample each image's (H, W) part-label map at its keypoints: (N, P) int.

    Positions are rounded to the nearest pixel (x → column, y → row) and clipped into the map. Invisible keypoints
    (or non-finite positions) get -1.
    """
    kp = _keypoints(keypoints)
    if len(label_maps) != kp.shape[0]:
        raise ValueError(f"{len(label_maps)} label maps for {kp.shape[0]} images")
    vis = _visible(kp)
    out = np.full(kp.shape[:2], -1, dtype=np.int64)
    for i, lab in enumerate(label_maps):
        lab = np.asarray(lab)
        if lab.ndim != 2 or lab.size == 0:
            raise ValueError(f"label map {i} must be a non-empty (H, W) array; got shape {lab.shape}")
        v = vis[i]
        if not v.any():
            continue
        h, w = lab.shape
        cols = np.clip(np.floor(kp[i, v, 0] + 0.5), 0, w - 1).astype(np.int64)
        rows = np.clip(np.floor(kp[i, v, 1] + 0.5), 0, h - 1).astype(np.int64)
        out[i, v] = lab[rows, cols]
    return out


def nmi_ari(part_labels_at_keypoints: np.ndarray, keypoints: np.ndarray) -> tuple[float, float]:
    """(NMI, ARI) × 100 between the part label at each visible keypoint and the keypoint's identity 0..P−1
    (sklearn ``normalized_mutual_info_score`` with its default arithmetic mean, ``adjusted_rand_score``), as in
    Huang et al. (CVPR 2020) and PDiscoNet (ICCV 2023). Higher is better. (NaN, NaN) with a warning when no
    keypoint is visible.
    """
    kp = _keypoints(keypoints)
    labels = np.asarray(part_labels_at_keypoints)
    if labels.shape != kp.shape[:2]:
        raise ValueError(f"part labels must be (N, P) = {kp.shape[:2]}; got shape {labels.shape}")
    vis = _visible(kp)
    if not vis.any():
        log.warning("NMI/ARI: no visible keypoint; scores are NaN")
        return float("nan"), float("nan")
    identity = np.broadcast_to(np.arange(kp.shape[1]), kp.shape[:2])
    truth, pred = identity[vis], labels[vis]
    return (float(normalized_mutual_info_score(truth, pred) * 100.0),
            float(adjusted_rand_score(truth, pred) * 100.0))


@dataclass(frozen=True)
class MarkRecall:
    """One (class, mark) row of :func:`mark_recall_table`. ``fraction`` is NaN when ``images`` is 0."""

    class_index: int
    mark: int
    part_name: str
    images: int       # test images of the class where the mark's keypoint is visible
    hits: int         # of those, images with at least one part within the radius of the mark
    fraction: float
    recalled: bool


def mark_recall_table(peaks_by_image: Sequence[np.ndarray] | np.ndarray, image_classes: Sequence[int],
                      class_marks: Mapping[int, Sequence[int]], keypoints: np.ndarray, bboxes: np.ndarray,
                      threshold: float = 0.1, min_fraction: float = 0.5) -> list[MarkRecall]:
    """Per (class, mark), in ``class_marks`` order: how often the class's parts land on the mark (toy birds).

    ``peaks_by_image[n]`` is a (K_n, 2) array of image n's part positions (K may vary between images). An image
    hits a mark when a finite part lies within ``threshold`` × box diagonal (distance ≤ radius) of the mark's
    visible keypoint. A mark is recalled when ``hits / images ≥ min_fraction``; with no image to judge it is not
    recalled and its fraction is NaN.
    """
    classes = np.asarray(image_classes).astype(np.int64).reshape(-1)
    n = classes.shape[0]
    if len(peaks_by_image) != n:
        raise ValueError(f"{len(peaks_by_image)} peak arrays for {n} images")
    kp = _keypoints(keypoints, n)
    bb = _bboxes(bboxes, n)
    vis = _visible(kp)
    radius = threshold * _diagonal(bb)
    table: list[MarkRecall] = []
    for cls, marks in class_marks.items():
        members = np.flatnonzero(classes == int(cls))
        for mark in marks:
            mark = int(mark)
            if not 0 <= mark < kp.shape[1]:
                raise ValueError(f"class {cls}: mark {mark} is not a keypoint index 0..{kp.shape[1] - 1}")
            seen = [i for i in members if vis[i, mark]]
            hits = 0
            for i in seen:
                pts = np.asarray(peaks_by_image[i], dtype=np.float64).reshape(-1, 2)
                d = np.linalg.norm(pts - kp[i, mark, :2], axis=1)
                with np.errstate(invalid="ignore"):
                    hits += bool((d <= radius[i]).any())
            frac = hits / len(seen) if seen else float("nan")
            name = CUB_PARTS[mark] if kp.shape[1] == len(CUB_PARTS) else f"keypoint {mark}"
            table.append(MarkRecall(int(cls), mark, name, len(seen), hits, float(frac),
                                    bool(seen) and frac >= min_fraction))
    return table


def mark_recall(peaks_by_image: Sequence[np.ndarray] | np.ndarray, image_classes: Sequence[int],
                class_marks: Mapping[int, Sequence[int]], keypoints: np.ndarray, bboxes: np.ndarray,
                threshold: float = 0.1, min_fraction: float = 0.5) -> float:
    """Fraction of (class, mark) pairs recalled (see :func:`mark_recall_table`), in [0, 1].

    Decision: pairs with no test image where the mark is visible cannot be judged and are left out of the
    fraction (warning). NaN (warning) when no pair can be judged.
    """
    table = mark_recall_table(peaks_by_image, image_classes, class_marks, keypoints, bboxes, threshold,
                              min_fraction)
    judged = [row for row in table if row.images > 0]
    if len(judged) < len(table):
        log.warning("mark recall: %d (class, mark) pairs have no image with the mark visible; left out",
                    len(table) - len(judged))
    if not judged:
        log.warning("mark recall: no (class, mark) pair can be judged; score is NaN")
        return float("nan")
    return sum(row.recalled for row in judged) / len(judged)


def random_peaks(bboxes: np.ndarray, k: int, rng: np.random.Generator | int | None) -> np.ndarray:
    """The random baseline: (N, k, 2) points drawn uniformly inside each image's bounding box.

    ``rng`` is a NumPy Generator (or a seed for one): the same seed gives the same points.
    """
    bb = np.asarray(bboxes, dtype=np.float64)
    if bb.ndim != 2 or bb.shape[1] != 4:
        raise ValueError(f"bboxes must be (N, 4) x0, y0, w, h; got shape {bb.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0; got {k}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    u = gen.random((bb.shape[0], int(k), 2))
    return bb[:, None, :2] + u * bb[:, None, 2:]


def regions_per_class(h: Sequence[float] | np.ndarray) -> float:
    """MC-Loss "distinct regions per class": the mean of the per-class counts ``h``. NaN when empty."""
    arr = np.asarray(h, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        log.warning("regions per class: no class given; score is NaN")
        return float("nan")
    return float(arr.mean())
