"""The field-guide sheet (issue 13, item 4): `fieldmark guide` on the toy-birds parts run writes pages that an HTML
parser reads, whose every image exists, and whose section on each confusable pair names the differing mark first;
a run without shared parts still gets its pages and says why there are no separating parts; the job stops when
closed."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from engine.cli import main
from engine.events import Progress, drive
from engine.fieldmarks import collect_part_scores, part_label, rank_parts, read_part_names, set_part_name, write_guide
from engine.errors import Cancelled, ConfigError
from engine.runs import PART_NAMES
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


def first_part_vs(page_text: str, other_page: str) -> str | None:
    """The part named in the first row of the separation table of the section "vs <other species>"."""
    m = re.search(r'<h3>vs <a href="' + re.escape(other_page) + r'">.*?</h3>(.*?)(?=<h3>|</div>)', page_text, re.S)
    if m is None:
        return None
    row = re.search(r"<tr><td><span class=\"swatch\"[^>]*></span>(.*?)</td>", m.group(1))
    return row.group(1) if row else None


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
    t, truth, scores, result, _ = guide
    pages = {int(p.name[:3]) - 1: p for p in result.pages}
    names = read_part_names(t.run)
    firsts = []
    for a, b, mark in truth.pairs:
        text = pages[a].read_text(encoding="utf-8")
        named = first_part_vs(text, pages[b].name)
        assert named is not None, (a, b)  # the partner is among the nearest confusable species
        # the page shows the run's ranking, and the top part's name says which marks it sits on
        assert named == part_label(rank_parts(scores, a, b)[0].part, names)
        firsts.append((truth.marks[mark].part, named))
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
