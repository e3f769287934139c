"""What the Explore workspace shows, without a widget (no Qt here): the run and its parts' names and on-bird
shares, the image, the class and view chosen, the result shown and the map or part in focus, the results cached,
and every line of text the page shows for them. :class:`app.explore.page.ExplorePage` keeps one
:class:`ExploreState`, draws what it holds and feeds it the user's choices and the lane's results; the tests drive
it with plain data.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from engine.data import DataReport, Sample
from engine.events import Message, Progress
from engine.fieldmarks import part_label
from engine.runs import RunInfo

from ..common.caches import trim_oldest
from ..common.text import map_method_label
from .compute import ExploreRun, MapRequest, MapResult

CACHE_SIZE = 48  # results kept per page, within CACHE_BYTES
CACHE_BYTES = 384 * 2**20
ALL_PARTS, ONE_MAP = "all", "one"
PARTS_LABEL = "Shared parts"  # a parts run's "channels" maps: its K parts, the same for every class
UNIFORM = 1e-12  # a map whose values spread no more is blank (engine.maps.explain scales it to zeros)


def gate_text(lo: float, hi: float) -> str:
    """What an attention block's map holds (CBAM's spatial gate, the residual block's mean 1 + M, both in (0, 2);
    docs/METHODS.md#attention-blocks): the gate's range, in enough digits to tell its ends apart, since the colours
    stretch that range, however narrow, over the whole colour map."""
    if hi - lo <= UNIFORM:
        return f"gate {lo:.3f} everywhere: the block weighs every position alike (a blank map)"
    digits = min(6, max(2, 1 - math.floor(math.log10(hi - lo))))
    note = ", nearly uniform" if hi - lo < 0.01 else ""
    return (f"gate {lo:.{digits}f} to {hi:.{digits}f}{note} (1 leaves the features as they are; the colours stretch "
            "this range)")


@dataclass(frozen=True)
class MapsState:
    """What Explore shows: run, image, method, class and the picked map (-1: none)."""

    run: str
    path: str
    method: str
    class_index: int
    map_index: int
    view: str = ONE_MAP  # ALL_PARTS: the coloured map of all parts (map_index: the isolated part, or -1)


class ExploreState:
    """Explore's selection, cache and texts. ``view`` is the view chosen (ALL_PARTS or ONE_MAP; the all-parts view
    is on only for a shared-parts run); ``isolated`` and ``hovered`` are the all-parts view's part shown alone and
    part under the mouse; ``places`` a parts run's on-bird shares (:class:`engine.fieldmarks.onbird.PartPlace`)."""

    def __init__(self) -> None:
        self.info: ExploreRun | None = None
        self.run_path = ""
        self.report: DataReport | None = None
        self.sample: Sample | None = None
        self.class_choice: int | None = None  # None: the predicted class
        self.view = ONE_MAP
        self.result: MapResult | None = None
        self.map_index = -1
        self.cache: OrderedDict[tuple[str, str, str, int], MapResult] = OrderedDict()
        self.predicted: dict[tuple[str, str], int] = {}
        self.part_names: dict[int, str] = {}
        self.isolated: int | None = None
        self.hovered: int | None = None
        self.places: list | None = None
        self.places_for = ""  # "run|data" whose shares are being computed (or failed; "run|*": unreadable file)

    # -- the run, the data, the image ------------------------------------------------------------------------
    def set_run(self, ref: RunInfo | None) -> None:
        """A new active run (None: none): everything shown for the old one is forgotten (the cache stays)."""
        self.info = None
        self.run_path = ref.path if ref else ""
        self.result = None
        self.isolated = self.hovered = None
        self.part_names = {}
        self.places, self.places_for = None, ""

    def run_loaded(self, info: ExploreRun) -> bool:
        """The lane loaded ``info``: True when it is still the active run (then it is the one explored)."""
        if info.run.path != self.run_path:
            return False
        self.info = info
        self.part_names = {}
        return True

    def select(self, sample: Sample | None) -> bool:
        """The library's selection: True when the image changed (its predicted class is explained first)."""
        if sample is not None and self.sample is not None and sample.path == self.sample.path:
            return False
        self.sample = sample
        self.class_choice = None
        return True

    def method_label(self, method: str) -> str:
        """The method list's label for ``method`` (a parts run's part maps are its shared parts)."""
        return PARTS_LABEL if self.info is not None and self.info.parts and method == "channels" \
            else map_method_label(method)

    # -- requests and the cache ------------------------------------------------------------------------------
    def lookup(self, method: str) -> MapResult | MapRequest | None:
        """What showing ``method``'s maps for the current image and class takes: the cached result (made the
        newest), else the request for the lane; None when there is no run, image or method."""
        if self.info is None or self.sample is None or not method:
            return None
        cls = self.class_choice
        if cls is None:
            cls = self.predicted.get((self.info.run.path, self.sample.path))
        key = (self.info.run.path, self.sample.path, method, cls) if cls is not None else None
        if key is not None and key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        return MapRequest(self.info.run.path, self.sample.path, method, self.class_choice)

    def store(self, result: MapResult) -> bool:
        """Cache the lane's ``result``; True when it is for the run and image shown now."""
        self.cache[(result.run, result.path, result.method, result.class_index)] = result
        trim_oldest(self.cache, CACHE_SIZE, weight=lambda r: r.nbytes, budget=CACHE_BYTES)
        self.predicted[(result.run, result.path)] = result.predicted
        cur = self.sample
        return self.info is not None and cur is not None and (result.run, result.path) == (self.info.run.path,
                                                                                          cur.path)

    def show(self, result: MapResult) -> bool:
        """``result`` is the one shown now; True when it is another image (or run) than the last one."""
        new_image = self.result is None or self.result.path != result.path or self.result.run != result.run
        self.result = result
        return new_image

    def kept_map(self) -> int:
        """The map to pick in a new result: the one picked before when it has one, else the first."""
        return self.map_index if self.result is not None and 0 <= self.map_index < len(self.result.names) else 0

    # -- the views -------------------------------------------------------------------------------------------
    def all_parts(self) -> bool:
        """The all-parts view is on (a shared-parts run's part maps are shown as one coloured map)."""
        return self.view == ALL_PARTS and bool(self.info and self.info.parts)

    def has_parts_layer(self) -> bool:
        """The shown result is a shared-parts run's part maps."""
        return self.result is not None and self.result.layer is not None

    def clamp_isolated(self) -> None:
        """Forget the isolated part when the shown result has fewer parts."""
        if self.isolated is not None and self.result is not None and self.result.layer is not None \
                and self.isolated >= self.result.layer.parts:
            self.isolated = None

    def focused_part(self) -> int:
        """The part the crop panel shows: the hovered one, else the isolated one, else the class's top scorer."""
        if self.hovered is not None:
            return self.hovered
        if self.isolated is not None:
            return self.isolated
        layer = self.result.layer
        return int(layer.scores[:, self.result.class_index].argmax())

    def maps_state(self, parts: bool) -> MapsState:
        """The signal of what is shown: the picked map, or (``parts``: the all-parts view) the isolated part."""
        r = self.result
        if parts:
            return MapsState(r.run, r.path, r.method, r.class_index, -1 if self.isolated is None else self.isolated,
                             ALL_PARTS)
        return MapsState(r.run, r.path, r.method, r.class_index, self.map_index)

    # -- texts -----------------------------------------------------------------------------------------------
    def map_name(self, index: int) -> str:
        """Map ``index``'s label: a shared-parts run's parts by their names, other maps as the engine names them."""
        if self.info is not None and self.info.parts and self.result is not None and self.result.layer is not None:
            return part_label(index, self.part_names)
        return self.result.names[index] if self.result is not None else ""

    def predictions(self) -> list[tuple[int, str]]:
        """(class index, line) of the shown result's top classes."""
        classes = self.info.run.classes if self.info else ()
        return [(i, f"{classes[i] if i < len(classes) else i}   {100 * p:.1f} %") for i, p in self.result.top_k()]

    def part_text(self, k: int) -> str:
        """Part ``k``'s score line: its class score for the shown class and what it adds to the class logit."""
        r = self.result
        layer = r.layer
        classes = self.info.run.classes
        cls = r.class_index
        s = float(layer.scores[k, cls])
        rank = int((layer.scores[:, cls] > s).sum()) + 1
        name = classes[cls].replace("_", " ") if cls < len(classes) else str(cls)
        active = "" if layer.active[k] else " · not active on this photo"
        return (f"{part_label(k, self.part_names)} · score {s:.2f} for {name} (rank {rank} of {layer.parts}; adds "
                f"{s / layer.parts:+.2f} to the class logit {layer.logit(cls):.2f}){active}")

    def map_caption(self, index: int) -> str:
        """The crop panel's line for map ``index`` (one-map view): its part's score, peak and crop; an attention
        block's gate range instead of the score; a blank map's one value alone."""
        r = self.result
        part, crop = r.parts[index], r.crops[index]
        if self.blank_map(index):  # no peak, no part: nothing to point at
            lo = r.ranges[index][0]
            return f"{self.map_name(index)} · " + (gate_text(lo, lo) if r.method == "attention" else
                                                   f"{lo:.3g} everywhere: nothing stands out (a blank map)")
        where = f"peak ({part.peak[0]:.0f}, {part.peak[1]:.0f}) · crop {crop.shape[1]}×{crop.shape[0]} px"
        if r.method == "attention" and index < len(r.ranges):  # a block's gate: its values mean something
            return f"{self.map_name(index)} · {gate_text(*r.ranges[index])} · {where}"
        dup = f" · repeats part {part.duplicate_of + 1}" if part.duplicate_of is not None else ""
        return (f"{self.map_name(index)} · score {part.score:.3g} ({100 * part.score_norm:.0f} % of the strongest) · "
                f"{where}{dup}")

    def blank_map(self, index: int) -> bool:
        """Map ``index`` of the shown result is the same everywhere (an attention block still at its start, a
        Grad-CAM the ReLU zeroed): drawn without overlay, peak or box."""
        r = self.result
        return r is not None and index < len(r.ranges) and r.ranges[index][1] - r.ranges[index][0] <= UNIFORM

    def computing_text(self, method: str) -> str:
        return f"Computing {map_method_label(method)} maps…"

    def renamed_text(self, k: int, name: str) -> str:
        """The status line after part ``k`` was given ``name`` (empty: its name removed)."""
        return (f"Part {k + 1} is now {part_label(k, self.part_names)!r}." if name.strip()
                else f"Part {k + 1} has no name now.")

    # -- the on-bird shares ----------------------------------------------------------------------------------
    def places_unreadable(self) -> None:
        """The run's saved shares cannot be read: not computed again for this run (the error says what to do)."""
        self.places_for = f"{self.info.run.path}|*"

    def places_to_compute(self) -> str:
        """The run whose on-bird shares to compute over the open data's training photos now ("" when none: not a
        parts run, known already, another data set, or started or failed for this run and data already)."""
        if self.info is None or not self.info.parts or self.places is not None or self.report is None:
            return ""
        run = self.info.run.path
        key = f"{run}|{self.report.root}"
        if self.places_for in (key, f"{run}|*"):
            return ""
        if list(self.report.classes) != list(self.info.run.classes):
            return ""  # another data set: no marks until the run's own data is open
        self.places_for = key
        return run

    def places_found(self, run: str, places: list) -> str | None:
        """The shares computed for ``run``; the status line that names the background parts (None: the run is no
        longer the active one, the shares are dropped)."""
        if self.info is None or self.info.run.path != run:
            return None
        self.places = places
        background = ", ".join(part_label(p.part, self.part_names) for p in places if not p.on_bird)
        return f"Background / habitat parts: {background}." if background else "Every part lies on the bird."

    @staticmethod
    def places_progress(event: Progress | Message) -> str:
        """The status line for a progress event of the shares' pass ("" for other events)."""
        if isinstance(event, Progress) and event.total:
            return f"On-bird shares (training photos): {event.done}/{event.total}"
        return ""
