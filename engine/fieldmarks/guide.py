"""The field-guide sheet: one printable HTML page per species and an index, written from a run and its data folder
(``fieldmark guide``, the app's "Save field guide…").

Each species page shows:

- its typical photo: the test photo of the species the run is most sure of (highest probability of the right
  class), with the run's parts drawn on it in their colours (:mod:`.palette`) and names (:mod:`.names`);
- its one to three nearest confusable species (most errors between the two first; where there are none, the
  species the run finds most alike, by the mean probability each gives the other), and for each the parts on the
  bird that separate the pair best (:func:`.separation.rank_parts`) as crop pairs with their separation d′, then
  the background / habitat parts (:mod:`.onbird`: their peak seldom on the bird) under their own heading with
  their d′ and on-bird share; ``all_parts`` (``fieldmark guide --all-parts``) ranks all parts together instead;
- the run's test accuracy for the species and its most common confusions.

Images are JPEG files in ``images/`` beside the pages, linked relatively, so the folder opens in any browser
offline and can be copied as a whole; the CSS prints one species per page. Every file is written atomically.
A run without shared parts (MC-Loss, CE, TASN) gets the photo, accuracy and confusions, and a line saying that
separating parts need a ``parts`` run.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator

import cv2
import numpy as np

from engine.data.imageio import load_image
from engine.data.records import DataReport
from engine.data.transforms import Preprocessing
from engine.errors import Cancelled, ConfigError, DataError, DecodeError
from engine.events import Message, Progress, relay
from engine.fieldmarks.names import part_label
from engine.fieldmarks.onbird import ON_BIRD_MIN, PartPlace, compute_places, split_by_place
from engine.fieldmarks.palette import part_colour, part_hex
from engine.fieldmarks.separation import (NOT_PARTS, PartScores, collect_part_scores, confusion, labelled_samples,
                                          nearest_species, open_data, rank_parts)
from engine.fileio import atomic_write_bytes, atomic_write_text
from engine.maps.explain import predict_probs, resolve_class
from engine.maps.parts import crop
from engine.models.shared_parts import has_shared_parts
from engine.runs import LoadedRun, load_run, read_part_names

log = logging.getLogger(__name__)

IMAGES = "images"
PHOTO_SIDE = 480  # the typical photo's longer side on the page (small photos are enlarged, for the labels)
CROP_SIDE = 112
NEIGHBOURS = 3  # nearest confusable species per page
TOP_PARTS = 3  # separating parts per pair
CROPS = 3  # crops per species and part
BAR_FULL = 4.0  # the d′ of a full bar (bars share one scale on every page; larger d′ are drawn full)
PLACES_STAGE = "on-bird shares"  # the Progress stage of the pass over the training photos that finds them
BACKGROUND = "background / habitat"
NO_PART_ON_BIRD = (f"No part of this run lies on the bird: none has its peak on the bird on at least "
                   f"{100 * ON_BIRD_MIN:.0f} % of its active training photos, so all are listed as {BACKGROUND}.")


@dataclass
class GuideResult:
    out: Path
    pages: list[Path]
    index: Path


# ----------------------------------------------------------------------------------------------- the pass
def _predictions_only(run: LoadedRun, report: DataReport, split: str,
                      batch_size: int = 16) -> Generator[Progress | Message, None, PartScores]:
    """Class probabilities of every ``split`` photo for a run without shared parts: :class:`PartScores` with no
    parts (K = 0)."""
    report, samples = yield from labelled_samples(run, report, split)
    pp = Preprocessing.from_dict(run.preprocessing)
    labels, paths, probs = [], [], []
    yield Progress("predictions", 0, len(samples))
    for start in range(0, len(samples), batch_size):
        batch = []
        for s in samples[start:start + batch_size]:
            try:
                batch.append((s, load_image(s.path).rgb))
            except DecodeError as exc:
                yield Message("warning", f"{exc.path}: {exc.reason}; left out of the guide")
        if batch:
            probs.append(predict_probs(run.model, [img for _, img in batch], pp))
            labels += [s.label for s, _ in batch]
            paths += [s.path for s, _ in batch]
        yield Progress("predictions", min(start + batch_size, len(samples)), len(samples))
    if not labels:
        raise DataError(f"no {split} image of {report.root!r} could be read: check the files")
    p = np.concatenate(probs)
    n = len(labels)
    return PartScores(list(run.classes), np.array(labels), p.argmax(1), paths, np.zeros((n, 0, len(run.classes)),
                      np.float32), np.zeros((n, 0, 4)), np.zeros((n, 0), bool), np.zeros((n, 0, 2)), p,
                      run_dir=str(run.run_dir))


# ----------------------------------------------------------------------------------------------- images
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:60] or "species"


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB
        raise DataError("OpenCV could not encode a guide image as JPEG")
    return enc.tobytes()


def draw_parts(rgb: np.ndarray, boxes: np.ndarray, centres: np.ndarray, present: np.ndarray,
               names: dict[int, str], side: int = PHOTO_SIDE) -> np.ndarray:
    """The photo scaled to ``side`` (longer side) with each active part's box, centroid dot and label in the
    part's colour (:func:`.palette.part_colour`)."""
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    img = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))),
                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    thick = max(2, round(side / 200))
    for k in np.flatnonzero(present):
        colour = part_colour(int(k))
        x0, y0, x1, y1 = ((boxes[k] + 0.5) * s).round().astype(int).tolist()
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, thick, cv2.LINE_AA)
        cx, cy = (centres[k] * s).round().astype(int).tolist()
        cv2.circle(img, (cx, cy), thick * 3, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(img, (cx, cy), thick * 2, colour, -1, cv2.LINE_AA)
        label = part_label(int(k), names)
        scale = side / 900
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        tx, ty = min(max(x0, 0), img.shape[1] - tw - 4), max(y0 - 4, th + 4)
        cv2.rectangle(img, (tx, ty - th - 4), (tx + tw + 4, ty + base), colour, -1)
        dark = sum(colour) < 380  # white text on the darker colours
        cv2.putText(img, label, (tx + 2, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255) if dark else (0, 0, 0), 1, cv2.LINE_AA)
    return img


class _Images:
    """Writes the page images under ``out/images`` once each, and decodes each photo once."""

    def __init__(self, out: Path):
        self.out = out
        self.cache: dict[str, np.ndarray] = {}

    def photo(self, path: str) -> np.ndarray:
        if path not in self.cache:
            if len(self.cache) > 64:
                self.cache.clear()
            self.cache[path] = load_image(path).rgb
        return self.cache[path]

    def save(self, name: str, rgb: np.ndarray) -> str:
        atomic_write_bytes(self.out / IMAGES / name, _jpeg(rgb))
        return f"{IMAGES}/{name}"


# ----------------------------------------------------------------------------------------------- pages
CSS = """
body { font-family: Georgia, 'Times New Roman', serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.8em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.4em; }
.figure { color: #555; } .note { color: #555; font-style: italic; }
table.parts { border-collapse: collapse; margin: 0.5em 0 1em; }
table.parts td, table.parts th { padding: 0.3em 0.6em; vertical-align: middle; text-align: left; }
table.parts tr { border-top: 1px solid #ddd; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #444; margin-right: 0.4em;
          vertical-align: -0.1em; }
.bar { display: inline-block; height: 0.7em; background: #0072b2; vertical-align: middle; }
.crops img { width: 72px; height: 72px; margin: 1px; border: 1px solid #999; }
table.parts tr.group th { font-weight: normal; font-style: italic; color: #555; padding-top: 0.6em; }
table.parts tr.background { color: #666; } table.parts tr.background .bar { background: #999; }
img.typical { max-width: 100%; border: 1px solid #999; }
ul.legend { list-style: none; padding: 0; columns: 2; }
nav { margin-bottom: 1em; font-size: 0.9em; }
@media print {
  nav { display: none; }
  .species { page-break-after: always; break-after: page; }
  body { margin: 0; max-width: none; }
}
"""


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}"
            f"</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def _accuracy(m: np.ndarray, c: int) -> tuple[int, int]:
    return int(m[c, c]), int(m[c].sum())


def _confusions_html(m: np.ndarray, c: int, classes: list[str], pages: dict[int, str]) -> str:
    wrong = [(int(m[c, j]), j) for j in range(len(classes)) if j != c and m[c, j] > 0]
    taken = [(int(m[j, c]), j) for j in range(len(classes)) if j != c and m[j, c] > 0]
    if not wrong and not taken:
        return "<p>No test photo of this species was taken for another, nor another for it.</p>"
    items = [f"<li>{n} taken for {_link(j, classes, pages)}</li>" for n, j in sorted(wrong, key=lambda t: -t[0])[:3]]
    items += [f"<li>{n} of {_link(j, classes, pages)} taken for this species</li>"
              for n, j in sorted(taken, key=lambda t: -t[0])[:3]]
    return "<ul>" + "".join(items) + "</ul>"


def _link(j: int, classes: list[str], pages: dict[int, str]) -> str:
    name = html.escape(classes[j])
    return f'<a href="{html.escape(pages[j])}">{name}</a>' if j in pages else name


def _share(place: PartPlace | None) -> str:
    return "–" if place is None or place.share is None else f"{100 * place.share:.0f} %"


def _species_page(c: int, scores: PartScores, m: np.ndarray, names: dict[int, str], images: _Images,
                  pages: dict[int, str], method: str, places: list[PartPlace] | None = None) -> str:
    classes = scores.classes
    slug = Path(pages[c]).stem
    mine = scores.of_class(c)
    right, total = _accuracy(m, c)
    parts = scores.parts > 0
    body = ['<div class="species">', '<nav><a href="index.html">All species</a></nav>',
            f"<h1>{html.escape(classes[c])}</h1>",
            f'<p class="figure">Test accuracy: {right} of {total} photos ({100 * right / max(total, 1):.0f}%).</p>']
    if len(mine):
        best = int(mine[np.argmax(scores.probabilities[mine, c])])
        rgb = images.photo(scores.paths[best])
        if parts:
            shown = draw_parts(rgb, scores.boxes[best], scores.centres[best], scores.present[best], names)
        else:
            shown = draw_parts(rgb, np.zeros((0, 4)), np.zeros((0, 2)), np.zeros(0, bool), names)
        src = images.save(f"{slug}_typical.jpg", shown)
        body.append(f'<h2>Typical photo</h2>\n<img class="typical" src="{src}" alt="typical photo of '
                    f'{html.escape(classes[c])}">')
        body.append(f'<p class="figure">{html.escape(Path(scores.paths[best]).name)}: the run gives it '
                    f'{100 * scores.probabilities[best, c]:.0f}% {html.escape(classes[c])}.</p>')
        if parts:
            off = {p.part for p in places or () if not p.on_bird}
            tag = f' <span class="note">({BACKGROUND})</span>'
            legend = "".join(f'<li><span class="swatch" style="background:{part_hex(k)}"></span>'
                             f"{html.escape(part_label(k, names))}{tag if k in off else ''}</li>"
                             for k in range(scores.parts) if scores.present[best, k])
            body.append(f'<ul class="legend">{legend}</ul>')
    body.append("<h2>Most common confusions</h2>")
    body.append(_confusions_html(m, c, classes, pages))
    body.append("<h2>Telling it from similar species</h2>")
    if not parts:
        body.append(f'<p class="note">This is a {html.escape(method)} run: {html.escape(NOT_PARTS)}. Train with '
                    "<code>--method parts</code> to see the separating parts here.</p>")
    for b, errors, sim in nearest_species(scores, c, NEIGHBOURS):
        why = (f"{errors} test photos confused between the two" if errors
               else f"no photo confused; the run finds them alike (similarity {sim:.2f} of 2)")
        body.append(f"<h3>vs {_link(b, classes, pages)}</h3>\n<p class=\"figure\">{why}.</p>")
        if not parts or not len(scores.of_class(b)) or not len(mine):
            continue
        body.append(_separation_table(c, b, scores, names, images, slug, places))
    body.append("</div>")
    return "\n".join(body)


def _separation_table(a: int, b: int, scores: PartScores, names: dict[int, str], images: _Images,
                      slug: str, places: list[PartPlace] | None = None) -> str:
    """The pair's best-separating parts with crops of both species; with ``places``, the parts on the bird only,
    then the background / habitat parts under their heading with their figures (d′, on-bird share)."""
    ranked = rank_parts(scores, a, b, CROPS)
    bird, background = split_by_place(ranked, places)
    where = {p.part: p for p in places or ()}
    cols = 5 if places is not None else 4
    head = "<th>on the bird</th>" if places is not None else ""
    rows = ['<table class="parts">',
            f"<tr><th>part</th><th>separation d′</th>{head}<th>{html.escape(scores.classes[a])}</th>"
            f"<th>{html.escape(scores.classes[b])}</th></tr>"]
    if places is not None and not bird:
        rows.append(f'<tr><td colspan="{cols}" class="note">{html.escape(NO_PART_ON_BIRD)}</td></tr>')
    for r in bird[:TOP_PARTS]:
        cells = []
        for which, examples in (("a", r.examples_a), ("b", r.examples_b)):
            imgs = []
            for n, i in enumerate(examples):
                cut = crop(images.photo(scores.paths[i]), tuple(scores.boxes[i, r.part]), CROP_SIDE)
                src = images.save(f"{slug}_vs{b + 1}_p{r.part + 1}_{which}{n + 1}.jpg", cut)
                imgs.append(f'<img src="{src}" alt="{html.escape(part_label(r.part, names))}, '
                            f'{html.escape(Path(scores.paths[i]).name)}">')
            cells.append(f'<td class="crops">{"".join(imgs)}</td>')
        share = f"<td>{_share(where.get(r.part))}</td>" if places is not None else ""
        rows.append(f"<tr>{_part_cells(r, names)}{share}{''.join(cells)}</tr>")
    if background:
        rows.append(f'<tr class="group"><th colspan="{cols}">{BACKGROUND}: parts whose peak is on the bird on '
                    f"fewer than {100 * ON_BIRD_MIN:.0f} % of their active training photos (or never active)"
                    "</th></tr>")
    for r in background:
        place = where.get(r.part)
        seen = ("never active on the training photos" if place is None or place.share is None else
                f"peak on the bird on {100 * place.share:.0f} % of its {place.active} active training photos")
        rows.append(f'<tr class="background">{_part_cells(r, names)}<td>{_share(place)}</td>'
                    f'<td colspan="2" class="note">{seen}</td></tr>')
    rows.append("</table>")
    return "\n".join(rows)


def _part_cells(r, names: dict[int, str]) -> str:
    """A ranked part's swatch and name, and its d′ as a bar with the figure."""
    width = min(max(0.0, r.separation), BAR_FULL) / BAR_FULL * 8
    return (f'<td><span class="swatch" style="background:{part_hex(r.part)}"></span>'
            f"{html.escape(part_label(r.part, names))}</td>"
            f'<td><span class="bar" style="width:{width:.2f}em"></span> {r.separation:.2f}</td>')


def _index(scores: PartScores, m: np.ndarray, pages: dict[int, str], run_name: str, parts: bool,
           places: list[PartPlace] | None = None) -> str:
    rows = []
    for c, page in sorted(pages.items()):
        right, total = _accuracy(m, c)
        rows.append(f'<li><a href="{html.escape(page)}">{html.escape(scores.classes[c])}</a> '
                    f'<span class="figure">({right} of {total} test photos right)</span></li>')
    note = "" if parts else f'<p class="note">{html.escape(NOT_PARTS)}.</p>'
    if parts and places is None:
        note = '<p class="note">All parts are ranked together (on the bird or not).</p>'
    elif parts:
        on = sum(p.on_bird for p in places)
        note = (f'<p class="note">{on} of {len(places)} parts lie on the bird (their peak on the bird on at least '
                f"{100 * ON_BIRD_MIN:.0f} % of their active training photos): they are ranked for each pair; the "
                f"others are listed below them as {BACKGROUND}.</p>" if on else
                f'<p class="note">{html.escape(NO_PART_ON_BIRD)}</p>')
    return (f"<h1>Field guide</h1>\n<p class=\"figure\">From the run {html.escape(run_name)}: "
            f"{len(scores.labels)} test photos of {len(scores.classes)} species.</p>\n{note}"
            f"<p>d′ (separation): how many standard deviations apart the two species sit on that part's "
            f"class scores alone; about 0 means the part looks alike on both.</p>\n<ul>{''.join(rows)}</ul>")


# ----------------------------------------------------------------------------------------------- the job
def _places_event(event: Progress | Message) -> Progress | Message:
    return Progress(PLACES_STAGE, event.done, event.total) if isinstance(event, Progress) else event


def write_guide(run: str | Path | LoadedRun, data: str | Path | DataReport, out: str | Path,
                species: list[str] | None = None, device: str = "cpu",
                should_stop: Callable[[], bool] | None = None, all_parts: bool = False
                ) -> Generator[Progress | Message, None, GuideResult]:
    """Write the field guide of ``run`` on ``data``'s test photos (the run's own split) to ``out``: one page per
    species (``species``: names, default all) and ``index.html``. A ``parts`` run's tables list the parts on the
    bird, then the background / habitat parts (the on-bird shares: read from the run folder, else computed on the
    training photos and saved, :func:`.onbird.compute_places`, as Progress("on-bird shares", ...)); ``all_parts``
    ranks all parts together and needs no shares. Yields the passes' Progress, then Progress("guide", done,
    total) per page. Closing the generator stops it between batches and pages; ``should_stop()`` turning true
    does too, with Cancelled (the pages written so far stay)."""
    loaded = run if isinstance(run, LoadedRun) else load_run(run, device)
    report = open_data(data)
    chosen = sorted({resolve_class(s, loaded.classes) for s in species}) if species else \
        list(range(len(loaded.classes)))
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{str(out)!r} is a file: give a folder for the guide")
    parts = has_shared_parts(loaded.model)
    places = None
    if parts and not all_parts:
        places = yield from relay(compute_places(loaded, report, device, should_stop), _places_event)
    if parts:
        scores = yield from collect_part_scores(loaded, report, "test", device, should_stop=should_stop)
    else:
        yield Message("info", f"{loaded.method} run: {NOT_PARTS}; the guide shows photos, accuracy and confusions")
        scores = yield from _predictions_only(loaded, report, "test")
    names = read_part_names(loaded.run_dir) if parts else {}
    m = confusion(scores)
    pages = {c: f"{c + 1:03d}_{_slug(scores.classes[c])}.html" for c in chosen}
    images = _Images(out)
    written = []
    yield Progress("guide", 0, len(chosen))
    for n, c in enumerate(chosen):
        if should_stop is not None and should_stop():
            raise Cancelled(f"field guide stopped after {n} of {len(chosen)} pages (in {out})")
        body = _species_page(c, scores, m, names, images, pages, loaded.method, places)
        atomic_write_text(out / pages[c], _page(f"{scores.classes[c]}: field guide", body))
        written.append(out / pages[c])
        yield Progress("guide", n + 1, len(chosen))
    index = out / "index.html"
    atomic_write_text(index, _page("Field guide", _index(scores, m, pages, Path(loaded.run_dir).name, parts, places)))
    return GuideResult(out, written, index)


__all__ = ["GuideResult", "write_guide", "draw_parts", "CSS", "BACKGROUND", "NO_PART_ON_BIRD", "PLACES_STAGE"]
