"""Compare on a toy-birds `parts` run: the parts that separate a confusable pair, ranked (the one mark that differs
comes first), the parts on the bird first and the background / habitat parts below them under their heading with
their figures, or all ranked together ("Rank all parts together"), the keys that move through pairs and rows, and
"Save field guide…" (pages written, Cancel). The window never stalls over 100 ms while the ranking, the on-bird
shares or the guide are computed; an MC-Loss run keeps its per-class view and says why."""

from __future__ import annotations

import html
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from engine.fieldmarks import rank_parts, set_part_name
from engine.fieldmarks.onbird import PartPlace, places_doc, saved_places, split_by_place
from engine.runs import PART_NAMES, PART_PLACES, RunInfo, write_part_places
from engine.toybirds.dataset import load_truth

from app.compare import guide as guide_module
from app.compare.guide import CANCELLED, FINISHED
from app.compare.page import FINDING_PLACES, TOGETHER
from app.compare.rows import BACKGROUND, NO_PART_ON_BIRD
from toyrun import ToyRun, mark_part, open_toy, toy_parts_run

pytestmark = pytest.mark.timeout(600)  # the first test trains the session's toy parts run (about 40 s idle, minutes on a loaded machine)

SLOW = 120_000


@pytest.fixture(scope="session")
def toy_parts(tmp_path_factory):
    """The session's toy-birds `parts` run (toyrun.toy_parts_run: classes 2k and 2k+1 differ in one mark)."""
    return toy_parts_run(tmp_path_factory.getbasetemp())


@pytest.fixture
def compare(window, qtbot, toy_parts):
    open_toy(window, qtbot, toy_parts)
    return window.workspaces.compare


def show_scores(window, qtbot, page) -> None:
    window.set_workspace("Compare")
    qtbot.waitUntil(lambda: page.scores is not None and page.confusion is not None, timeout=SLOW)


def show_pair(qtbot, page, a: int, b: int) -> None:
    with qtbot.waitSignal(page.compare_changed, timeout=SLOW,
                          check_params_cb=lambda s: s.ready and s.view == "parts" and (s.a, s.b) == (a, b)):
        page.set_pair(a, b)


def test_the_differing_mark_ranks_first(window, qtbot, toy_parts, stall_probe):
    # the on-bird shares are a cache of the run folder: without them, Compare computes them after the scores
    (Path(toy_parts.run) / PART_PLACES).unlink(missing_ok=True)
    open_toy(window, qtbot, toy_parts)
    page = window.workspaces.compare
    truth = load_truth(toy_parts.data)
    stall_probe.start()
    show_scores(window, qtbot, page)
    assert page.view == "parts" and page.views.currentWidget() is page.separation_view
    assert "Shared parts" in page.mode_label.text()
    assert page.together_box.isVisible() and page.together_box.text() == TOGETHER
    assert not page.together_box.isChecked()
    qtbot.waitUntil(lambda: page.places is not None, timeout=SLOW)  # computed on the lane, the window responsive
    assert saved_places(toy_parts.run) == page.places  # and saved in the run folder
    scores = page.scores
    hits = []
    for a, b, mark in truth.pairs:
        show_pair(qtbot, page, a, b)
        view = page.separation_view
        # by default the parts on the bird are ranked first, then the background / habitat parts
        with stall_probe.aside():  # the test's reference ranking and checks are not the window's work
            bird, background = split_by_place(rank_parts(scores, a, b), page.places)
            check_grouped(view, bird, background)
        # ... and all together with the box ticked: the one ranking (the mark's part is judged there)
        page.together_box.setChecked(True)
        qtbot.wait(20)  # the event loop turns between the test's own steps (the probe times the window's work)
        with stall_probe.aside():
            hits.append(check_together(view, page, scores, truth, a, b, mark))
        page.together_box.setChecked(False)
        qtbot.wait(20)
    stall_probe.assert_responsive(0.1)
    assert sum(hits) >= 3, f"the differing mark's part came first for {sum(hits)} of 4 pairs: {hits}"


def check_grouped(view, bird, background) -> None:
    """The rows grouped: ``bird`` (the parts on the bird, ranked) first, then ``background``."""
    assert view.grouped and view.note.isVisible() == (not bird)
    assert [w.row.part for w in view.bird_rows] == [s.part for s in bird][:9]
    assert [w.row.part for w in view.background_rows] == [s.part for s in background][:9]
    assert view.background_header.isVisible() == bool(background)


def check_together(view, page, scores, truth, a: int, b: int, mark) -> bool:
    """The one ranking (the box ticked): its rows, bars and crops; True when the differing mark's part is first."""
    assert not view.grouped and not view.background_rows and not view.background_header.isVisible()
    rows = [w.row for w in view.rows]
    assert len(rows) == min(scores.parts, 9)
    seps = [r.separation for r in rows]
    assert seps == sorted(seps, reverse=True)
    expected, _ = mark_part(scores, truth, a, b, mark)
    hit = rows[0].part == expected
    n = page.top_n.value()
    own_a, own_b = (int((scores.labels == c).sum()) for c in (a, b))
    assert all(len(w.labels_a) == min(n, own_a) and len(w.labels_b) == min(n, own_b) for w in view.rows)
    bars = [w.bar.fraction() for w in view.rows]
    assert bars[0] == pytest.approx(min(1.0, rows[0].separation / 2.0)) and bars == sorted(bars, reverse=True)
    assert view.rows[0].name.text() == f"<b>part {rows[0].part + 1}</b>"
    assert view.current == 0 and view.rows[0].selected
    assert len(view.detail.labels) == len(rows[0].crops_a) + len(rows[0].crops_b)
    # the crops of row 0 are its strongest: the largest margin among a's images (where the part is active, if
    # it is on any), the smallest among b's
    k = rows[0].part
    margin = scores.scores[:, k, a] - scores.scores[:, k, b]
    for c, crops, pick in ((a, rows[0].crops_a, np.max), (b, rows[0].crops_b, np.min)):
        own = scores.labels == c
        active = scores.present[own, k]
        assert crops[0].margin == pytest.approx(pick(margin[own][active] if active.any() else margin[own]),
                                                abs=1e-5)
    return hit


@pytest.fixture
def run_copy(toy_parts, tmp_path) -> ToyRun:
    """A private copy of the toy parts run, for on-bird shares written by hand (no names, no shares yet)."""
    run = tmp_path / "run"
    shutil.copytree(toy_parts.run, run)
    for name in (PART_NAMES, PART_PLACES):
        (run / name).unlink(missing_ok=True)
    return ToyRun(toy_parts.data, run)


def write_places(run: Path, shares: dict[int, float | None], parts: int) -> list[PartPlace]:
    """The run's on-bird shares by hand: ``shares`` for some parts (None: never active), 0.9 for the others."""
    places = [PartPlace(k, shares.get(k, 0.9), None, 0 if k in shares and shares[k] is None else 20, "box")
              for k in range(parts)]
    write_part_places(run, places_doc(places, "train", 100, "hand-made"))
    return places


def test_background_parts_are_listed_below_with_their_figures(window, qtbot, run_copy):
    from engine.runs import load_run

    parts = load_run(run_copy.run).model.parts
    # parts 1 and 2 lie on the background (20 %), part 3 is never active; the others on the bird
    places = write_places(run_copy.run, {0: 0.2, 1: 0.2, 2: None}, parts)
    open_toy(window, qtbot, run_copy)
    page = window.workspaces.compare
    assert page.places == places  # read from the run folder on the GUI thread: a small file, nothing computed
    show_scores(window, qtbot, page)
    scores = page.scores
    pair = page.confusion.pairs[0]
    show_pair(qtbot, page, pair.a, pair.b)
    view = page.separation_view
    ranked = rank_parts(scores, pair.a, pair.b)
    assert [w.row.part for w in view.bird_rows] == [s.part for s in ranked if s.part >= 3]
    assert [w.row.part for w in view.background_rows] == [s.part for s in ranked if s.part < 3]
    assert view.rows == view.bird_rows + view.background_rows and not view.note.isVisible()
    assert view.title.text().startswith("Parts on the bird that tell")
    # the heading sits between the two groups, and each background row shows its d′ and its on-bird share
    assert view.background_header.isVisible() and view.background_header.text() == BACKGROUND
    lay = view.list_lay
    assert lay.indexOf(view.background_header) == len(view.bird_rows)
    for w in view.background_rows:
        assert w.bar.value == pytest.approx(next(s.separation for s in ranked if s.part == w.row.part))
        assert w.share.isVisible() and w.share.text() == ("–" if w.row.part == 2 else "20 %")
    assert [w.share.text() for w in view.bird_rows] == ["90 %"] * len(view.bird_rows)
    tips = {w.row.part: w.share.toolTip() for w in view.background_rows}
    assert tips[0] == ("Peak on the bird (inside the bird box) on 20 % of its 20 active training photos: "
                       "background / habitat")
    assert tips[2] == "Never active on the training photos: background / habitat"
    # the keys count through both groups: the first background row is key len(bird) + 1
    first_bg = len(view.bird_rows)
    with qtbot.waitSignal(page.row_selected, timeout=2000, check_params_cb=lambda s: s.row == first_bg):
        qtbot.keyClick(page.pairs, getattr(Qt.Key, f"Key_{first_bg + 1}"))
    assert view.background_rows[0].selected and view.current == first_bg
    assert view.detail.title.text().endswith(html.escape(tips[view.background_rows[0].row.part]))

    # the toggle: all parts ranked together, as one list (no heading); the selected part stays selected
    selected = view.rows[view.current].row.part
    qtbot.mouseClick(page.together_box, Qt.MouseButton.LeftButton)
    assert page.together_box.isChecked() and page.guide.all_parts
    assert [w.row.part for w in view.rows] == [s.part for s in ranked][:9]
    assert not view.background_rows and not view.background_header.isVisible() and not view.grouped
    assert view.rows[view.current].row.part == selected
    assert view.title.text().startswith("Parts that tell")
    qtbot.mouseClick(page.together_box, Qt.MouseButton.LeftButton)
    assert view.grouped and [w.row.part for w in view.background_rows] == [s.part for s in ranked if s.part < 3]
    assert not page.guide.all_parts

    # a run whose parts all lie on the background still lists them, under the heading, and says so
    write_places(run_copy.run, {k: 0.1 for k in range(parts)}, parts)
    page.set_run(RunInfo.read(str(run_copy.run)))
    show_scores(window, qtbot, page)
    show_pair(qtbot, page, pair.a, pair.b)
    assert not view.bird_rows and [w.row.part for w in view.background_rows] == [s.part for s in ranked][:9]
    assert view.note.isVisible() and view.note.text().startswith(NO_PART_ON_BIRD)
    assert view.background_header.isVisible() and view.current == 0  # the first background part is selected


def test_until_the_shares_are_known_all_parts_rank_together_and_say_why(window, qtbot, run_copy, monkeypatch):
    """The shares job waits until the test has seen the interim view, then the rows refresh by themselves."""
    import app.compare.page as page_module

    release = threading.Event()
    real = page_module.places_job

    def held(*args, **kwargs):
        release.wait(30)
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(page_module, "places_job", held)
    open_toy(window, qtbot, run_copy)
    page = window.workspaces.compare
    show_scores(window, qtbot, page)
    pair = page.confusion.pairs[0]
    qtbot.waitUntil(lambda: bool(page.separation_view.rows), timeout=SLOW)
    view = page.separation_view
    assert page.places is None and not view.grouped and view.note.text() == FINDING_PLACES
    assert [w.row.part for w in view.rows] == [s.part for s in rank_parts(page.scores, pair.a, pair.b)][:9]
    release.set()
    qtbot.waitUntil(lambda: page.places is not None and view.grouped, timeout=SLOW)
    assert "lie on the bird" in page.status.text() and view.note.isVisible() == (not view.bird_rows)
    assert (run_copy.run / PART_PLACES).is_file()


def test_keys_move_through_pairs_and_rows(compare, window, qtbot, toy_parts):
    page = compare
    show_scores(window, qtbot, page)
    first = page.confusion.pairs[0]
    qtbot.waitUntil(lambda: bool(page.separation_view.rows) and (page.pair.a, page.pair.b) == (first.a, first.b),
                    timeout=SLOW)
    second = page.confusion.pairs[1]
    with qtbot.waitSignal(page.compare_changed, timeout=SLOW,
                          check_params_cb=lambda s: s.ready and (s.a, s.b) == (second.a, second.b)):
        qtbot.keyClick(page.pairs, Qt.Key.Key_Right)
    assert page.pairs.currentRow() == 1
    with qtbot.waitSignal(page.compare_changed, timeout=SLOW,
                          check_params_cb=lambda s: s.ready and (s.a, s.b) == (first.a, first.b)):
        qtbot.keyClick(page.pairs, Qt.Key.Key_Left)
    assert page.pairs.currentRow() == 0
    view = page.separation_view
    with qtbot.waitSignal(page.row_selected, timeout=2000, check_params_cb=lambda s: s.row == 2):
        qtbot.keyClick(page.pairs, Qt.Key.Key_3)
    assert view.current == 2 and view.rows[2].selected and not view.rows[0].selected
    assert view.rows[2].row.label in view.detail.title.text()
    big = view.detail.labels[0].pixmap()
    assert big.width() > view.rows[2].labels_a[0].pixmap().width()  # the selected part's crops, larger
    qtbot.keyClick(page.pairs, Qt.Key.Key_9 if len(view.rows) < 9 else Qt.Key.Key_1)  # no such row: nothing moves
    assert view.current == (2 if len(view.rows) < 9 else 0)

    # one species against itself: nothing to rank, and the view says why
    page.set_pair(first.a, first.a)
    assert not view.rows and "Pick two different species" in view.title.text()
    show_pair(qtbot, page, first.a, first.b)  # from the cache

    # a name given elsewhere (Explore's legend) shows when the page comes back
    part = view.rows[0].row.part
    names_file = Path(page.run.path) / PART_NAMES
    assert not names_file.exists()  # the session's toy run is shared: it is left as it was found
    set_part_name(str(page.run.path), part, "crown")
    window.set_workspace("Library")
    window.set_workspace("Compare")
    assert view.rows[0].name.text() == "<b>crown</b>"
    names_file.unlink()


class GuideDialogs:
    """The guide's dialogs, patched: the folder it asks for, the answer to "open index.html?", the URLs opened."""

    def __init__(self, monkeypatch, out: Path) -> None:
        self.out = out
        self.opened: list[str] = []
        self.questions: list[str] = []
        monkeypatch.setattr(guide_module.QFileDialog, "getExistingDirectory", lambda *a, **k: str(self.out))
        monkeypatch.setattr(guide_module.QMessageBox, "question",
                            lambda _parent, _title, text, *a, **k: self.questions.append(text)
                            or QMessageBox.StandardButton.Open)
        monkeypatch.setattr(guide_module.QDesktopServices, "openUrl",
                            lambda url: self.opened.append(url.toLocalFile()) or True)


def test_save_field_guide(compare, window, qtbot, toy_parts, tmp_path, monkeypatch, stall_probe):
    from html.parser import HTMLParser

    page = compare
    show_scores(window, qtbot, page)
    control = page.guide
    assert control.button.isEnabled()
    dialogs = GuideDialogs(monkeypatch, tmp_path / "guide")
    dialogs.out.mkdir()
    stall_probe.start()
    with qtbot.waitSignal(control.guide_changed, timeout=SLOW, check_params_cb=lambda s: s.status == FINISHED):
        control.all_action.trigger()
        assert not control.button.isEnabled() and control.cancel_button.isVisible()
    stall_probe.assert_responsive(0.1)
    result = control.state.result
    classes = list(page.run.classes)
    assert len(result.pages) == len(classes) and result.index.is_file()
    assert dialogs.opened == [str(result.index)] and len(dialogs.questions) == 1
    for html_file in (result.index, *result.pages):
        HTMLParser().feed(Path(html_file).read_text(encoding="utf-8"))  # parses
    assert control.button.isEnabled() and not control.cancel_button.isVisible()
    assert str(result.out) in control.status.text()

    # only the pair on screen
    a, b = page.pair.a, page.pair.b
    dialogs.out = tmp_path / "pair"
    dialogs.out.mkdir()
    assert all(classes[c].replace("_", " ") in control.pair_action.text() for c in (a, b))
    with qtbot.waitSignal(control.guide_changed, timeout=SLOW, check_params_cb=lambda s: s.status == FINISHED):
        control.pair_action.trigger()
    assert len(control.state.result.pages) == 2


def test_cancel_the_field_guide(compare, window, qtbot, toy_parts, tmp_path, monkeypatch):
    """Cancel stops the engine's generator: the job waits after its first event until the GUI has cancelled, so
    the test does not race the worker."""
    import engine.fieldmarks as fieldmarks

    page = compare
    show_scores(window, qtbot, page)
    dialogs = GuideDialogs(monkeypatch, tmp_path / "guide")
    dialogs.out.mkdir()
    cancelled, closed = threading.Event(), threading.Event()
    real = fieldmarks.write_guide

    def paused(*args, **kwargs):
        job = real(*args, **kwargs)
        try:
            for event in job:
                yield event
                if type(event).__name__ == "Progress":
                    cancelled.wait(30)  # the GUI cancels on the first progress; the next check stops the job
        finally:
            job.close()
            closed.set()

    monkeypatch.setattr(fieldmarks, "write_guide", paused)
    control = page.guide
    control.guide_changed.connect(lambda s: s.status == "running" and s.total and control.cancel())
    with qtbot.waitSignal(control.guide_changed, timeout=SLOW, check_params_cb=lambda s: s.status == CANCELLED):
        control.all_action.trigger()
        qtbot.waitUntil(lambda: control.state.status == "cancelling", timeout=SLOW)
        assert not control.cancel_button.isEnabled()
        cancelled.set()
    assert closed.wait(10)
    assert control.state.result is None and not dialogs.opened and not (dialogs.out / "index.html").exists()
    assert "cancelled" in control.status.text() and control.button.isEnabled()


def test_mcloss_keeps_the_per_class_view(window, qtbot, toy):
    open_toy(window, qtbot, toy)
    page = window.workspaces.compare
    window.set_workspace("Compare")
    qtbot.waitUntil(lambda: page.confusion is not None, timeout=SLOW)
    assert page.view == "columns" and page.views.currentWidget() is page.scroll
    assert "MC-Loss run: its maps belong to one class each" in page.mode_label.text()
    assert page.top_n_label.text() == "Crops per part" and page.top_n.value() == 6
    assert page.guide.button.isEnabled() and "separating parts need a `parts` run" in page.guide.button.toolTip()
    qtbot.keyClick(page.pairs, Qt.Key.Key_Right)  # Left / Right move through the pairs here too
    assert page.pairs.currentRow() == 1
