"""The bad-input corpus through every front door: the scan report, `fieldmark train`, `fieldmark explain` on every
file, `fieldmark predict`, `fieldmark export`. Nothing crashes; every broken file is reported with its reason;
every odd but valid image is used."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from engine import runs
from engine.maps.overlays import MAX_TILE_WIDTH, TILE
from engine.data import scan
from engine.data.imageio import read_image

from .conftest import run_cli
from .corpus import IS_ROOT


def rel(corpus, path: str | Path) -> str:
    return Path(path).relative_to(corpus.root).as_posix()


def test_scan_reports_every_bad_file_and_keeps_every_odd_image(corpus):
    report = scan(corpus.root, verify=True)
    reasons = {rel(corpus, s.path): s.reason for s in report.skipped}
    for name, reason in corpus.bad.items():
        assert reasons.get(name) == reason, (name, reasons.get(name))
    assert reasons.get(corpus.loop) == "symlink loop"
    assert set(reasons) == set(corpus.bad) | {corpus.loop}  # nothing else, and the folder named .jpg is no error
    used = sorted(rel(corpus, s.path) for s in report.samples)
    assert used == sorted(corpus.usable())
    assert report.classes == ["alpha", "bravo", "grive à tête", "solo"]
    assert any(n in note for n in corpus.notes for note in report.notes), report.notes
    result = run_cli("scan", corpus.root, "--verify", "--json")  # the CLI gives the same report
    assert result.code == 0
    listed = {rel(corpus, s["path"]): s["reason"] for s in json.loads(result.out)["skipped"]}
    assert listed == reasons


@pytest.mark.skipif(not IS_ROOT, reason="only root can read a mode-000 file; as a user it is in corpus.bad")
def test_mode_000_is_readable_by_root(corpus):
    """Root reads files whatever their mode, so chmod 000 cannot make an unreadable file here: the corpus simulates
    unreadability with a dangling symlink and a named pipe instead, and expects the mode-000 file to be used."""
    assert "bravo/locked.jpg" in corpus.usable()


def test_train_on_the_corpus(corpus, corpus_run):
    run, result = corpus_run
    assert result.code == 0, result.err
    for name in corpus.decode_only:  # found while decoding: the fast scan cannot see them
        assert f"{Path(name).name}: {corpus.bad[name]}, skipped" in result.err
    # the fast scan reports all but those, plus the symlink loop
    assert f"{len(corpus.bad) - len(corpus.decode_only) + 1} files skipped by the scan" in result.err
    meta = runs.read_meta(run)
    assert meta["epoch"] == 1 and meta["classes"] == ["alpha", "bravo", "grive à tête", "solo"]
    assert meta["data"]["skipped"] == len(corpus.bad) + 1
    counts = meta["data"]["counts"]
    assert counts["solo"] == {"train": 1, "test": 0}


def test_explain_every_file(corpus, corpus_run, tmp_path):
    run, _ = corpus_run
    out = tmp_path / "maps"
    result = run_cli("explain", run, *corpus.entries(), "--out", out)
    assert result.code == 0, result.err
    errs = result.err_lines()
    for name, reason in corpus.bad.items():
        assert f"skipped {corpus.root / name}: {reason}" in errs, (name, errs)
    assert len(errs) == len(corpus.bad), errs  # one line per unreadable file, nothing else
    records = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert sorted(rel(corpus, r["image"]) for r in records) == sorted(corpus.usable())
    for r in records:
        m = r["maps"][0]
        assert (out / m["npy"]).stat().st_size > 0 and all(p["peak"] is not None for p in m["parts"])
        strip = read_image(out / m["png"])  # bounded whatever the photo's shape (a 20000 x 2 sliver included)
        assert strip.shape[0] == TILE + 20 and strip.shape[1] <= (len(m["parts"]) + 1) * (MAX_TILE_WIDTH + 2) + 46
    wide = next(r for r in records if r["image"].endswith("wide 20000px.jpg"))
    assert max(wide["size"]) <= 4096  # reduced on decoding, never a 20000 px array
    for name, shown in corpus.turned.items():  # upright, as the EXIF orientation says
        assert next(r["size"] for r in records if rel(corpus, r["image"]) == name) == list(shown)
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_predict_the_corpus_folder(corpus, corpus_run):
    run, _ = corpus_run
    result = run_cli("predict", run, corpus.root, "--json")
    assert result.code == 0, result.err
    got = json.loads(result.out)
    assert sorted(rel(corpus, p["path"]) for p in got["predictions"]) == sorted(corpus.usable())
    skipped = {rel(corpus, s["path"]): s["reason"] for s in got["skipped"]}
    assert skipped == {**corpus.bad, corpus.loop: "symlink loop"}


def test_export_the_corpus(corpus, corpus_run, tmp_path):
    run, _ = corpus_run
    out = tmp_path / "parts"
    result = run_cli("export", run, corpus.root, "--out", out, "--split", "all", "--crop-size", "32")
    assert result.code == 0, result.err
    errs = result.err_lines()
    for name, reason in corpus.bad.items():
        assert f"skipped {corpus.root / name}: {reason}" in errs, (name, errs)
    with open(out / "parts.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["image"] for r in rows} <= set(corpus.usable())
    coco = json.loads((out / "parts_coco.json").read_text(encoding="utf-8"))
    assert sorted(i["file_name"] for i in coco["images"]) == sorted(corpus.usable())
    for r in rows:
        assert (out / r["crop"]).stat().st_size > 0
    assert not list(out.rglob("*.tmp"))
