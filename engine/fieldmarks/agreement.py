"""Field-mark agreement (shared/ALGORITHMS.md §6, docs/METHODS.md#agreement): does the part a run ranks first for a
pair of species it confuses lie on a body region where the experts' attributes say the two species differ?

CUB ships, for every species, the share of its photos on which annotators ticked each of 312 attributes
(``attributes/attributes.txt``: ``id has_<group>::<value>``; ``attributes/class_attribute_labels_continuous.txt``:
one row of 312 percentages per class, in class-id order). From them:

* the difference of species A and B in an attribute group g: each species' percentages within g normalised to sum
  1 (a group that sums to 0 for either is skipped), then the total-variation distance ½ Σ_v |p_A(v) − p_B(v)|;
* in a region r (:data:`REGION_GROUPS`): D_r = the largest over its groups that were not skipped;
* the pair's expert regions: the 3 regions with the largest D_r (ties in :data:`REGIONS` order) and every other
  region within 0.1 of the largest;
* a part's region for a pair: over the photos of A and B where the part is active, the visible keypoint nearest its
  centroid votes for its region (left and right merged); the most votes win (ties in :data:`REGIONS` order); no
  active photo, no region;
* agreement: over the run's confused pairs (errors both ways, at most :data:`MAX_PAIRS` with at least
  :data:`MIN_ERRORS`), the share whose top-ranked part's region is an expert region; beside it the mean of
  D_{region of the top part} / max_r D_r (a part without a region counts 0), and the same for a random part (the
  mean over all K parts) and for the last-ranked part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine.errors import DataError

REGIONS = ("beak", "crown", "forehead", "nape", "eye", "throat", "breast", "belly", "back", "wing", "tail", "leg")
REGION_GROUPS = {
    "beak": ("bill_shape", "bill_color", "bill_length"),
    "crown": ("crown_color", "head_pattern"),
    "forehead": ("forehead_color", "head_pattern"),
    "nape": ("nape_color",),
    "eye": ("eye_color", "head_pattern"),
    "throat": ("throat_color",),
    "breast": ("breast_color", "breast_pattern", "underparts_color"),
    "belly": ("belly_color", "belly_pattern", "underparts_color"),
    "back": ("back_color", "back_pattern", "upperparts_color"),
    "wing": ("wing_color", "wing_pattern", "wing_shape"),
    "tail": ("upper_tail_color", "under_tail_color", "tail_pattern", "tail_shape"),
    "leg": ("leg_color",),
}
EXPERT_TOP, EXPERT_WITHIN = 3, 0.1
MAX_PAIRS, MIN_ERRORS = 10, 2
ATTRIBUTES_DIR, ATTRIBUTE_NAMES, ATTRIBUTE_TABLE = "attributes", "attributes.txt", \
    "class_attribute_labels_continuous.txt"


def keypoint_region(name: str) -> str | None:
    """The region of a CUB keypoint name ("left wing" → "wing"; "beak" → "beak"), None for an unknown one."""
    base = name.strip().lower()
    for side in ("left ", "right "):
        if base.startswith(side):
            base = base[len(side):]
    return base if base in REGIONS else None


@dataclass
class Attributes:
    """The species' attribute table: ``groups`` the group of each attribute column; ``table`` (C, A) the
    percentages of the data's classes (rows in the data's class order; NaN rows for classes without one)."""

    groups: list[str]
    table: np.ndarray

    def has(self, c: int) -> bool:
        return bool(np.isfinite(self.table[c]).all())


def read_attributes(root: str | Path, classes: list[str]) -> Attributes | str:
    """The attribute table of a CUB-layout folder for its ``classes`` (the report's, in classes.txt order), or a
    sentence saying why there is none (no attribute files; not the CUB layout; rows that do not match)."""
    from engine.data.cub import find_root

    base = find_root(Path(root))
    if base is None:
        return f"{str(root)!r} is not a CUB-layout folder, so it has no species attributes"
    names_f, table_f = base / ATTRIBUTES_DIR / ATTRIBUTE_NAMES, base / ATTRIBUTES_DIR / ATTRIBUTE_TABLE
    if not names_f.is_file() or not table_f.is_file():
        return (f"{str(base)!r} has no species attributes (attributes/{ATTRIBUTE_NAMES} and attributes/"
                f"{ATTRIBUTE_TABLE}, as CUB-200-2011 ships them)")
    try:
        groups = []
        for line in names_f.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            fields = line.split(maxsplit=1)
            if len(fields) != 2:
                raise ValueError(f"{str(names_f)!r}: the line {line!r} is not 'id has_<group>::<value>'")
            group = fields[1].split("::", 1)[0]
            groups.append(group[4:] if group.startswith("has_") else group)
        rows = [[float(v) for v in line.split()] for line in table_f.read_text(encoding="utf-8").splitlines()
                if line.strip()]
        class_ids = [int(line.split()[0]) for line in (base / "classes.txt").read_text(encoding="utf-8").splitlines()
                     if line.strip()]
    except (ValueError, OSError, UnicodeDecodeError, DataError) as exc:
        return f"the species attributes of {str(base)!r} cannot be read ({exc})"
    if any(len(r) != len(groups) for r in rows):
        return (f"{str(table_f)!r} has rows of {sorted({len(r) for r in rows})} values for {len(groups)} "
                "attributes: fix the file")
    if len(rows) != len(class_ids):
        return f"{str(table_f)!r} has {len(rows)} rows for {len(class_ids)} classes in classes.txt: fix the file"
    row_of = {cid: r for r, cid in enumerate(sorted(class_ids))}  # rows are in class-id order
    table = np.full((len(classes), len(groups)), np.nan)
    for k, cid in enumerate(class_ids[:len(classes)]):
        table[k] = rows[row_of[cid]]
    return Attributes(groups, table)


def group_difference(pa: np.ndarray, pb: np.ndarray) -> float | None:
    """Total-variation distance of two species' percentages within one group, each normalised to sum 1; None when
    either sums to 0 (the group is skipped)."""
    sa, sb = float(np.sum(pa)), float(np.sum(pb))
    if sa <= 0 or sb <= 0:
        return None
    return 0.5 * float(np.abs(np.asarray(pa) / sa - np.asarray(pb) / sb).sum())


def region_differences(attrs: Attributes, a: int, b: int) -> dict[str, float | None]:
    """{region: D_r(A, B)}, None for a region all of whose groups were skipped."""
    groups = np.array(attrs.groups)
    by_group: dict[str, float | None] = {}
    for g in {g for gs in REGION_GROUPS.values() for g in gs}:
        cols = groups == g
        by_group[g] = group_difference(attrs.table[a, cols], attrs.table[b, cols]) if cols.any() else None
    out: dict[str, float | None] = {}
    for r in REGIONS:
        vals = [by_group[g] for g in REGION_GROUPS[r] if by_group.get(g) is not None]
        out[r] = max(vals) if vals else None
    return out


def expert_regions(diff: dict[str, float | None]) -> list[str]:
    """The pair's expert regions: the :data:`EXPERT_TOP` largest D_r (ties in region order) and every other region
    within :data:`EXPERT_WITHIN` of the largest, largest first."""
    known = [(r, d) for r, d in diff.items() if d is not None]
    if not known:
        return []
    order = sorted(known, key=lambda t: (-t[1], REGIONS.index(t[0])))
    top = order[0][1]
    return [r for i, (r, d) in enumerate(order) if i < EXPERT_TOP or d >= top - EXPERT_WITHIN - 1e-12]


def part_regions(centres: np.ndarray, present: np.ndarray, keypoints: np.ndarray, keypoint_names: list[str],
                 images: np.ndarray) -> list[str | None]:
    """The region of each part over ``images`` (indices): each image where the part is active gives the region of
    the visible keypoint nearest the part's centroid one vote; the most-voted region (ties in region order)."""
    kp_region = [keypoint_region(n) for n in keypoint_names]
    k = centres.shape[1]
    out: list[str | None] = []
    for part in range(k):
        votes = dict.fromkeys(REGIONS, 0)
        for i in images:
            if not present[i, part] or not np.isfinite(centres[i, part]).all():
                continue
            vis = (keypoints[i, :, 2] > 0) & np.array([r is not None for r in kp_region])
            if not vis.any():
                continue
            dist = np.hypot(*(keypoints[i, :, :2] - centres[i, part]).T)
            dist[~vis] = np.inf
            votes[kp_region[int(np.argmin(dist))]] += 1
        best = max(REGIONS, key=lambda r: (votes[r], -REGIONS.index(r)))
        out.append(best if votes[best] > 0 else None)
    return out


@dataclass
class PairAgreement:
    a: int
    b: int
    errors: int
    differences: dict[str, float | None]
    experts: list[str]
    ranked: list[int]  # parts, first = top-ranked
    regions: list[str | None]  # region of each part (index = part)

    def ratio(self, part: int) -> float:
        """D_{region of part} / max_r D_r (0 for a part without a region or a region without a difference)."""
        top = max((d for d in self.differences.values() if d is not None), default=0.0)
        r = self.regions[part]
        d = self.differences.get(r) if r is not None else None
        return float(d / top) if d is not None and top > 0 else 0.0

    def agrees(self, part: int) -> bool:
        return self.regions[part] is not None and self.regions[part] in self.experts


@dataclass
class Agreement:
    """The figure and its baselines (shares 0..1), with every pair; ``note`` says why there is none."""

    pairs: list[PairAgreement] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.pairs)

    def _mean(self, f: Callable[[PairAgreement], float]) -> float | None:
        return float(np.mean([f(p) for p in self.pairs])) if self.pairs else None

    def figures(self) -> dict[str, float | None]:
        def rnd(p: PairAgreement, g: Callable[[PairAgreement, int], float]) -> float:
            return float(np.mean([g(p, k) for k in range(len(p.regions))]))

        return {
            "agreement": self._mean(lambda p: float(p.agrees(p.ranked[0]))),
            "d_ratio": self._mean(lambda p: p.ratio(p.ranked[0])),
            "random_agreement": self._mean(lambda p: rnd(p, lambda q, k: float(q.agrees(k)))),
            "random_d_ratio": self._mean(lambda p: rnd(p, lambda q, k: q.ratio(k))),
            "last_agreement": self._mean(lambda p: float(p.agrees(p.ranked[-1]))),
            "last_d_ratio": self._mean(lambda p: p.ratio(p.ranked[-1])),
        }

    def to_dict(self, label: Callable[[int], str] | None = None) -> dict:
        label = label or (lambda k: f"part {k + 1}")
        return {"pairs_scored": self.n, "note": self.note, **self.figures(),
                "pairs": [{"a": self.classes[p.a], "b": self.classes[p.b], "errors": p.errors,
                           "expert_regions": p.experts,
                           "differences": {r: (None if d is None else round(d, 4)) for r, d in p.differences.items()},
                           "ranked_parts": [{"part": k + 1, "label": label(k), "region": p.regions[k],
                                             "agrees": p.agrees(k), "d_ratio": round(p.ratio(k), 4)}
                                            for k in p.ranked]} for p in self.pairs]}


def field_mark_agreement(scores, attrs: Attributes | str, rank: Callable[[int, int], list[int]],
                         max_pairs: int = MAX_PAIRS, min_errors: int = MIN_ERRORS) -> Agreement:
    """§6 on one split's :class:`~engine.fieldmarks.separation.PartScores`: ``rank(a, b)`` gives the parts for a
    pair in the run's order (first = top-ranked). An :class:`Agreement` whose ``note`` says why it has no pair."""
    from engine.fieldmarks.separation import confused_pairs

    if isinstance(attrs, str):
        return Agreement(classes=list(scores.classes), note=attrs)
    if scores.keypoints is None:
        return Agreement(classes=list(scores.classes), note="the folder has no part keypoints, so a part has no "
                                                             "region")
    candidates = [p for p in confused_pairs(scores, top=len(scores.classes) ** 2) if p[2] >= min_errors]
    candidates = [p for p in candidates if attrs.has(p[0]) and attrs.has(p[1])][:max_pairs]
    if not candidates:
        return Agreement(classes=list(scores.classes),
                         note=f"no pair of species is confused at least {min_errors} times on this split")
    pairs = []
    for a, b, errors in candidates:
        images = np.concatenate([scores.of_class(a), scores.of_class(b)])
        diff = region_differences(attrs, a, b)
        regions = part_regions(scores.centres, scores.present, scores.keypoints, scores.keypoint_names, images)
        pairs.append(PairAgreement(a, b, errors, diff, expert_regions(diff), list(rank(a, b)), regions))
    return Agreement(pairs, list(scores.classes))


__all__ = ["REGIONS", "REGION_GROUPS", "Attributes", "read_attributes", "group_difference", "region_differences",
           "expert_regions", "part_regions", "keypoint_region", "PairAgreement", "Agreement", "field_mark_agreement"]
