"""The field-guide sheet (issue 13, item 4): `fieldmark guide` on the toy-birds parts run writes pages that an HTML
parser reads, whose every image exists, and whose section on each confusable pair names the differing mark first;
the parts on the bird are ranked and the background / habitat parts listed below them (issue 23; `--all-parts`
ranks all together); a run without shared parts still gets its pages and says why there are no separating parts;
the job stops when closed."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from engine.cli import main
from engine.events import Progress, drive
from engine.fieldmarks import collect_part_scores, part_label, rank_parts, read_part_names, set_part_name, write_guide
from engine.errors import Cancelled, ConfigError
from engine.fieldmarks.guide import NO_PART_ON_BIRD, PLACES_STAGE
from engine.fieldmarks.onbird import PartPlace, places_doc, saved_places, split_by_place
from engine.runs import PART_NAMES, PART_PLACES, write_part_places
from engine.toybirds.dataset import load_truth

from tests.app.toyrun import mark_part, toy_parts_run, toy_run

VOID = {"img", "meta", "br", "hr", "link", "input"}


class Page(HTMLParser):
    """Reads a page strictly enough for a test: every opened element closed in order; img sources, links,
    and the text of each <h3> section's first table row."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert not page.errors and not page.stack, (path, page.errors, page.stack)
    return page


def section_vs(page_text: str, other_page: str) -> str | None:
    """The HTML of the section "vs <other species>" of a species page."""
    m = re.search(r'<h3>vs <a href="' + re.escape(other_page) + r'">.*?</h3>(.*?)(?=<h3>|</div>)', page_text, re.S)
    return m.group(1) if m else None


def first_part_vs(page_text: str, other_page: str) -> str | None:
    """The part named in the first row of the separation table of the section "vs <other species>" (the ranked
    parts; the background / habitat rows are not ranked rows)."""
    section = section_vs(page_text, other_page)
    row = re.search(r"<tr><td><span class=\"swatch\"[^>]*></span>(.*?)</td>", section or "")
    return row.group(1) if row else None


def ranked_rows(section: str) -> list[str]:
    """The names of the ranked rows (with crops) of a section's table, in order."""
    return re.findall(r"<tr><td><span class=\"swatch\"[^>]*></span>(.*?)</td>", section)


def background_rows(section: str) -> list[tuple[str, str, str]]:
    """(name, d′, on-bird share) of the background / habitat rows of a section's table, in order."""
    return re.findall(r'<tr class="background"><td><span class="swatch"[^>]*></span>(.*?)</td><td><span '
                      r'class="bar"[^>]*></span> (-?[0-9.]+)</td><td>(.*?)</td>', section)


@pytest.fixture(scope="module")
def guide(tmp_path_factory):
    t = toy_parts_run(tmp_path_factory.getbasetemp())
    truth = load_truth(t.data)
    scores = drive(collect_part_scores(t.run, t.data))
    # name each part after the body parts of the marks it sits on (by location, the ranking test's rule)
    sits_on: dict[int, list[str]] = {}
    for a, b, mark in truth.pairs:
        sits_on.setdefault(mark_part(scores, truth, a, b, mark)[0], []).append(truth.marks[mark].part)
    saved = read_part_names(t.run)
    for k in range(scores.parts):
        set_part_name(t.run, k, " + ".join(sits_on.get(k, [])) or f"other {k + 1}")
    out = tmp_path_factory.mktemp("guide") / "sheet"
    # the session's toy run is shared: another test may have saved its on-bird shares already; drop them so that
    # the guide's own pass over the training photos runs here (whatever order the tests run in)
    (Path(t.run) / PART_PLACES).unlink(missing_ok=True)
    events = []
    result = drive(write_guide(t.run, t.data, out), events.append)
    yield t, truth, scores, result, events
    for k in range(scores.parts):
        set_part_name(t.run, k, saved.get(k, ""))
    if not saved:  # the session's toy run is shared: left as it was found, with no names file
        (Path(t.run) / PART_NAMES).unlink(missing_ok=True)


def test_pages_parse_and_every_image_exists(guide):
    t, truth, scores, result, events = guide
    assert [e.done for e in events if isinstance(e, Progress) and e.stage == "guide"] == list(range(9))
    assert len(result.pages) == len(truth.classes) and result.index.is_file()
    index = parse(result.index)
    assert sorted(index.links) == sorted(p.name for p in result.pages)
    for page in result.pages:
        parsed = parse(page)
        assert parsed.images, page
        for src in parsed.images:
            assert not src.startswith(("/", "http", "data:")), src  # relative links, beside the pages
            assert (page.parent / src).is_file(), src
        for href in parsed.links:
            assert (page.parent / href).is_file(), href
    css = result.pages[0].read_text()
    assert "@media print" in css and "page-break-after: always" in css


def test_each_pair_names_the_differing_mark_first(guide):
    t, truth, scores, result, events = guide
    # the on-bird shares were computed on the training photos (a pass of its own) and saved in the run folder
    assert any(isinstance(e, Progress) and e.stage == PLACES_STAGE and e.done == e.total for e in events)
    places = saved_places(t.run)
    assert places is not None and len(places) == scores.parts
    pages = {int(p.name[:3]) - 1: p for p in result.pages}
    names = read_part_names(t.run)
    firsts = []
    for a, b, mark in truth.pairs:
        text = pages[a].read_text(encoding="utf-8")
        section = section_vs(text, pages[b].name)
        assert section is not None, (a, b)  # the partner is among the nearest confusable species
        # the page shows the run's ranking of the parts on the bird, then the background / habitat parts
        bird, background = split_by_place(rank_parts(scores, a, b), places)
        assert ranked_rows(section) == [part_label(s.part, names) for s in bird[:3]]
        assert [r[0] for r in background_rows(section)] == [part_label(s.part, names) for s in background]
        assert ("background / habitat:" in section) == bool(background)
        if bird:  # the top part's name says which marks it sits on
            firsts.append((truth.marks[mark].part, ranked_rows(section)[0]))
    assert sum(where in named.split(" + ") for where, named in firsts) >= 3, firsts


def test_guide_command_for_some_species_and_a_run_without_parts(guide, tmp_path_factory, tmp_path, capsys):
    t, truth, *_ = guide
    name = truth.classes[3].name
    assert main(["guide", str(t.run), str(t.data), "--out", str(tmp_path / "one"), "--species", name, "--json",
                 "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [Path(p).name for p in out["pages"]] == [f"004_{name}.html"]
    assert main(["guide", str(t.run), str(t.data), "--out", str(tmp_path / "x"), "--species", "Dodo"]) == 2
    assert "'Dodo' is not a class" in capsys.readouterr().err

    mc = toy_run(tmp_path_factory.getbasetemp())  # MC-Loss
    result = drive(write_guide(mc.run, mc.data, tmp_path / "mc"))
    for page in result.pages:
        parsed = parse(page)
        assert all((page.parent / src).is_file() for src in parsed.images) and parsed.images
        assert "separating parts need a `parts` run" in page.read_text()
        assert "<table" not in page.read_text()


def test_the_guide_stops_between_species_when_closed(guide, tmp_path):
    t, *_ = guide
    job = write_guide(t.run, t.data, tmp_path / "stop")
    for event in job:
        if isinstance(event, Progress) and event.stage == "guide" and event.done == 2:
            break
    job.close()
    assert len(list((tmp_path / "stop").glob("*.html"))) == 2  # two pages, no index


def test_should_stop_cancels_between_pages(guide, tmp_path):
    t, *_ = guide
    out = tmp_path / "s"

    def one_page_written() -> bool:
        return len(list(out.glob("*.html"))) >= 1

    with pytest.raises(Cancelled, match="after 1 of 8 pages"):
        drive(write_guide(t.run, t.data, out, should_stop=one_page_written))
    assert len(list(out.glob("*.html"))) == 1 and not (out / "index.html").exists()


def test_a_file_is_no_guide_folder(guide, tmp_path):
    t, *_ = guide
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        drive(write_guide(t.run, t.data, tmp_path / "f"))


@pytest.fixture
def run_copy(guide, tmp_path):
    """A private copy of the toy parts run (its on-bird shares are written by hand here)."""
    import shutil

    t, *_ = guide
    run = tmp_path / "run"
    shutil.copytree(t.run, run)
    (run / PART_PLACES).unlink(missing_ok=True)
    return run


def test_background_parts_are_listed_below_with_their_figures_and_all_parts_ranks_together(guide, run_copy,
                                                                                         tmp_path, capsys):
    t, truth, scores, *_ = guide
    a, b, _ = truth.pairs[0]
    ranked = rank_parts(scores, a, b)
    top, second = ranked[0].part, ranked[1].part
    # by hand: the pair's best-separating part lies on the background (20 %), another is never active
    never = ranked[2].part
    places = [PartPlace(k, 0.2 if k == top else None if k == never else 0.8, None, 0 if k == never else 30, "box")
              for k in range(scores.parts)]
    write_part_places(run_copy, places_doc(places, "train", 100, str(t.data)))
    names = read_part_names(run_copy)
    species = [truth.classes[a].name, truth.classes[b].name]
    events = []
    result = drive(write_guide(run_copy, t.data, tmp_path / "grouped", species), events.append)
    assert not any(isinstance(e, Progress) and e.stage == PLACES_STAGE for e in events)  # read, not computed
    page_a, page_b = sorted(result.pages)
    section = section_vs(page_a.read_text(encoding="utf-8"), page_b.name)
    assert ranked_rows(section)[0] == part_label(second, names)  # the best part on the bird comes first
    assert part_label(top, names) not in ranked_rows(section)
    rows = background_rows(section)
    assert [r[0] for r in rows] == [part_label(s.part, names) for s in ranked if s.part in (top, never)]
    figures = {r[0]: (r[1], r[2]) for r in rows}
    assert figures[part_label(top, names)] == (f"{ranked[0].separation:.2f}", "20 %")
    assert figures[part_label(never, names)][1] == "–"
    assert section.index("background / habitat:") > section.index(ranked_rows(section)[-1])
    parse(page_a)
    index = result.index.read_text(encoding="utf-8")
    assert f"{scores.parts - 2} of {scores.parts} parts lie on the bird" in index

    # --all-parts: one ranking, no background group
    assert main(["guide", str(run_copy), str(t.data), "--out", str(tmp_path / "all"), "--species", *species,
                 "--all-parts", "--device", "cpu"]) == 0
    capsys.readouterr()
    section = section_vs((tmp_path / "all" / page_a.name).read_text(encoding="utf-8"), page_b.name)
    assert ranked_rows(section) == [part_label(s.part, names) for s in ranked[:3]]
    assert not background_rows(section) and "background / habitat" not in section

    # no part on the bird: the table says so and lists every part as background, best first
    write_part_places(run_copy, places_doc([PartPlace(k, 0.1, None, 30, "box") for k in range(scores.parts)],
                                           "train", 100, str(t.data)))
    result = drive(write_guide(run_copy, t.data, tmp_path / "none", species))
    text = sorted(result.pages)[0].read_text(encoding="utf-8")
    section = section_vs(text, page_b.name)
    assert html.escape(NO_PART_ON_BIRD) in section and not ranked_rows(section)
    assert [r[0] for r in background_rows(section)] == [part_label(s.part, names) for s in ranked]
    assert {r[2] for r in background_rows(section)} == {"10 %"}
    assert html.escape(NO_PART_ON_BIRD) in result.index.read_text(encoding="utf-8")


def test_the_guide_computes_missing_shares_once_and_stops_during_that_pass(guide, run_copy, tmp_path):
    t, truth, *_ = guide
    job = write_guide(run_copy, t.data, tmp_path / "stop", [])
    for event in job:  # closing the guide during the pass over the training photos stops it, nothing saved
        if isinstance(event, Progress) and event.stage == PLACES_STAGE and event.done:
            break
    job.close()
    assert not (run_copy / PART_PLACES).exists() and not (tmp_path / "stop").exists()
    with pytest.raises(Cancelled, match="part scores stopped"):
        drive(write_guide(run_copy, t.data, tmp_path / "cancel", should_stop=lambda: True))
    events = []
    drive(write_guide(run_copy, t.data, tmp_path / "once", [truth.classes[0].name]), events.append)
    assert any(isinstance(e, Progress) and e.stage == PLACES_STAGE for e in events)
    assert saved_places(run_copy) is not None
