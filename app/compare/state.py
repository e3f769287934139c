"""What the Compare workspace shows, without a widget (no Qt here): the run and data, the view its method gets,
the confusion and a ``parts`` run's part scores, the two caches (each class's crops, each pair's ranked parts),
the on-bird shares, and the texts the page and its rows show. :class:`app.compare.page.ComparePage` keeps one
:class:`CompareModel` and draws it; :func:`plan_rows` lays out a pair's separating parts for
:class:`app.compare.rows.SeparationView`. The tests drive both with plain data.
"""

from __future__ import annotations

import html
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

from engine.data import DataReport
from engine.errors import EngineError
from engine.events import Progress
from engine.fieldmarks.onbird import ON_BIRD_MIN, PartPlace, split_by_place
from engine.runs import RunInfo

from ..common.caches import trim_oldest
from ..common.text import error_text, training_method_label
from .compute import ClassParts, Confusion
from .separation import MAX_ROWS, PairSeparation, PartRow

DEFAULT_CROPS = {"columns": 6, "parts": 3}  # crops per map of a class / per species of a separating part
CACHED = 32  # class crops, and pair rankings, kept
TOGETHER = "Rank all parts together"
FINDING_PLACES = ("Finding which parts lie on the bird (each part's peak over the training photos, once per run); "
                  "until then all parts are ranked together.")
BACKGROUND = (f"<b>Background / habitat</b>: parts whose peak is on the bird on fewer than {100 * ON_BIRD_MIN:.0f} % "
              "of their active training photos (or never active), ranked the same way")
NO_PART_ON_BIRD = ("No part of this run lies on the bird: none has its peak on the bird on at least "
                   f"{100 * ON_BIRD_MIN:.0f} % of its active training photos, so all are listed under background / "
                   "habitat.")


@dataclass(frozen=True)
class PairState:
    """The two classes compared (indices into the run's classes; -1: none)."""

    a: int
    b: int


@dataclass(frozen=True)
class CompareState:
    """What the page shows: the run, the pair, whether its crops are on screen, and the view ("parts": the
    ranked separating parts of a ``parts`` run; "columns": each class's own maps)."""

    run: str
    a: int
    b: int
    ready: bool
    view: str = "columns"


@dataclass(frozen=True)
class RowSelection:
    """The selected row (0-based; -1: none) and its part."""

    row: int
    part: int


def species(name: str) -> str:
    """A class folder name as a birder writes it (``Fish_Crow`` → ``Fish Crow``)."""
    return name.replace("_", " ")


def share_text(place: PartPlace | None) -> str:
    """The on-bird share as the rows show it ("72 %"; "–": never active or unknown)."""
    return "–" if place is None or place.share is None else f"{100 * place.share:.0f} %"


def place_tip(place: PartPlace | None) -> str:
    """Where the part lies, in a sentence (the share's tooltip)."""
    if place is None:
        return "On-bird share: not known yet"
    where = "on the bird" if place.on_bird else "background / habitat"
    if place.share is None:
        return f"Never active on the training photos: {where}"
    box = "inside the bird box" if place.source == "box" else "on the run's own foreground"
    return (f"Peak on the bird ({box}) on {100 * place.share:.0f} % of its {place.active} active training photos: "
            f"{where}")


@dataclass
class RowPlan:
    """A pair's rows as :class:`~app.compare.rows.SeparationView` lays them out: the parts on the bird (``bird``)
    and, when ``grouped``, the background / habitat parts below them; the title, the note above the rows, the
    column headers (species A and B, escaped) and each part's place (``where``; ``shares``: the places are known)."""

    bird: list[PartRow]
    background: list[PartRow]
    grouped: bool
    title: str
    note: str
    a: str
    b: str
    shares: bool
    where: dict[int, PartPlace] = field(default_factory=dict)


def plan_rows(separation: PairSeparation, names: tuple[str, str], places: Sequence[PartPlace] | None = None,
              together: bool = False, note: str = "") -> RowPlan:
    """Group ``separation``'s rows by ``places`` (the run's on-bird shares) unless ``together`` or ``places`` is
    None (then one ranking), at most MAX_ROWS per group; ``note`` goes above the rows."""
    grouped = places is not None and not together
    if grouped:
        bird, background = split_by_place(separation.rows, list(places))
        bird, background = bird[:MAX_ROWS], background[:MAX_ROWS]
    else:
        bird, background = separation.rows[:MAX_ROWS], []
    a, b = (html.escape(species(n)) for n in names)
    shown = len(bird) + len(background)
    more = f" (top {shown} of {separation.parts})" if shown < separation.parts else ""
    which = "Parts on the bird that tell" if grouped else "Parts that tell"
    title = (f"{which} {a} from {b}, best first{more}: separation over {separation.images_a} + "
             f"{separation.images_b} test images")
    if grouped and not bird:
        note = NO_PART_ON_BIRD + (f" {note}" if note else "")
    return RowPlan(bird, background, grouped, title, note, a, b, places is not None,
                   {p.part: p for p in places} if places is not None else {})


class CompareModel:
    """Compare's run, data, jobs' results, caches and texts. ``scores`` is a ``parts`` run's
    :class:`engine.fieldmarks.PartScores` over the test split; ``places`` its on-bird shares
    (:class:`engine.fieldmarks.onbird.PartPlace`), ``places_error`` why they could not be read or computed."""

    def __init__(self) -> None:
        self.run: RunInfo | None = None
        self.report: DataReport | None = None
        self.confusion: Confusion | None = None
        self.scores: Any = None
        self.confusion_for = ""  # "run|data" whose confusion (or scores) is being computed
        self.score_notes: list[str] = []
        self.parts: OrderedDict[tuple[str, int, int], ClassParts] = OrderedDict()
        self.separations: OrderedDict[tuple[str, int, int, int], PairSeparation] = OrderedDict()
        self.crops = dict(DEFAULT_CROPS)
        self.picked = False  # the user chose a pair: a finished confusion no longer picks one
        self.places: list[Any] | None = None
        self.places_error = ""
        self.places_for = ""  # the run whose shares are being computed (or were)

    @property
    def view(self) -> str:
        """"parts" for a ``parts`` run (ranked separating parts), else "columns" (each class's own maps)."""
        return "parts" if self.run is not None and self.run.method == "parts" else "columns"

    def usable(self) -> str:
        """Why the page cannot compare now ("" when it can)."""
        if self.run is None:
            return "Open a run (Train, or File ▸ Open Run…)."
        if self.report is None:
            return "Open the run's data folder in the Library."
        if list(self.report.classes) != list(self.run.classes):
            return "The open data set has other classes than the run: open the data the run was trained on."
        return ""

    # -- inputs ----------------------------------------------------------------------------------------------
    def set_run(self, ref: RunInfo | None) -> None:
        """A new run: its confusion, scores and rankings are computed again (the class crops stay cached)."""
        self.run = ref
        self.confusion = None
        self.scores = None
        self.read_places()
        self.separations.clear()  # ranked from the scores, which are computed again
        self.confusion_for = ""
        self.picked = False

    def set_data(self, report: DataReport | None) -> None:
        """New data: everything computed from the old data is forgotten."""
        self.report = report
        self.confusion = None
        self.scores = None
        if self.places is None:  # computed on the training photos of this data instead
            self.places_for, self.places_error = "", ""
        self.confusion_for = ""
        self.parts.clear()
        self.separations.clear()

    def read_places(self) -> None:
        """The run's saved on-bird shares (a small file; None: not computed for these weights yet)."""
        from engine.fieldmarks.onbird import saved_places

        self.places, self.places_error, self.places_for = None, "", ""
        if self.run is None or self.run.method != "parts":
            return
        try:
            self.places = saved_places(self.run.path)
        except EngineError as exc:
            self.places_error = str(exc)
            self.places_for = self.run.path  # a damaged file: not computed over it (its message says what to do)

    # -- what to compute -------------------------------------------------------------------------------------
    def confusion_to_compute(self) -> str:
        """The "run|data" key whose confusion (or part scores) to compute now ("" when none: unusable, or
        started already); the key is then taken."""
        if self.usable() or self.run is None or self.report is None:
            return ""
        key = f"{self.run.path}|{self.report.root}"
        if self.confusion_for == key:
            return ""
        self.confusion_for = key
        self.score_notes = []
        return key

    def places_to_compute(self) -> str:
        """The run whose on-bird shares to compute after its scores ("" when known, or started or failed)."""
        if self.places is not None or self.run is None or self.report is None or self.places_for == self.run.path:
            return ""
        self.places_for = self.run.path
        return self.run.path

    def missing_classes(self, a: int, b: int, n: int) -> list[int]:
        """The classes of the pair whose ``n`` crops per map are not cached."""
        return [c for c in dict.fromkeys((a, b)) if (self.run.path, c, n) not in self.parts]

    def class_parts(self, c: int, n: int) -> ClassParts | None:
        return self.parts.get((self.run.path, c, n))

    def separation(self, a: int, b: int, n: int) -> PairSeparation | None:
        """The cached ranking of the pair with ``n`` crops per species, or None."""
        return self.separations.get((self.run.path, a, b, n))

    # -- results ---------------------------------------------------------------------------------------------
    def store_parts(self, run: str, n: int, results: list[ClassParts]) -> bool:
        """Cache the lane's class crops; True when they are for the run shown."""
        for r in results:
            self.parts[(run, r.class_index, n)] = r
        trim_oldest(self.parts, CACHED)
        return self.run is not None and self.run.path == run

    def store_separation(self, sep: PairSeparation, a: int, b: int) -> bool:
        """Cache the lane's ranking; True when it is for the run and the pair (``a``, ``b``) shown."""
        self.separations[(sep.run, sep.a, sep.b, sep.crops)] = sep
        trim_oldest(self.separations, CACHED)
        return self.run is not None and self.run.path == sep.run and (a, b) == (sep.a, sep.b)

    def scores_found(self, run: str, scores: Any) -> Confusion | None:
        """A ``parts`` run's part scores: the confusion they give (with the data's notes), None when ``run`` is
        no longer the one shown."""
        from .separation import confusion_from_scores

        if self.run is None or self.run.path != run:
            return None
        self.scores = scores
        confusion = confusion_from_scores(run, scores)
        confusion.notes.extend(self.score_notes)
        return confusion

    def places_found(self, run: str, places: list[Any]) -> str | None:
        """The shares computed for ``run``: the status line (None: the run is no longer shown)."""
        if self.run is None or self.run.path != run:
            return None
        self.places, self.places_error = places, ""
        on = sum(p.on_bird for p in places)
        return f"{on} of {len(places)} parts lie on the bird."

    def places_failed(self, run: str, exc: BaseException) -> str | None:
        """The shares' job failed for ``run``: the status line (None: the run is no longer shown)."""
        if self.run is None or self.run.path != run:
            return None
        self.places_error = error_text(exc)
        return f"On-bird shares: {self.places_error}"

    # -- texts -----------------------------------------------------------------------------------------------
    def places_note(self, together: bool) -> str:
        """What the rows say while the parts are not grouped by place ("" once they can be)."""
        if self.places is not None or together:
            return ""
        if self.places_error:
            return (f"Cannot tell the parts on the bird from the background ({self.places_error}); all parts are "
                    "ranked together.")
        return FINDING_PLACES

    def confusion_text(self, confusion: Confusion) -> str:
        """The confusion panel's lines: images, top-1 accuracy and how it was measured, the data's notes."""
        how = ("mean of the parts' class scores" if self.view == "parts"
               else "whole photos resized, as the maps see them")
        return (f"{confusion.images} test images, top-1 {100 * confusion.accuracy:.1f} % ({how})"
                + "".join(f"\n{note}" for note in confusion.notes))

    def mode_text(self) -> str:
        """The label that says what the view shows."""
        if self.run is None:
            return ""
        if self.view == "parts":
            return ("Shared parts: every part is the same body region on every bird, so the parts are ranked by how "
                    "well their scores tell the two species apart. Keys: Left / Right the pair, 1-9 a part.")
        return (f"{training_method_label(self.run.method)} run: its maps belong to one class each, so each species "
                "shows its own maps' strongest crops (ranking the parts that separate a pair needs a `parts` run).")

    def crops_texts(self) -> tuple[str, str]:
        """(the crop count's label, its tooltip) for the view."""
        if self.view == "parts":
            return "Crops per species", "The strongest crops of each species per separating part"
        return "Crops per part", "Crops per part channel (the strongest by part score)"

    def guide_hint(self) -> str:
        if self.view == "parts":
            return "Write a printable HTML page per species, with the parts that separate it from its look-alikes"
        return ("Write a printable HTML page per species: its typical photo, accuracy and confusions (separating "
                "parts need a `parts` run)")

    def part_labels(self, parts: list[int]) -> dict[int, str]:
        """{part: label} of ``parts`` under the run's saved names (given since the rows were drawn, in Explore or
        by ``fieldmark names``); a damaged names file raises its CheckpointError."""
        from engine.fieldmarks import part_label, read_part_names

        names = read_part_names(self.run.path)
        return {k: part_label(k, names) for k in parts}

    def class_name(self, c: int) -> str:
        return self.run.classes[c] if self.run is not None and 0 <= c < len(self.run.classes) else ""

    @staticmethod
    def progress_text(event: Progress) -> str:
        return f"{event.stage}: {event.done}/{event.total}"
