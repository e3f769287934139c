"""The names a user gives a run's parts ("crown", "wing bars"), kept in the run folder's ``part_names.json``
(:data:`engine.runs.PART_NAMES`, written atomically) and shown wherever a part is listed: the app, export folders
and files, ``predict --json``, the field guide.

The file holds ``{"format": "fieldmark-part-names", "version": 1, "names": {"1": "crown", ...}}`` with 1-based part
numbers as keys (the numbers the user sees); in Python a name map is ``{0-based part index: name}``.

Reading lives in :func:`engine.runs.read_part_names` (re-exported here), so that export, which sits below this
package, can read the names too.

A run's parts: the K shared parts of a ``parts`` run (the same body region on every bird), the ξ channels of a
class for MC-Loss / CE (part k of every class), the one structure map of TASN.

:func:`propose_names` proposes a body-part name (the nearest CUB keypoint) for the parts on the bird only: a
background / habitat part (:mod:`.onbird`) gets none, and the reason.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator

import numpy as np

from engine.data.records import DataReport
from engine.errors import ConfigError, DataError
from engine.events import Message, Progress
from engine.fileio import atomic_write_json
from engine.fieldmarks.onbird import ON_BIRD_MIN, PartPlace, compute_places, places_from_training, saved_places
from engine.fieldmarks.separation import PartScores, collect_part_scores, open_data
from engine.models.shared_parts import has_shared_parts
from engine.runs import (PART_NAMES, PART_NAMES_FORMAT, PART_NAMES_VERSION, LoadedRun, load_run, read_meta,
                         read_part_names, run_dir_of)

MAX_LENGTH = 40
_SEPARATORS = ("/", "\\")


def run_part_count(run: str | Path) -> int:
    """How many parts the run at ``run`` has (from its ``model.json``; no weights loaded)."""
    meta = read_meta(run)
    arch = meta.get("arch") or {}
    if arch.get("head") == "parts" or meta.get("method") == "parts":
        return int(arch.get("parts", 8))
    if meta.get("method") == "tasn" or str(arch.get("name", "")).startswith("tasn_"):
        return 1
    if meta.get("method") == "racnn" or str(arch.get("name", "")).startswith("racnn_"):
        return 2  # the squares of scales 2 and 3
    return int(arch.get("xi", 3))


def clean_name(name: Any, index: int | None = None) -> str:
    """``name`` stripped and checked: 1..40 characters, no path separator, no control character. An empty
    string stays empty (it means "remove the name"). ConfigError naming the value otherwise."""
    where = f"part {index + 1}: " if index is not None else ""
    if not isinstance(name, str):
        raise ConfigError(f"{where}name {name!r} is not text: give a name such as 'crown'")
    text = name.strip()
    if len(text) > MAX_LENGTH:
        raise ConfigError(f"{where}name {text!r} has {len(text)} characters: use at most {MAX_LENGTH}")
    if any(sep in text for sep in _SEPARATORS):
        raise ConfigError(f"{where}name {text!r} holds a path separator (/ or \\): use letters, digits, spaces "
                          "or dashes")
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        raise ConfigError(f"{where}name {text!r} holds a control character: type the name on one line")
    return text


def _validated(names: dict[int, str], count: int) -> dict[int, str]:
    """The names checked and cleaned, empty ones dropped, sorted by part."""
    out: dict[int, str] = {}
    for raw_index, name in names.items():
        if isinstance(raw_index, bool) or not isinstance(raw_index, int):
            raise ConfigError(f"part index {raw_index!r} is not a whole number: give 0-based part indices")
        if not 0 <= raw_index < count:
            raise ConfigError(f"part {raw_index + 1} does not exist: the run has {count} parts (1..{count})")
        text = clean_name(name, raw_index)
        if text:
            out[raw_index] = text
    seen: dict[str, int] = {}
    for k in sorted(out):
        key = out[k].casefold()
        if key in seen:
            raise ConfigError(f"parts {seen[key] + 1} and {k + 1} are both named {out[k]!r}: give each part its own "
                              "name")
        seen[key] = k
    return dict(sorted(out.items()))


def write_part_names(run: str | Path, names: dict[int, str]) -> None:
    """Save the run's part names (atomic). Checks every entry against the run's parts (:func:`run_part_count`)
    and the name rules (:func:`clean_name`, names unique ignoring case); an empty name removes its entry; ConfigError
    naming the bad value, and nothing is written."""
    run = run_dir_of(run)
    clean = _validated(dict(names), run_part_count(run))
    atomic_write_json(run / PART_NAMES, {"format": PART_NAMES_FORMAT, "version": PART_NAMES_VERSION,
                                         "names": {str(k + 1): v for k, v in clean.items()}})


def set_part_name(run: str | Path, index: int, name: str) -> dict[int, str]:
    """Name part ``index`` (0-based; an empty ``name`` removes its name) and save; returns the new names."""
    names = read_part_names(run)
    names[index] = name
    write_part_names(run, names)
    return read_part_names(run)


def part_label(index: int, names: dict[int, str]) -> str:
    """What the user sees for part ``index`` (0-based): its name, else "part k" (1-based)."""
    return names.get(index) or f"part {index + 1}"


def label_maps(map_names: list[str], names: dict[int, str]) -> list[str]:
    """The labels of a run's part maps (``part 3`` or ``part 3 (ch 7)``, map i = part i) with each named part's
    ``part k`` replaced by its name: ``wing bars (ch 7)``."""
    out = []
    for i, label in enumerate(map_names):
        prefix = f"part {i + 1}"
        if names.get(i) and (label == prefix or label.startswith(prefix + " ")):
            label = names[i] + label[len(prefix):]
        out.append(label)
    return out


@dataclass(frozen=True)
class NameProposal:
    """The CUB keypoint nearest part ``part`` (0-based) on ``count`` of the ``images`` training images where the
    part is active and some keypoint is visible; ``share`` = count / images. ``keypoint`` is "" (share 0, count 0)
    when nothing is proposed, and ``reason`` says why: the part was never active, or it is a background / habitat
    part (:mod:`.onbird`), which gets no body-part name. ``on_bird`` is the part's on-bird share over the training
    photos (None: never active)."""

    part: int
    keypoint: str
    share: float
    count: int
    images: int
    on_bird: float | None = None
    reason: str = ""

    @property
    def background(self) -> bool:
        """A background / habitat part: active, with an on-bird share below :data:`~.onbird.ON_BIRD_MIN`."""
        return self.on_bird is not None and self.on_bird < ON_BIRD_MIN


NEVER_ACTIVE = "never active on the training photos"
NO_KEYPOINT = "active only on training photos without a visible keypoint"


def background_reason(place: PartPlace) -> str:
    """Why a background / habitat part gets no body-part name (its on-bird share, :mod:`.onbird`)."""
    return (f"background / habitat: its peak is on the bird on only {100 * (place.share or 0.0):.0f} % of its "
            "active training photos")


def propose_names(run: str | Path | LoadedRun, data: str | Path | DataReport, split: str = "train",
                  device: str = "cpu", should_stop: Callable[[], bool] | None = None
                  ) -> Generator[Progress | Message, None, list[NameProposal]]:
    """A name for every part of a ``parts`` run on the bird, from a CUB-layout folder: on each ``split`` image (the
    run's own split) where the part is active (§4 rule, :mod:`engine.evaluation.protocol`), the visible keypoint
    nearest its centroid gets a vote; the keypoint with most votes is proposed, with its share of the votes. A
    background / habitat part (its on-bird share below :data:`~.onbird.ON_BIRD_MIN`: the run's saved shares, else
    computed on the training photos and saved, from the same pass when ``split`` is "train") gets no proposal and
    the reason. Yields the pass's Progress (stops as :func:`.separation.collect_part_scores` does); DataError for
    a folder without keypoints."""
    loaded = run if isinstance(run, LoadedRun) else load_run(run, device)
    if not has_shared_parts(loaded.model):
        raise ConfigError(f"{str(loaded.run_dir)!r} is a {loaded.method} run: name proposals need a `parts` run "
                          "(shared parts, the same body region on every bird); name its parts with --set K=NAME")
    report = open_data(data)
    if not report.has_parts:
        raise DataError(f"{report.root!r} has no part keypoints (layout {report.layout}): the name helper needs a "
                        "CUB-layout folder with parts/part_locs.txt (CUB-200-2011 or `fieldmark toybirds`); name the "
                        "parts by hand instead")
    scores = yield from collect_part_scores(loaded, report, split, device, should_stop=should_stop)
    places = saved_places(loaded)
    if places is None and split == "train":  # the shares come from this very pass
        places = places_from_training(loaded, scores, str(report.root))
    elif places is None:
        places = yield from compute_places(loaded, report, device, should_stop)
    return proposals_from(scores, places)


def proposals_from(scores: PartScores, places: list[PartPlace] | None = None) -> list[NameProposal]:
    """:func:`propose_names`'s vote on already collected part scores (with keypoints); ``places`` (the run's
    on-bird shares; None: every part counts as on the bird) keep the background / habitat parts unnamed."""
    if scores.keypoints is None:
        raise DataError("these part scores hold no keypoints: the name helper needs a CUB-layout folder with "
                        "parts/part_locs.txt")
    where = {p.part: p for p in places or ()}
    out = []
    for k in range(scores.parts):
        votes: Counter[str] = Counter()
        for i in np.flatnonzero(scores.present[:, k]):
            vis = np.flatnonzero(scores.keypoints[i, :, 2] > 0.5)
            if not len(vis):
                continue
            d = np.hypot(*(scores.keypoints[i, vis, :2] - scores.centres[i, k]).T)
            votes[scores.keypoint_names[vis[int(d.argmin())]]] += 1
        images = sum(votes.values())
        place = where.get(k)
        share = place.share if place is not None else None
        if place is not None and place.share is not None and not place.on_bird:
            out.append(NameProposal(k, "", 0.0, 0, images, share, background_reason(place)))
            continue
        if not images:
            why = NEVER_ACTIVE if place is None or not place.active else NO_KEYPOINT
            out.append(NameProposal(k, "", 0.0, 0, 0, share, why))
            continue
        keypoint, count = max(votes.items(), key=lambda kv: (kv[1], -scores.keypoint_names.index(kv[0])))
        out.append(NameProposal(k, keypoint, count / images, count, images, share))
    return out


def accepted_names(proposals: list[NameProposal], names: dict[int, str]) -> tuple[dict[int, str], list[str]]:
    """``names`` with the proposals filled in for the parts that have no name yet, and notes on what was left:
    a background / habitat part gets no name; a keypoint proposed for several parts goes to the one with the
    largest share; a name already in use is not given twice."""
    out = dict(names)
    notes = [f"part {p.part + 1} stays unnamed: {p.reason}" for p in sorted(proposals, key=lambda p: p.part)
             if p.background and p.part not in out]
    taken = {v.casefold() for v in out.values()}
    for p in sorted((p for p in proposals if p.keypoint), key=lambda p: (-p.share, -p.count, p.part)):
        if p.part in out:
            continue
        if p.keypoint.casefold() in taken:
            notes.append(f"part {p.part + 1} stays unnamed: {p.keypoint!r} already names another part")
            continue
        out[p.part] = p.keypoint
        taken.add(p.keypoint.casefold())
    return dict(sorted(out.items())), notes


__all__ = ["NameProposal", "NEVER_ACTIVE", "NO_KEYPOINT", "background_reason", "propose_names", "proposals_from",
           "accepted_names", "label_maps", "MAX_LENGTH", "run_part_count", "clean_name", "read_part_names",
           "write_part_names", "set_part_name", "part_label"]
