"""Compare's state without a widget: the view a run gets, what is cached, what the texts say, and how a pair's
separating parts are laid out (no Qt is touched)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from app.compare.compute import ClassParts
from app.compare.separation import MAX_ROWS, PairSeparation, PartRow
from app.compare.state import (CACHED, FINDING_PLACES, NO_PART_ON_BIRD, CompareModel, place_tip, plan_rows,
                               share_text, species)
from engine.data import DataReport
from engine.events import Progress
from engine.fieldmarks.onbird import PartPlace
from engine.runs import RunInfo

CLASSES = ("Fish_Crow", "American_Crow", "Common_Raven")


def model(method: str = "parts", data: bool = True) -> CompareModel:
    m = CompareModel()
    m.set_run(RunInfo("/runs/r1", "smallnet", method, CLASSES))  # no run folder there: no saved shares
    if data:
        m.set_data(DataReport("/data/crows", "class-folders", list(CLASSES), []))
    return m


def separation(parts: int = 4, a: int = 0, b: int = 1) -> PairSeparation:
    rows = [PartRow(k, f"part {k + 1}", 3.0 - k / 2, 1.0, -1.0) for k in range(parts)]
    return PairSeparation("/runs/r1", a, b, 3, rows, parts, 20, 18)


def place(k: int, share: float | None, active: int = 10) -> PartPlace:
    return PartPlace(k, share, None, active, "box")


def test_the_view_follows_the_runs_method_and_the_data_must_be_the_runs():
    assert model("parts").view == "parts" and model("mcloss").view == "columns" and CompareModel().view == "columns"
    assert CompareModel().usable().startswith("Open a run")
    assert model(data=False).usable() == "Open the run's data folder in the Library."
    m = model()
    m.set_data(DataReport("/data/gulls", "class-folders", ["Herring_Gull"], []))
    assert m.usable().startswith("The open data set has other classes") and m.confusion_to_compute() == ""
    assert model().usable() == ""


def test_the_confusion_and_the_shares_are_computed_once():
    m = model()
    assert m.confusion_to_compute() == "/runs/r1|/data/crows" and m.confusion_to_compute() == ""
    assert m.places_to_compute() == "/runs/r1" and m.places_to_compute() == ""
    m.set_data(DataReport("/data/crows", "class-folders", list(CLASSES), []))  # opened again: computed again
    assert m.confusion_to_compute() and m.places_to_compute() == "/runs/r1"


def test_class_crops_and_rankings_are_cached_and_bounded():
    m = model("mcloss")
    assert m.missing_classes(0, 1, 6) == [0, 1] and m.missing_classes(2, 2, 6) == [2]
    assert m.store_parts("/runs/r1", 6, [ClassParts("/runs/r1", 0, "channels", [], 5)])
    assert m.missing_classes(0, 1, 6) == [1] and m.class_parts(0, 6).images == 5 and m.class_parts(0, 3) is None
    assert not m.store_parts("/runs/other", 6, [])  # for another run: cached, not shown
    for c in range(CACHED + 3):
        m.store_parts("/runs/r1", 100 + c, [ClassParts("/runs/r1", 0, "channels", [], 1)])
    assert len(m.parts) == CACHED
    sep = separation()
    assert m.store_separation(sep, 0, 1) and not m.store_separation(sep, 0, 2)
    assert m.separation(0, 1, 3) is sep and m.separation(0, 1, 4) is None
    m.set_run(RunInfo("/runs/r1", "smallnet", "parts", CLASSES))
    assert m.separation(0, 1, 3) is None  # ranked again from the new scores


def test_the_scores_give_the_confusion_with_the_datas_notes():
    m = model()
    m.confusion_to_compute()
    m.score_notes.append("2 photos were added since the run was trained")
    scores = SimpleNamespace(classes=list(CLASSES), labels=np.array([0, 0, 1, 1, 2]),
                             predictions=np.array([0, 1, 0, 1, 2]), probabilities=np.full((5, 3), 1 / 3))
    assert m.scores_found("/runs/other", scores) is None and m.scores is None
    confusion = m.scores_found("/runs/r1", scores)
    assert m.scores is scores and (confusion.pairs[0].a, confusion.pairs[0].b) == (0, 1)
    assert m.confusion_text(confusion) == ("5 test images, top-1 60.0 % (mean of the parts' class scores)\n"
                                           "2 photos were added since the run was trained")


def test_the_shares_texts():
    m = model()
    assert m.places_note(together=False) == FINDING_PLACES and m.places_note(together=True) == ""
    assert m.places_failed("/runs/r1", OSError("disk")) == "On-bird shares: OSError: disk"
    assert m.places_note(together=False).startswith("Cannot tell the parts on the bird from the background (OSError")
    places = [place(0, 0.9), place(1, 0.1), place(2, None, 0)]
    assert m.places_found("/runs/other", places) is None
    assert m.places_found("/runs/r1", places) == "1 of 3 parts lie on the bird." and m.places_error == ""
    assert m.places_note(together=False) == ""
    assert share_text(places[0]) == "90 %" and share_text(places[2]) == "–" and share_text(None) == "–"
    assert place_tip(None) == "On-bird share: not known yet"
    assert place_tip(places[2]) == "Never active on the training photos: background / habitat"
    assert place_tip(places[0]) == ("Peak on the bird (inside the bird box) on 90 % of its 10 active training "
                                    "photos: on the bird")


def test_the_mode_and_crop_texts_follow_the_view():
    parts, maps = model("parts"), model("mcloss")
    assert parts.mode_text().startswith("Shared parts:") and maps.mode_text().startswith("MC-Loss run:")
    assert CompareModel().mode_text() == ""
    assert parts.crops_texts()[0] == "Crops per species" and maps.crops_texts()[0] == "Crops per part"
    assert "look-alikes" in parts.guide_hint() and "need a `parts` run" in maps.guide_hint()
    assert maps.class_name(2) == "Common_Raven" and maps.class_name(5) == "" and maps.class_name(-1) == ""
    assert CompareModel.progress_text(Progress("predict", 3, 9)) == "predict: 3/9"
    assert species("Fish_Crow") == "Fish Crow"


def test_rows_are_grouped_by_place_unless_together():
    sep = separation(parts=4)
    names = ("Fish_Crow", "American_Crow")
    one = plan_rows(sep, names, None)
    assert not one.grouped and [r.part for r in one.bird] == [0, 1, 2, 3] and one.background == []
    assert one.title == ("Parts that tell Fish Crow from American Crow, best first: separation over 20 + 18 test "
                         "images") and not one.shares
    places = [place(0, 0.1), place(1, 0.9), place(2, 0.8), place(3, 0.05)]
    grouped = plan_rows(sep, names, places, note="x")
    assert grouped.grouped and [r.part for r in grouped.bird] == [1, 2]
    assert [r.part for r in grouped.background] == [0, 3]
    assert grouped.title.startswith("Parts on the bird that tell") and grouped.note == "x" and grouped.shares
    assert grouped.where[3].share == 0.05
    assert not plan_rows(sep, names, places, together=True).grouped
    none_on = plan_rows(sep, names, [place(k, 0.0) for k in range(4)], note="why")
    assert none_on.bird == [] and none_on.note == f"{NO_PART_ON_BIRD} why"
    many = plan_rows(separation(parts=MAX_ROWS + 3), ("a<b", "c"), None)
    assert len(many.bird) == MAX_ROWS and f"(top {MAX_ROWS} of {MAX_ROWS + 3})" in many.title and many.a == "a&lt;b"
