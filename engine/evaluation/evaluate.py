"""Evaluate a run's discovered parts on a CUB-layout data set with part keypoints (docs/METHODS.md#part-evaluation).

On the test split: ``top1`` (the run's own test transform: shorter side, centre crop); ``part_hit_rate`` (a part
is the peak of one of the ξ channel maps of the image's true class, Chang et al., IEEE TIP 2020, mapped back to
original pixels; a hit lies within 10 % of the box diagonal of a visible keypoint); ``keypoint_error`` (Huang et
al., CVPR 2020: regression from the part centroids, fitted on the training split) with the ξ channels of the true
class in group order, and ``keypoint_error_all`` with all c·ξ channels; ``nmi`` / ``ari`` (the argmax part label
over the true class's ξ channels at each visible keypoint); ``regions_per_class`` (mean h_i of MC-Loss over the
test images and all classes, as the training log's "regions"); ``mark_recall`` for toy birds. Baselines in the
same run: ``random`` (ξ points uniform in the box, seeded) and, with a CE ``baseline`` run, ``gradcam`` (its
Grad-CAM peak for the true class, Selvaraju et al., ICCV 2017: one part per image).

Speed: maps are read at the model's own resolution (no upsampling); a cell's position is its centre in original
pixels, x = (c + 0.5)·W/w − 0.5, and keypoints are sampled at their nearest cell. Maps see the whole image
resized to img_size (the explanation convention of :mod:`engine.maps.explain`). The relative peak value of a part
(used by the regression's 0.5 threshold) is its peak over the image's strongest gathered part.

A TASN run has no class channels: its parts are the peak of its structure attention map (one per image). An
RA-CNN run's parts are its two squares (scales 2 and 3; the ``racnn`` maps, peaked at the squares' centres), and
its test top-1 is also given per scale (``info["top1_per_scale"]``: scales 1, 2, 3 and the fused prediction), with
the mean and spread of its squares over the test photos (``info["squares"]``, :func:`square_summary`).

``maps`` (``fieldmark evaluate --maps``) scores other maps of the run as its parts, in both passes: ``gradcam`` its
Grad-CAM of the true class (one part), ``attention`` its attention blocks' spatial maps (one part per block; see
:mod:`engine.evaluation.published`). ``box_share_above_half`` (every map read, baselines too): the mean over the test
images of :func:`engine.evaluation.metrics.box_share_above_half` of the parts' per-cell maximum.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Generator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from engine.data.scan import DataReport, Sample
from engine.data.transforms import Preprocessing, normalize, test_transform
from engine.errors import Cancelled, CheckpointError, DataError, DecodeError
from engine.events import Message, Progress, drive
from engine.evaluation.scores import PartSet, Truth, mark_columns, mark_table, part_scores, random_partset
from engine.maps.explain import low_res_maps, model_device, prepare, session
from engine.data.imageio import ImageInfo, load_image
from engine.losses.mcloss import mc_loss_terms
from engine.evaluation.published import PublishedPass, check_maps, describe_maps, other_maps, shape_order
from engine.models.shared_parts import has_shared_parts
from engine.evaluation.metrics import box_share_above_half, labels_at_keypoints, regions_per_class
from engine.maps.parts import map_peaks
from engine.runs import LoadedRun, use_run_split

log = logging.getLogger(__name__)

KEYS = ("top1", "part_hit_rate", "peaks_in_box", "peaks_on_border", "box_share_above_half", "keypoint_error",
        "keypoint_error_all", "nmi", "ari", "regions_per_class", "mark_recall", "baselines", "protocol")


@dataclass
class EvalResult:
    """The figures (see the module docstring); ``to_dict()`` has exactly :data:`KEYS`, NaN as None."""

    top1: float | None
    part_hit_rate: float | None
    peaks_in_box: float | None
    peaks_on_border: float | None
    box_share_above_half: float | None
    keypoint_error: float | None
    keypoint_error_all: float | None
    nmi: float | None
    ari: float | None
    regions_per_class: float | None
    mark_recall: float | None
    baselines: dict[str, dict[str, float | None] | None]
    protocol: dict[str, Any] | None = None  # the published protocol: {"own", "random", "gradcam"} (published.py)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite(getattr(self, k)) for k in KEYS}

    def saved(self) -> dict[str, Any]:
        """What a run's ``evaluation.json`` holds: :meth:`to_dict`, plus ``marks`` (the per-class, per-mark table
        behind ``mark_recall``) for toy birds."""
        out = self.to_dict()
        if self.info.get("marks"):
            out["marks"] = self.info["marks"]
        for key in ("top1_per_scale", "squares"):  # an RA-CNN run
            if self.info.get(key):
                out[key] = self.info[key]
        return out


def _finite(value: Any) -> Any:
    """NaN → None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class _Decoded(Dataset):
    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        try:
            return i, load_image(self.samples[i].path)
        except DecodeError as exc:
            log.warning("%s: %s; left out of the evaluation", exc.path, exc.reason)
            return i, None


def _as_list(items: list) -> list:
    return items


def _true_class_maps(model, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, h, w) channel maps of each image's true class (groups padded to the largest ξ) and (B, K) validity."""
    k = max(model.groups)
    idx = torch.zeros(len(labels), k, dtype=torch.long)
    valid = torch.zeros(len(labels), k, dtype=torch.bool)
    for b, y in enumerate(labels.tolist()):
        ch = list(model.class_channels(y))
        idx[b, :len(ch)] = torch.tensor(ch)
        valid[b, :len(ch)] = True
    b = torch.arange(len(labels))[:, None]
    return features[b, idx.to(features.device)], valid


def _partset(maps: np.ndarray, valid: np.ndarray, sizes: np.ndarray, kps: np.ndarray,
             all_maps: np.ndarray | None, boxes: np.ndarray) -> PartSet:
    """Peaks / centroids of low-resolution maps (B, K, h, w) in original pixels, the labels at keypoints and the
    box share above half maximum of the valid parts' per-cell maximum."""
    h, w = maps.shape[-2:]
    pk = map_peaks(maps)
    sx = (sizes[:, 1] / w)[:, None]
    sy = (sizes[:, 0] / h)[:, None]

    def to_px(xy: np.ndarray) -> np.ndarray:
        return np.stack(((xy[..., 0] + 0.5) * sx - 0.5, (xy[..., 1] + 0.5) * sy - 0.5), axis=-1)

    peaks = np.where(valid[..., None], to_px(pk.argmax), np.nan)
    cents = np.where(valid[..., None], to_px(pk.centroid), np.nan)
    vals = np.where(valid, pk.value, -np.inf)
    top = vals.max(axis=1, keepdims=True)
    rel = np.where(valid, np.where(top > 0, vals / np.where(top > 0, top, 1.0), 0.0), 0.0)
    masked = np.where(valid[:, :, None, None], maps, -np.inf)
    label_maps = masked.argmax(axis=1)  # (B, h, w)
    kp_cells = kps.copy()
    kp_cells[..., 0] = (kps[..., 0] + 0.5) / sx - 0.5
    kp_cells[..., 1] = (kps[..., 1] + 0.5) / sy - 0.5
    kp_labels = labels_at_keypoints(label_maps, kp_cells)
    if all_maps is None:
        all_c, all_v = cents, rel
    else:
        pa = map_peaks(all_maps)
        all_c = to_px(pa.centroid)
        top_all = pa.value.max(axis=1, keepdims=True)
        all_v = np.where(top_all > 0, pa.value / np.where(top_all > 0, top_all, 1.0), 0.0)
    row, col = pk.cell[..., 0], pk.cell[..., 1]
    on_border = (row == 0) | (row == h - 1) | (col == 0) | (col == w - 1)
    return PartSet(peaks, cents, rel, kp_labels, all_c, all_v, on_border,
                   box_share_above_half(masked.max(axis=1), boxes, sizes))


def _concat(sets: list[PartSet]) -> PartSet:
    if not sets:
        z = np.zeros((0, 1, 2))
        return PartSet(z, z, np.zeros((0, 1)), np.zeros((0, 15), np.int64), z, np.zeros((0, 1)))
    border = None if any(s.on_border is None for s in sets) else np.concatenate([s.on_border for s in sets])
    share = None if any(s.box_share is None for s in sets) else np.concatenate([s.box_share for s in sets])
    return PartSet(*(np.concatenate([getattr(s, f) for s in sets]) for f in
                     ("peaks", "centroids", "values", "kp_labels", "all_centroids", "all_values")), border, share)


def _stack(arrays: list[np.ndarray], empty: tuple[int, ...]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(empty)


def evaluate(run: LoadedRun, report: DataReport, baseline: LoadedRun | None = None, split: str = "test",
             batch_size: int = 32, seed: int = 0, workers: int = 0,
             should_stop: Callable[[], bool] | None = None, maps: str = "own",
             protocol_batch: int | None = None) -> Generator[Progress | Message, None, EvalResult]:
    """The evaluation as a generator of Progress events returning an :class:`EvalResult`. ``report`` is first laid
    under the run's saved split (:func:`engine.runs.use_run_split`): its lines come as Message events. ``maps``:
    which maps of the run are its parts (``own``, ``gradcam``, ``attention``; the module docstring).

    Each split is read sorted by the photos' resized shape so that the published protocol scores photos of one
    shape together, ``protocol_batch`` at most (None: ``batch_size``); every figure is computed in the split's own
    order. ``protocol_batch=1`` reads the split in its own order and feeds the protocol one photo at a time (the
    reference the batched pass is checked and timed against)."""
    t0 = time.perf_counter()
    if not report.has_parts:
        raise DataError(f"{report.root!r} has no part keypoints (layout {report.layout}): evaluation needs a "
                        "CUB-layout folder with parts/part_locs.txt (CUB-200-2011 or `fieldmark toybirds`)")
    check_maps(run, maps)
    report = yield from use_run_split(run.run_dir, report, run.meta.get("config"))  # the run's own split
    for r, what in ((run, "run"), (baseline, "baseline run")):
        if r is not None and r.classes != list(report.classes):
            raise CheckpointError(f"the {what} {str(r.run_dir)!r} has {len(r.classes)} classes, the data "
                                  f"{len(report.classes)} (or other names): pick runs trained on this data")
    stop = should_stop or (lambda: False)
    n_parts = len(report.part_names)
    gathered: dict[str, dict[str, Any]] = {}
    pbatch = batch_size if protocol_batch is None else protocol_batch
    published = PublishedPass(run, baseline, maps, pbatch) if split != "train" else None
    for part in ("train", split) if split != "train" else (split,):
        samples = [s for s in report.split(part) if s.label >= 0]
        order = shape_order(samples, Preprocessing.from_dict(run.preprocessing).img_size) \
            if published is not None and pbatch > 1 else list(range(len(samples)))
        acc: dict[str, Any] = {"own": [], "base": [], "kp": [], "bb": [], "y": [], "h": [], "idx": [], "correct": 0,
                               "n": 0}
        loader = DataLoader(_Decoded([samples[i] for i in order]), batch_size=batch_size, num_workers=workers,
                            collate_fn=_as_list)
        done = 0
        for batch in loader:
            if stop():
                raise Cancelled(f"evaluation stopped ({part} split, {done} of {len(samples)} images)")
            kept = [(order[i], dec) for i, dec in batch if dec is not None]
            items = [(samples[j], *dec) for j, dec in kept]
            _gather(run, baseline, items, n_parts, part == split, acc, maps)
            if items:
                acc["idx"].append(np.array([j for j, _ in kept]))
            if published is not None:
                for (j, _), (sample, img, info) in zip(kept, items):
                    published.add("test" if part == split else "train", sample, img, info, j)
            done += len(batch)
            yield Progress(f"evaluate {part}", done, len(samples))
        gathered[part] = _in_order(acc)
    return _result(run, baseline, report, gathered[split], gathered.get("train", gathered[split]), published, seed,
                   maps, t0, split)


def _in_order(acc: dict[str, Any]) -> dict[str, Any]:
    """``acc`` with its per-image arrays in the split's own order (the pass may have read it sorted by shape)."""
    idx = np.concatenate(acc.pop("idx")) if acc["idx"] else np.zeros(0, np.int64)
    if len(idx) < 2 or (np.diff(idx) > 0).all():
        return acc
    inv = np.argsort(idx, kind="stable")
    for key in ("own", "base"):
        if acc[key]:
            s = _concat(acc[key])
            acc[key] = [PartSet(*(None if getattr(s, f.name) is None else getattr(s, f.name)[inv]
                                  for f in fields(PartSet)))]
    for key in ("kp", "bb", "y", "h"):
        if acc[key]:
            acc[key] = [np.concatenate(acc[key])[inv]]
    return acc


def _source(model, maps: str) -> str:
    """What was scored as the run's parts (``info["source"]``)."""
    if maps != "own":
        return describe_maps(model, maps)[0]
    return ("shared parts" if has_shared_parts(model) else "racnn squares" if hasattr(model, "zoom_squares")
            else "tasn structure map" if not getattr(model, "groups", None) else "channels of the true class")


def _result(run: LoadedRun, baseline: LoadedRun | None, report: DataReport, test: dict[str, Any],
            train: dict[str, Any], published: PublishedPass | None, seed: int, maps: str, t0: float,
            split: str = "test") -> EvalResult:
    """The figures from the gathered test and training split (``split``: the one scored, named in ``info``)."""
    n_parts = len(report.part_names)
    truth = {k: Truth(_stack(v["kp"], (0, n_parts, 3)), _stack(v["bb"], (0, 4)), _stack(v["y"], (0,)).astype(int))
             for k, v in (("train", train), ("test", test))}
    marks = mark_columns(report.root, report.classes, report.part_names)
    own = part_scores(_concat(train["own"]), _concat(test["own"]), truth["train"], truth["test"], marks)
    k = test["own"][0].peaks.shape[1] if test["own"] else 1
    k_all = test["own"][0].all_centroids.shape[1] if test["own"] else 1
    rng = np.random.default_rng(seed)
    rnd_test = random_partset(truth["test"], k, k_all, rng)
    rnd_train = random_partset(truth["train"], k, k_all, rng)
    baselines: dict[str, Any] = {"random": part_scores(rnd_train, rnd_test, truth["train"], truth["test"], marks),
                                 "gradcam": None}
    if baseline is not None:
        baselines["gradcam"] = part_scores(_concat(train["base"]), _concat(test["base"]), truth["train"],
                                           truth["test"], marks)
    h = np.concatenate(test["h"]).reshape(-1) if test["h"] else np.zeros(0)
    info = {"split": split, "n_test": len(truth["test"].boxes), "n_train": len(truth["train"].boxes), "parts": k,
            "parts_all": k_all,
            "maps": maps, "source": _source(run.model, maps), "run": str(run.run_dir),
            "baseline": str(baseline.run_dir) if baseline else None, "seconds": time.perf_counter() - t0}
    if test.get("scale_correct") and test["n"]:
        info["top1_per_scale"] = dict(zip(("scale 1", "scale 2", "scale 3", "fused"),
                                          (c / test["n"] for c in test["scale_correct"])))
    if test.get("squares"):
        info["squares"] = square_summary(np.concatenate(test["squares"]))
    if marks is not None:
        info["marks"] = mark_table(_concat(test["own"]), truth["test"], marks, report.classes)
    return EvalResult(top1=test["correct"] / test["n"] if test["n"] else None,
                      regions_per_class=regions_per_class(h) if h.size else None, baselines=baselines, info=info,
                      protocol=published.result(seed) if published is not None else None,
                      **{key: own[key] for key in ("part_hit_rate", "peaks_in_box", "peaks_on_border",
                                                   "box_share_above_half", "keypoint_error", "keypoint_error_all",
                                                   "nmi", "ari", "mark_recall")})


def _own_parts(model, x: torch.Tensor, labels: torch.Tensor, maps: str, sizes: np.ndarray, kps: np.ndarray,
               boxes: np.ndarray, acc: dict[str, Any], is_test: bool) -> None:
    """The run's parts of a prepared batch ``x`` into ``acc["own"]`` (and MC-Loss's h into ``acc["h"]``)."""
    if maps != "own":  # Grad-CAM or the attention blocks' maps, read as parts
        m = other_maps(model, x, labels, maps).cpu().numpy()
        acc["own"].append(_partset(m, np.ones(m.shape[:2], bool), sizes, kps, None, boxes))
    elif has_shared_parts(model):  # shared parts: the K foreground maps, the same parts for every class
        with session(model):
            m = model.forward_features(x)[:, :model.parts].float().cpu().numpy()
        acc["own"].append(_partset(m, np.ones(m.shape[:2], bool), sizes, kps, None, boxes))
    elif getattr(model, "groups", None):
        with session(model):
            features = model.forward_features(x).float()
        m, valid = _true_class_maps(model, features, labels)
        acc["own"].append(_partset(m.cpu().numpy(), valid.numpy(), sizes, kps, features.cpu().numpy(), boxes))
        if is_test:
            acc["h"].append(mc_loss_terms(features, labels.to(x.device), model.groups).h.cpu().numpy())  # (B, c)
    else:  # TASN: the structure attention map, one part per image; RA-CNN: its two squares
        racnn = hasattr(model, "zoom_squares")
        m = torch.stack([r if racnn else r[:1] for r in low_res_maps(model, x, "racnn" if racnn else "tasn", labels)])
        acc["own"].append(_partset(m.cpu().numpy(), np.ones(m.shape[:2], bool), sizes, kps, None, boxes))


@torch.no_grad()
def _gather(run: LoadedRun, baseline: LoadedRun | None, items: list[tuple[Sample, np.ndarray, ImageInfo]],
            n_parts: int, is_test: bool, acc: dict[str, Any], maps: str = "own") -> None:
    """Scores are computed on the decoded images: the data set's keypoints and boxes (on the file's stored grid)
    are mapped onto them through each image's orientation and decode scale."""
    if not items:
        return
    model = run.model
    pp = Preprocessing.from_dict(run.preprocessing)
    dev = model_device(model)
    imgs = [img for _, img, _ in items]
    sizes = np.array([img.shape[:2] for img in imgs], np.float64)
    labels = torch.tensor([s.label for s, _, _ in items])
    kps = np.stack([info.keypoints_to_image(s.keypoints()) if s.parts is not None else np.zeros((n_parts, 3))
                    for s, _, info in items])
    boxes = np.array([info.xywh_to_image(s.bbox) if s.bbox is not None else (0.0, 0.0, img.shape[1], img.shape[0])
                      for s, img, info in items], np.float64)
    _own_parts(model, prepare(imgs, pp, dev), labels, maps, sizes, kps, boxes, acc, is_test)
    if baseline is not None:
        bx = prepare(imgs, Preprocessing.from_dict(baseline.preprocessing), model_device(baseline.model))
        cams = torch.stack(low_res_maps(baseline.model, bx, "gradcam", labels))
        acc["base"].append(_partset(cams.float().cpu().numpy(), np.ones((len(items), 1), bool), sizes, kps, None,
                                    boxes))
    if is_test:
        xc = normalize(torch.from_numpy(np.stack([test_transform(img, pp) for img in imgs])).to(dev), pp)
        with session(model):
            scales, squares = model.scales_and_squares(xc) if hasattr(model, "scales_and_squares") else (None, None)
            if squares is not None:
                acc.setdefault("squares", []).append(squares.cpu().numpy())
            pred = (scales[-1] if scales is not None else model(xc)).argmax(1).cpu()
        if scales is not None:  # RA-CNN: each scale's own top-1 as well (scales 1, 2, 3, fused)
            hits = [int((lg.argmax(1).cpu() == labels).sum()) for lg in scales]
            acc["scale_correct"] = [a + b for a, b in zip(acc.get("scale_correct", [0] * len(hits)), hits)]
        acc["correct"] += int((pred == labels).sum())
        acc["n"] += len(items)
    acc["kp"].append(kps)
    acc["bb"].append(boxes)
    acc["y"].append(labels.numpy())


def square_summary(squares: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """Mean and standard deviation over the photos of the squares (N, 2, 3) of scales 2 and 3, on the photo as
    fractions of its side: {"scale 2": {"centre_x": [mean, sd], "centre_y": [...], "half_side": [...]}, ...}. An
    sd near 0 says the APN cuts the same square from every photo."""
    return {f"scale {s + 2}": {name: [float(squares[:, s, j].mean()), float(squares[:, s, j].std())]
                               for j, name in enumerate(("centre_x", "centre_y", "half_side"))}
            for s in range(squares.shape[1])}


def evaluate_run(run: LoadedRun, report: DataReport, baseline: LoadedRun | None = None,
                 should_stop: Callable[[], bool] | None = None, **kwargs: Any) -> EvalResult:
    """:func:`evaluate` driven to its end (for the demo and the GUI's worker)."""
    return drive(evaluate(run, report, baseline, should_stop=should_stop, **kwargs))


__all__ = ["KEYS", "EvalResult", "evaluate", "evaluate_run"]
