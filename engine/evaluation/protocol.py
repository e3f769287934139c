"""The published part-discovery evaluation protocol (docs/METHODS.md#published-protocol).

Huang et al., "Interpretable and Accurate Fine-grained Recognition via Region Grouping", CVPR 2020, and
PDiscoNet (van der Klis et al., ICCV 2023), whose evaluation code PDiscoFormer (ECCV 2024) reuses: keypoint
regression error from part centres, and NMI / ARI between the part label and the keypoint identity at each visible
keypoint. The scoring functions are NumPy + scikit-learn; torch only upsamples maps in :func:`labels_at_keypoints`.

Coordinate convention (one for the whole module): continuous pixel coordinates in which an image of W×H pixels
spans [0, W] × [0, H] and pixel i covers [i, i + 1) (its centre is i + 0.5). Resizing maps the frames linearly
without offset, x_input = x_original · W'/W, as the published code scales keypoints and boxes. Keypoints (CUB
``part_locs.txt``) and boxes (x0, y0, w, h) are read in this frame, in original pixels. Cell (i, j) of an h×w map
over a W'×H' input sits at its centre, x = (j + 0.5)·W'/w, y = (i + 0.5)·H'/h, the geometry of
``F.interpolate(..., align_corners=False)`` and the same point as ``engine.maps.parts`` (which shifts every coordinate
by −0.5 so that pixel centres are integers). The published code uses x = j·W'/w (PDiscoNet) or (j + 1)·16 (Huang).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.preprocessing import StandardScaler

from engine.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PROTOCOL_NAME = "huang2020/pdisconet"
ACTIVE_THRESHOLD = 0.5  # a part is active when its map maximum exceeds this (strictly)
SPLITS = ("train", "test")  # fit set, evaluation set


def _numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor, on any device
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _size(size: Any, name: str) -> tuple[int, int]:
    try:
        hh, ww = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be (height, width); got {size!r}") from None
    if hh <= 0 or ww <= 0 or (hh, ww) != tuple(size):
        raise ConfigError(f"{name} must be two positive integers (height, width); got {tuple(size)!r}")
    return hh, ww


def _box(box: Any) -> np.ndarray:
    b = _numpy(box).reshape(-1)
    if b.shape != (4,) or not np.isfinite(b).all() or b[2] <= 0 or b[3] <= 0:
        raise DataError(f"box must be finite (x0, y0, w, h) with w > 0 and h > 0; got {b.tolist()}")
    return b


def protocol_input_size(h: int, w: int, img_size: int) -> tuple[int, int]:
    """(H', W') of an h×w image whose shorter side is resized to ``img_size``, aspect kept, no crop.

    The longer side is ``round(long · img_size / short)`` (Python's round, half to even) and never below
    ``img_size``: exactly the size :func:`engine.data.transforms.resize_shorter` produces. (torchvision's
    ``Resize(int)``, used by the published code, truncates instead: at most one pixel shorter.)
    """
    if int(img_size) != img_size or img_size <= 0:
        raise ConfigError(f"img_size must be a positive integer; got {img_size!r}")
    h, w = _size((h, w), "image size")
    scale = img_size / min(h, w)
    if abs(scale - 1.0) < 1e-6:
        return h, w
    return max(int(img_size), round(h * scale)), max(int(img_size), round(w * scale))


def part_centres(maps: Any, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Attention-weighted centroids (P, 2) x, y in input pixels and map maxima (P,) of maps (P, h, w) ≥ 0.

    Cell (i, j) counts at its centre, x = (j + 0.5)·W'/w, y = (i + 0.5)·H'/h (module docstring). A map that is zero
    everywhere has no centroid: NaN (it is never active, since its maximum 0 ≤ 0.5). Active parts: maxima > 0.5.
    """
    m = _numpy(maps)
    if m.ndim != 3 or 0 in m.shape:
        raise DataError(f"maps must be a non-empty (P, h, w) array; got shape {m.shape}")
    if not np.isfinite(m).all() or m.min() < 0:
        raise DataError(f"maps must be finite and >= 0 (attention weights); got minimum {np.nanmin(m)!r}"
                        + ("" if np.isfinite(m).all() else " and non-finite values"))
    hh, ww = _size(input_size, "input_size")
    p, h, w = m.shape
    total = m.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        col = (m.sum(axis=1) * (np.arange(w) + 0.5)).sum(axis=1) / total  # in cells
        row = (m.sum(axis=2) * (np.arange(h) + 0.5)).sum(axis=1) / total
    centres = np.stack((col * ww / w, row * hh / h), axis=-1)
    centres[total <= 0] = np.nan
    return centres, m.reshape(p, -1).max(axis=1)


def input_to_original(points: Any, input_size: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """Points (..., 2) x, y from input pixels to original pixels: x · W/W', y · H/H'."""
    (hi, wi), (ho, wo) = _size(input_size, "input_size"), _size(image_size, "image_size")
    pts = _numpy(points)
    return pts * np.array([wo / wi, ho / hi])


def original_to_input(points: Any, image_size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """Points (..., 2) x, y from original pixels to input pixels: x · W'/W, y · H'/H."""
    return input_to_original(points, image_size, input_size)


def to_box_units(points: Any, box: Any) -> np.ndarray:
    """Points (..., 2) in original pixels → box units ((x − x0)/w, (y − y0)/h); ``box`` is (x0, y0, w, h)."""
    b = _box(box)
    return (_numpy(points) - b[:2]) / b[2:]


def centres_to_box_units(centres: Any, input_size: tuple[int, int], image_size: tuple[int, int],
                         box: Any) -> np.ndarray:
    """Centres (K, 2) in input pixels → original pixels → box units (the regression's features)."""
    return to_box_units(input_to_original(centres, input_size, image_size), box)


@dataclass(frozen=True)
class KeypointScore:
    """One keypoint of the regression: ``count`` visible evaluation instances scored, their mean L2 error × 100
    (NaN when ``count`` is 0), ``n_fit`` fit images used; ``fitted`` False when it was never visible in the fit set
    (then ``count`` instances went unscored)."""

    index: int
    count: int
    mean_error: float
    n_fit: int
    fitted: bool


@dataclass(frozen=True)
class RegressionError:
    """``error``: 100 × (sum of distances in box units) / ``n_keypoints`` (pooled; NaN when nothing was scored);
    ``unscored``: visible evaluation instances of keypoints never visible in the fit set (left out)."""

    error: float
    n_keypoints: int
    unscored: int
    per_keypoint: tuple[KeypointScore, ...]


def _standardised_centres(scaler: StandardScaler, centres: np.ndarray, active: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        z = scaler.transform(centres.reshape(len(centres), -1))
    keep = np.repeat(active, 2, axis=1) & np.isfinite(z)
    return np.where(keep, z, 0.0)


def keypoint_regression_error(fit_centres: Any, fit_active: Any, fit_kp: Any, fit_vis: Any,
                              eval_centres: Any, eval_active: Any, eval_kp: Any, eval_vis: Any) -> RegressionError:
    """Keypoint regression error (Huang et al., CVPR 2020; PDiscoNet, ICCV 2023), lower is better.

    Shapes: centres (N, K, 2) and keypoints (N, P, 2) in box units; ``active`` (N, K) and ``vis`` (N, P) bool.
    For each keypoint p separately: fit rows = fit images where p is visible, evaluation rows = evaluation images
    where p is visible; a ``StandardScaler`` on the 2K centre coordinates (layout x1, y1, x2, y2, ...) and one on
    p's 2 coordinates, both fitted on the fit rows (inactive parts' raw centres included, NaN centres ignored);
    standardised coordinates of inactive parts set to 0 in both sets (mean imputation);
    ``LinearRegression(fit_intercept=False)`` 2K → 2; predict, undo the keypoint scaling; L2 distance.

    Degenerate cases: a coordinate constant on the fit rows gets scale 1 (scikit-learn), so it standardises to 0;
    a coordinate with no finite fit value (a part whose map was zero on every fit row) standardises to 0; parts all
    inactive give all-zero features, so the prediction is the fit rows' mean keypoint; a keypoint never visible in
    the fit set cannot be fitted: its evaluation instances are left out of the error (``unscored``, warning).
    """
    fc, ec = _numpy(fit_centres), _numpy(eval_centres)
    fk, ek = _numpy(fit_kp), _numpy(eval_kp)
    fa, ea = np.asarray(fit_active, dtype=bool), np.asarray(eval_active, dtype=bool)
    fv, ev = np.asarray(fit_vis, dtype=bool), np.asarray(eval_vis, dtype=bool)
    for name, c, a, k, v in (("fit", fc, fa, fk, fv), ("eval", ec, ea, ek, ev)):
        if c.ndim != 3 or c.shape[2] != 2 or c.shape[1] == 0:
            raise DataError(f"{name}_centres must be (N, K, 2) with K >= 1; got shape {c.shape}")
        if a.shape != c.shape[:2]:
            raise DataError(f"{name}_active must be (N, K) = {c.shape[:2]}; got shape {a.shape}")
        if k.ndim != 3 or k.shape[2] != 2 or k.shape[0] != c.shape[0]:
            raise DataError(f"{name}_kp must be (N, P, 2) with N = {c.shape[0]}; got shape {k.shape}")
        if v.shape != k.shape[:2]:
            raise DataError(f"{name}_vis must be (N, P) = {k.shape[:2]}; got shape {v.shape}")
        if not np.isfinite(k[v]).all():
            raise DataError(f"{name}_kp: a visible keypoint has non-finite coordinates {k[v][~np.isfinite(k[v])]}")
        if not np.isfinite(c[a]).all():
            raise DataError(f"{name}_centres: an active part has a non-finite centre")
    if fc.shape[1] != ec.shape[1] or fk.shape[1] != ek.shape[1]:
        raise DataError(f"fit and eval sets differ: {fc.shape[1]} vs {ec.shape[1]} parts, "
                        f"{fk.shape[1]} vs {ek.shape[1]} keypoints")
    scores: list[KeypointScore] = []
    dists: list[np.ndarray] = []
    for p in range(fk.shape[1]):
        rows_f, rows_e = fv[:, p], ev[:, p]
        n_fit, n_eval = int(rows_f.sum()), int(rows_e.sum())
        if n_fit == 0:
            scores.append(KeypointScore(p, n_eval, math.nan, 0, False))
            continue
        if n_eval == 0:
            scores.append(KeypointScore(p, 0, math.nan, n_fit, True))
            continue
        x_fit = fc[rows_f].reshape(n_fit, -1)
        with np.errstate(invalid="ignore", divide="ignore"):  # an all-NaN column: its scaler is NaN, set to 0
            scale_c = StandardScaler().fit(np.where(np.isfinite(x_fit), x_fit, np.nan))
        scale_k = StandardScaler().fit(fk[rows_f, p])
        z_fit = _standardised_centres(scale_c, fc[rows_f], fa[rows_f])
        z_eval = _standardised_centres(scale_c, ec[rows_e], ea[rows_e])
        reg = LinearRegression(fit_intercept=False).fit(z_fit, scale_k.transform(fk[rows_f, p]))
        pred = scale_k.inverse_transform(reg.predict(z_eval))
        d = np.linalg.norm(pred - ek[rows_e, p], axis=1)
        dists.append(d)
        scores.append(KeypointScore(p, n_eval, float(d.mean() * 100.0), n_fit, True))
    unscored = sum(s.count for s in scores if not s.fitted)
    if unscored:
        log.warning("keypoint regression: keypoints %s are never visible in the fit set; their %d evaluation "
                    "instances are left out", [s.index for s in scores if not s.fitted and s.count], unscored)
    all_d = np.concatenate(dists) if dists else np.zeros(0)
    if all_d.size == 0:
        log.warning("keypoint regression: no visible evaluation keypoint could be scored; error is NaN")
        return RegressionError(math.nan, 0, unscored, tuple(scores))
    return RegressionError(float(100.0 * all_d.sum() / all_d.size), int(all_d.size), unscored, tuple(scores))


def labels_at_keypoints(maps: Any, input_size: tuple[int, int], keypoints_in_input_px: Any) -> np.ndarray:
    """Argmax map index at each keypoint (P,) int64: maps (M, h, w) (K+1 with background, or K) upsampled
    bilinearly to ``input_size`` (``F.interpolate``, ``align_corners=False``), read at the nearest pixel.

    The nearest pixel to x is column floor(x) (pixel j covers [j, j + 1)), clipped into the image; keypoints with
    a non-finite coordinate get -1. (The published code's ``grid_sample(mode="nearest")`` picks
    round-half-even(x − 0.5): the same pixel except at exact integers.)
    """
    import torch

    t = maps.detach() if isinstance(maps, torch.Tensor) else torch.as_tensor(np.asarray(maps))
    if t.ndim != 3 or 0 in t.shape:
        raise DataError(f"maps must be a non-empty (M, h, w) array; got shape {tuple(t.shape)}")
    return labels_at_keypoints_batch(t[None], input_size, _numpy(keypoints_in_input_px).reshape(1, -1, 2))[0]


def labels_at_keypoints_batch(maps: Any, input_size: tuple[int, int], keypoints_in_input_px: Any) -> np.ndarray:
    """:func:`labels_at_keypoints` of B images of one input size at once: maps (B, M, h, w), keypoints (B, P, 2);
    (B, P). The upsampling works on each map alone, so each image's labels are those it gets on its own."""
    import torch
    import torch.nn.functional as F

    hh, ww = _size(input_size, "input_size")
    t = maps.detach() if isinstance(maps, torch.Tensor) else torch.as_tensor(np.asarray(maps))
    kp = _numpy(keypoints_in_input_px)
    if t.ndim != 4 or 0 in t.shape or kp.ndim != 3 or kp.shape[0] != t.shape[0] or kp.shape[2] != 2:
        raise DataError(f"maps must be (B, M, h, w) and keypoints (B, P, 2) with the same B; got shapes "
                        f"{tuple(t.shape)} and {kp.shape}")
    up = F.interpolate(t.float(), size=(hh, ww), mode="bilinear", align_corners=False)
    label = up.argmax(dim=1).cpu().numpy()  # (B, H', W'); ties → the lowest index
    out = np.full(kp.shape[:2], -1, dtype=np.int64)
    ok = np.isfinite(kp).all(axis=2)
    b = np.nonzero(ok)[0]
    cols = np.clip(np.floor(kp[ok][:, 0]), 0, ww - 1).astype(np.int64)
    rows = np.clip(np.floor(kp[ok][:, 1]), 0, hh - 1).astype(np.int64)
    out[ok] = label[b, rows, cols]
    return out


def nmi_ari(labels_at_kp: Any, kp_ids: Any) -> tuple[float, float]:
    """(NMI, ARI) × 100 between pooled part labels and keypoint indices (1-D, one entry per visible keypoint):
    ``normalized_mutual_info_score(average_method="arithmetic")`` and ``adjusted_rand_score``. Higher is better.
    (NaN, NaN) with a warning when there is no entry."""
    pred, truth = np.asarray(labels_at_kp).reshape(-1), np.asarray(kp_ids).reshape(-1)
    if pred.shape != truth.shape:
        raise DataError(f"{pred.size} part labels for {truth.size} keypoint ids: one label per visible keypoint")
    if pred.size == 0:
        log.warning("NMI/ARI: no visible keypoint; scores are NaN")
        return math.nan, math.nan
    return (float(normalized_mutual_info_score(truth, pred, average_method="arithmetic") * 100.0),
            float(adjusted_rand_score(truth, pred) * 100.0))


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def random_centres(n_images: int, k: int, rng: np.random.Generator | int | None) -> tuple[np.ndarray, np.ndarray]:
    """Chance for the regression: (N, k, 2) points uniform in each image's box, already in box units (uniform in
    [0, 1)²: the same as uniform points in original pixels then box-normalised), and (N, k) all active."""
    if int(k) < 1 or int(n_images) < 0:
        raise ConfigError(f"random centres need k >= 1 parts and n_images >= 0; got k={k}, n_images={n_images}")
    return _rng(rng).random((int(n_images), int(k), 2)), np.ones((int(n_images), int(k)), dtype=bool)


def random_labels(n_keypoints: int, k: int, rng: np.random.Generator | int | None) -> np.ndarray:
    """Chance for NMI / ARI: each visible keypoint gets a label uniform among the K + 1 labels 0..K (K parts and
    the background), (n_keypoints,) int64."""
    if int(k) < 1 or int(n_keypoints) < 0:
        raise ConfigError(f"random labels need k >= 1 parts and n_keypoints >= 0; got k={k}, n={n_keypoints}")
    return _rng(rng).integers(0, int(k) + 1, size=int(n_keypoints))


class ProtocolAccumulator:
    """Collects one image at a time (the images of a split in the order given), then scores the protocol
    (:meth:`result`).

    Split "train" is the regression's fit set, "test" its evaluation set and the NMI / ARI set. The centres use the
    foreground maps only (the last map dropped when ``has_background``); NMI / ARI use all maps, so background is
    its own label. ``maps_description`` says what the maps are (recorded in ``result()["protocol"]["maps"]``).
    """

    def __init__(self, maps_description: str):
        self.maps_description = str(maps_description)
        self._data: dict[str, dict[str, list[np.ndarray]]] = {
            s: {"centres": [], "active": [], "kp": [], "vis": [], "labels": []} for s in SPLITS}
        self._shape: tuple[int, int, bool] | None = None  # (K foreground parts, P keypoints, has_background)

    def add(self, split: str, maps: Any, has_background: bool, image_size: tuple[int, int], box: Any,
            keypoints: Any, visibility: Any, input_size: tuple[int, int], labels: Any = None) -> None:
        """One image: ``maps`` (M, h, w) ≥ 0 on the model's grid for the input of ``input_size`` (H', W');
        ``image_size`` (H, W), ``box`` (x0, y0, w, h), ``keypoints`` (P, 2) in original pixels; ``visibility`` (P,)
        (visible when > 0.5); ``labels`` (P,): the test image's :func:`labels_at_keypoints` when already computed
        (a batch's, :func:`labels_at_keypoints_batch`), else computed here."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}; got {split!r}")
        m = _numpy(maps)
        if m.ndim != 3:
            raise DataError(f"maps must be (M, h, w); got shape {m.shape}")
        fg = m[:-1] if has_background else m
        kp = _numpy(keypoints)
        vis = _numpy(visibility).reshape(-1) > 0.5
        if kp.ndim != 2 or kp.shape[1] != 2 or vis.shape != (kp.shape[0],):
            raise DataError(f"keypoints must be (P, 2) with visibility (P,); got {kp.shape} and {vis.shape}")
        shape = (fg.shape[0], kp.shape[0], bool(has_background))
        if self._shape is None:
            self._shape = shape
        elif shape != self._shape:
            raise DataError(f"image gives (parts, keypoints, background) = {shape}, earlier images {self._shape}")
        centres, maxima = part_centres(fg, input_size)
        d = self._data[split]
        d["centres"].append(centres_to_box_units(centres, input_size, image_size, box))
        d["active"].append(maxima > ACTIVE_THRESHOLD)
        d["kp"].append(to_box_units(kp, box))
        d["vis"].append(vis & np.isfinite(kp).all(axis=1))
        if split == "test" and labels is None:
            labels = labels_at_keypoints(m, input_size, original_to_input(kp, image_size, input_size))
        if split == "test":
            lab = np.asarray(labels, dtype=np.int64).reshape(-1)
            if lab.shape != (kp.shape[0],):
                raise DataError(f"labels must be one per keypoint ({kp.shape[0]}); got shape {lab.shape}")
            d["labels"].append(lab)

    def _stacked(self, split: str, key: str) -> np.ndarray:
        k, p, _ = self._shape or (1, 0, False)
        empty = {"centres": (0, k, 2), "active": (0, k), "kp": (0, p, 2), "vis": (0, p), "labels": (0, p)}[key]
        items = self._data[split][key]
        return np.stack(items) if items else np.zeros(empty, dtype=bool if key in ("active", "vis") else float)

    def n_images(self, split: str) -> int:
        return len(self._data[split]["kp"])

    def _scores(self, fit_c: np.ndarray, fit_a: np.ndarray, ev_c: np.ndarray, ev_a: np.ndarray,
                labels: np.ndarray) -> dict[str, Any]:
        vis_e = self._stacked("test", "vis")
        if self.n_images("train") == 0 or self.n_images("test") == 0:
            log.warning("protocol: the regression needs train and test images (have %d and %d); error is NaN",
                        self.n_images("train"), self.n_images("test"))
            reg = RegressionError(math.nan, 0, 0, ())
        else:
            reg = keypoint_regression_error(fit_c, fit_a, self._stacked("train", "kp"), self._stacked("train", "vis"),
                                            ev_c, ev_a, self._stacked("test", "kp"), vis_e)
        ids = np.broadcast_to(np.arange(vis_e.shape[1]), vis_e.shape)[vis_e]
        nmi, ari = nmi_ari(labels[vis_e] if labels.ndim == 2 else labels, ids)
        return {"keypoint_error": reg.error, "nmi": nmi, "ari": ari, "n_keypoints": reg.n_keypoints,
                "unscored_keypoints": reg.unscored,
                "per_keypoint": [{"index": s.index, "count": s.count, "mean_error": s.mean_error, "n_fit": s.n_fit}
                                 for s in reg.per_keypoint]}

    def result(self) -> dict[str, Any]:
        """keypoint_error (% of the box, lower is better), nmi, ari (× 100), n_images {train, test}, n_keypoints
        (visible test instances scored), unscored_keypoints, per_keypoint, protocol (name, maps, background)."""
        out = self._scores(self._stacked("train", "centres"), self._stacked("train", "active"),
                           self._stacked("test", "centres"), self._stacked("test", "active"),
                           self._stacked("test", "labels").astype(np.int64))
        return {**out, "n_images": {s: self.n_images(s) for s in SPLITS}, "protocol": self._protocol()}

    def random_baseline(self, seed: int = 0) -> dict[str, Any]:
        """Chance on the same images and keypoints: :func:`random_centres` (fit set, then test set, all active)
        and :func:`random_labels` among K + 1 for the visible test keypoints, from one generator seeded ``seed``."""
        k = self._shape[0] if self._shape else 1
        rng = np.random.default_rng(seed)
        fit_c, fit_a = random_centres(self.n_images("train"), k, rng)
        ev_c, ev_a = random_centres(self.n_images("test"), k, rng)
        labels = random_labels(int(self._stacked("test", "vis").sum()), k, rng)
        out = self._scores(fit_c, fit_a, ev_c, ev_a, labels)
        return {**out, "n_images": {s: self.n_images(s) for s in SPLITS},
                "protocol": {**self._protocol(), "maps": f"random (seed {seed})"}}

    def _protocol(self) -> dict[str, Any]:
        return {"name": PROTOCOL_NAME, "maps": self.maps_description,
                "background": bool(self._shape[2]) if self._shape else None,
                "active_threshold": ACTIVE_THRESHOLD}
