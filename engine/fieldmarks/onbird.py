"""Parts on the bird, and habitat apart: each shared part's *on-bird share* (docs/METHODS.md#on-bird).

Over the training photos where part k is active (map maximum > 0.5, the §4 rule), its on-bird share is the share
whose peak lies on the bird: inside the data set's bird box when the folder has boxes, else on the run's own
foreground (one minus the background map, above half its maximum). A part with share ≥ :data:`ON_BIRD_MIN` is a
part *on the bird*; the others are *background / habitat* parts: Compare and the guide rank the parts on the bird
and list the others below, and the naming helper proposes no body-part name for them. The centroid's share (the
attention-weighted centre inside the box) is kept beside it.

The shares are computed once per run on its training split and saved in the run folder (``part_places.json``,
:func:`engine.runs.write_part_places`), stamped with the weights they were computed from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator

import numpy as np

from engine.data.records import DataReport
from engine.events import Message, Progress
from engine.runs import LoadedRun, read_part_places, write_part_places

#: A part is on the bird when at least this share of its active training photos has its peak on the bird.
ON_BIRD_MIN = 0.5


@dataclass(frozen=True)
class PartPlace:
    """Where part ``part`` (0-based) lies over a set of photos: ``share`` of its active photos with the peak on the
    bird, ``centroid_share`` with the centroid in the box (None without boxes), ``active`` how many photos it is
    active on, ``source`` "box" or "foreground"."""

    part: int
    share: float | None
    centroid_share: float | None
    active: int
    source: str

    @property
    def on_bird(self) -> bool:
        """Whether the part counts as on the bird (a part never active counts as not: nothing says it is)."""
        return self.share is not None and self.share >= ON_BIRD_MIN

    def to_dict(self) -> dict:
        return {"part": self.part + 1, "share": self.share, "centroid_share": self.centroid_share,
                "active": self.active, "source": self.source, "on_bird": self.on_bird}


def inside_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, K) whether points (N, K, 2) x, y lie inside boxes (N, 4) x0, y0, x1, y1."""
    x, y = points[..., 0], points[..., 1]
    b = boxes[:, None, :]
    return (x >= b[..., 0]) & (x <= b[..., 2]) & (y >= b[..., 1]) & (y <= b[..., 3])


def part_places(scores) -> list[PartPlace]:
    """Each part's :class:`PartPlace` over the photos of ``scores`` (a :class:`~engine.fieldmarks.separation.
    PartScores` with peaks): the bird box where every photo has one, else the run's foreground."""
    present = np.asarray(scores.present, bool)
    boxes = scores.bird_boxes
    use_box = boxes is not None and len(boxes) > 0 and np.isfinite(boxes).all()
    if use_box:
        on, cen = inside_boxes(scores.peaks, boxes), inside_boxes(scores.centres, boxes)
    else:
        on, cen = np.asarray(scores.peak_on_foreground, bool), None
    out = []
    for k in range(scores.parts):
        act = present[:, k]
        n = int(act.sum())
        out.append(PartPlace(k, float(on[act, k].mean()) if n else None,
                             float(cen[act, k].mean()) if n and cen is not None else None, n,
                             "box" if use_box else "foreground"))
    return out


def places_doc(places: list[PartPlace], split: str, n_images: int, root: str) -> dict:
    return {"split": split, "images": n_images, "data": root, "on_bird_min": ON_BIRD_MIN,
            "parts": [p.to_dict() for p in places]}


def places_from_doc(doc: dict) -> list[PartPlace]:
    return [PartPlace(int(p["part"]) - 1, p.get("share"), p.get("centroid_share"), int(p.get("active", 0)),
                      str(p.get("source", "box"))) for p in doc["parts"]]


def saved_places(run: str | Path | LoadedRun) -> list[PartPlace] | None:
    """The run's saved on-bird shares (None: not computed for these weights yet)."""
    doc = read_part_places(run.run_dir if isinstance(run, LoadedRun) else run)
    return places_from_doc(doc) if doc is not None else None


def compute_places(run: str | Path | LoadedRun, data: str | Path | DataReport, device: str = "cpu",
                   should_stop: Callable[[], bool] | None = None, save: bool = True
                   ) -> Generator[Progress | Message, None, list[PartPlace]]:
    """The run's on-bird shares over its training photos (Progress("part scores", ...) per batch), saved in the run
    folder (``save``). A run with saved shares for its current weights returns them without a pass."""
    from engine.fieldmarks.separation import collect_part_scores, open_data, open_run

    loaded = open_run(run, device)
    saved = saved_places(loaded)
    if saved is not None:
        return saved
    report = open_data(data)
    scores = yield from collect_part_scores(loaded, report, "train", device, should_stop=should_stop)
    return places_from_training(loaded, scores, str(report.root), save)


def places_from_training(run: LoadedRun, scores, root: str, save: bool = True) -> list[PartPlace]:
    """The on-bird shares of ``scores`` collected on the run's training photos, saved in the run folder
    (``save``): for a caller that already made the training pass (the naming helper)."""
    places = part_places(scores)
    if save:
        write_part_places(run.run_dir, places_doc(places, "train", len(scores.labels), root))
    return places


def split_by_place(ranked: list, places: list[PartPlace] | None) -> tuple[list, list]:
    """``ranked`` (items with a ``part``) as (parts on the bird, background / habitat parts), each in the given
    order. Without places every part counts as on the bird."""
    if places is None:
        return list(ranked), []
    on = {p.part for p in places if p.on_bird}
    return [r for r in ranked if r.part in on], [r for r in ranked if r.part not in on]


def describe_places(places: list[PartPlace], label: Callable[[int], str] | None = None) -> list[str]:
    """One line per part: its on-bird share, where it is active, and whether it counts as on the bird."""
    label = label or (lambda k: f"part {k + 1}")
    lines = []
    for p in places:
        share = "never active" if p.share is None else f"peak on the bird {100 * p.share:5.1f} %"
        cen = "" if p.centroid_share is None else f", centroid in the box {100 * p.centroid_share:5.1f} %"
        where = "on the bird" if p.on_bird else "background / habitat"
        lines.append(f"{label(p.part):<14} {share}{cen} of {p.active} active photos ({p.source}): {where}")
    return lines


__all__ = ["ON_BIRD_MIN", "PartPlace", "inside_boxes", "part_places", "places_doc", "places_from_doc", "saved_places",
           "compute_places", "places_from_training", "split_by_place", "describe_places"]
