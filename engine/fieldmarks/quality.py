"""How good a ``parts`` run's field marks are on one split of a CUB-layout folder: where its parts lie (on the bird
or background, :mod:`.onbird`) and whether the part it ranks first for a confused pair lies where the experts say
the species differ (:mod:`.agreement`), for every ranking of :data:`~.separation.RANKINGS`, with and without the
on-bird grouping. ``fieldmark evaluate`` prints it; ``tools/seeds.py`` tabulates it over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator

import numpy as np

from engine.data.records import DataReport
from engine.events import Message, Progress
from engine.fieldmarks.agreement import Agreement, field_mark_agreement, read_attributes
from engine.fieldmarks.onbird import PartPlace, compute_places, inside_boxes, part_places, split_by_place
from engine.fieldmarks.separation import (DEFAULT_RANKING, RANKINGS, PartScores, collect_part_scores, open_data,
                                          open_run, rank_parts)
from engine.runs import LoadedRun


def ordered_parts(scores: PartScores, a: int, b: int, ranking: str = DEFAULT_RANKING,
                  places: list[PartPlace] | None = None) -> list[int]:
    """The parts for species a against b as Compare and the guide list them: the parts on the bird ranked by
    ``ranking``, then the background / habitat parts ranked the same way (``places`` None: all ranked together)."""
    ranked = rank_parts(scores, a, b, crops=0, ranking=ranking)
    bird, background = split_by_place(ranked, places)
    return [s.part for s in bird + background]


@dataclass
class FieldMarkQuality:
    split: str
    places: list[PartPlace]  # on the training photos (what decides on-bird / background)
    split_places: list[PartPlace]  # the same figures on ``split``
    agreement: dict[str, Agreement] = field(default_factory=dict)  # "<ranking>" (grouped) / "<ranking>, all"
    peaks_on_bird_parts_in_box: float | None = None
    default: str = DEFAULT_RANKING

    @property
    def main(self) -> Agreement:
        return self.agreement[self.default]

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "ranking": self.default,
                "parts": [{**p.to_dict(), "on_split": q.to_dict()} for p, q in zip(self.places, self.split_places)],
                "peaks_of_bird_parts_in_box": self.peaks_on_bird_parts_in_box,
                "agreement": self.main.to_dict(),
                "by_ranking": {k: {key: v for key, v in a.to_dict().items() if key != "pairs"}
                               for k, a in self.agreement.items()}}


def field_mark_quality(run: str | Path | LoadedRun, data: str | Path | DataReport, split: str = "test",
                       device: str = "cpu", rankings: tuple[str, ...] = RANKINGS,
                       should_stop: Callable[[], bool] | None = None
                       ) -> Generator[Progress | Message, None, FieldMarkQuality]:
    """The on-bird shares (computed on the training photos, or read from the run folder) and the field-mark
    agreement on ``split`` for each ranking, grouped by place and not."""
    loaded = open_run(run, device)
    report = open_data(data)
    places = yield from compute_places(loaded, report, device, should_stop)
    scores = yield from collect_part_scores(loaded, report, split, device, should_stop=should_stop,
                                            keep_vectors="probe" in rankings)
    here = part_places(scores)
    attrs = read_attributes(report.root, list(scores.classes))
    out = FieldMarkQuality(split, places, here)
    for ranking in rankings:
        out.agreement[ranking] = field_mark_agreement(scores, attrs,
                                                      lambda a, b: ordered_parts(scores, a, b, ranking, places))
        out.agreement[f"{ranking}, all"] = field_mark_agreement(scores, attrs,
                                                                lambda a, b: ordered_parts(scores, a, b, ranking))
    if scores.bird_boxes is not None and np.isfinite(scores.bird_boxes).all():
        bird = np.array([p.on_bird for p in places])
        mask = scores.present & bird[None, :]
        if mask.any():
            out.peaks_on_bird_parts_in_box = float(inside_boxes(scores.peaks, scores.bird_boxes)[mask].mean())
    return out


def format_quality(q: FieldMarkQuality, label: Callable[[int], str] | None = None) -> str:
    """The block `fieldmark evaluate` prints."""
    label = label or (lambda k: f"part {k + 1}")
    pct = (lambda v: "   -  " if v is None else f"{100 * v:5.1f} %")
    lines = [f"parts on the bird (peak on the bird in >= 50 % of the active training photos; {q.split} split beside):"]
    for p, h in zip(q.places, q.split_places):
        kind = "on the bird" if p.on_bird else "background / habitat"
        lines.append(f"  {label(p.part):<14} train: peak {pct(p.share)}  centroid {pct(p.centroid_share)}  "
                     f"({p.active} active)   {q.split}: peak {pct(h.share)}  centroid {pct(h.centroid_share)}   "
                     f"{kind}")
    lines.append(f"peaks of the parts on the bird inside the box ({q.split}): {pct(q.peaks_on_bird_parts_in_box)}")
    main = q.main
    if not main.pairs:
        lines.append(f"field-mark agreement: none ({main.note})")
        return "\n".join(lines)
    f = main.figures()
    lines.append(f"field-mark agreement ({q.split}, {main.n} confused pairs, ranking {q.default}, parts on the bird "
                 f"first): {pct(f['agreement'])}, mean D/Dmax {f['d_ratio']:.2f}; random part "
                 f"{pct(f['random_agreement'])} ({f['random_d_ratio']:.2f}), last-ranked part "
                 f"{pct(f['last_agreement'])} ({f['last_d_ratio']:.2f})")
    for p in main.pairs:
        top = p.ranked[0]
        lines.append(f"  {main.classes[p.a]} / {main.classes[p.b]} ({p.errors} errors): experts "
                     f"{', '.join(p.experts)}; first {label(top)} on {p.regions[top] or 'no region'}"
                     f" -> {'agrees' if p.agrees(top) else 'no'}")
    lines.append("by ranking (agreement, D/Dmax): " + "; ".join(
        f"{k} {pct(a.figures()['agreement'])} {a.figures()['d_ratio']:.2f}" for k, a in q.agreement.items()
        if a.pairs))
    return "\n".join(lines)


__all__ = ["ordered_parts", "FieldMarkQuality", "field_mark_quality", "format_quality"]
