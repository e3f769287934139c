"""Part names (issue 13, item 2): saved in the run folder's part_names.json, atomically, checked on the way in,
and a damaged file is named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.errors import CheckpointError, ConfigError
from engine.export.crops import part_folder
from engine.fieldmarks import part_label, read_part_names, run_part_count, set_part_name, write_part_names
from engine.fileio import atomic_write_json
from engine.runs import PART_NAMES, RUN_FILES


def fake_run(folder: Path, method: str = "parts", parts: int = 4) -> Path:
    """A run folder as far as the names need it: its model.json (no weights)."""
    arch = {"name": "smallnet", "num_classes": 4, "xi": 3}
    if method == "parts":
        arch.update(head="parts", parts=parts, fine=False)
    atomic_write_json(folder / "model.json", {"format": "fieldmark-run", "format_version": 1, "method": method,
                                              "arch": arch, "classes": ["a", "b", "c", "d"]})
    return folder


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return fake_run(tmp_path / "run")


def test_a_run_without_names_has_none_and_labels_count_from_one(run):
    assert PART_NAMES in RUN_FILES
    assert read_part_names(run) == {}
    assert part_label(2, {}) == "part 3"
    assert part_label(2, {2: "crown"}) == "crown"
    assert part_folder(0, {}) == "part_1"  # export folders
    assert part_folder(1, {1: "wing bars"}) == "part_2_wing_bars"
    assert part_folder(1, {1: 'eye: "ring"?'}) == "part_2_eye___ring"


def test_names_round_trip_stripped_with_one_based_numbers_in_the_file(run):
    write_part_names(run, {0: "  crown ", 3: "tail"})
    assert read_part_names(run) == {0: "crown", 3: "tail"}
    doc = json.loads((run / PART_NAMES).read_text())
    assert doc["names"] == {"1": "crown", "4": "tail"}
    assert set_part_name(run, 1, "wing bars") == {0: "crown", 1: "wing bars", 3: "tail"}
    assert set_part_name(run, 0, "") == {1: "wing bars", 3: "tail"}  # an empty name removes the entry
    assert read_part_names(run) == {1: "wing bars", 3: "tail"}


@pytest.mark.parametrize("names, words", [
    ({4: "crown"}, ["part 5", "4 parts"]),
    ({-1: "crown"}, ["part 0", "4 parts"]),
    ({0: "x" * 41}, ["41 characters", "at most 40"]),
    ({0: "wing/bars"}, ["'wing/bars'", "path separator"]),
    ({0: "wing\\bars"}, ["path separator"]),
    ({0: "eye\nring"}, ["control character"]),
    ({0: "crown", 2: "Crown "}, ["parts 1 and 3", "'Crown'"]),
    ({0: 7}, ["7", "not text"]),
    ({"1": "crown"}, ["'1'", "0-based"]),
])
def test_bad_names_are_refused_naming_the_value_and_nothing_is_written(run, names, words):
    write_part_names(run, {0: "crown"})
    before = (run / PART_NAMES).read_bytes()
    with pytest.raises(ConfigError) as err:
        write_part_names(run, names)
    for w in words:
        assert w in str(err.value)
    assert (run / PART_NAMES).read_bytes() == before


def test_the_part_count_follows_the_method(tmp_path):
    assert run_part_count(fake_run(tmp_path / "p", "parts", parts=6)) == 6
    assert run_part_count(fake_run(tmp_path / "m", "mcloss")) == 3
    assert run_part_count(fake_run(tmp_path / "t", "tasn")) == 1
    assert run_part_count(fake_run(tmp_path / "r", "racnn")) == 2  # the squares of scales 2 and 3
    with pytest.raises(ConfigError, match="the run has 3 parts"):
        write_part_names(tmp_path / "m", {3: "tail"})
    with pytest.raises(CheckpointError, match="not a Fieldmark run folder"):
        write_part_names(tmp_path / "nothing", {0: "crown"})


@pytest.mark.parametrize("text, words", [
    ("{not json", ["damaged", "delete it"]),
    ('{"format": "other", "names": {}}', ["not a Fieldmark part-names file"]),
    ('{"format": "fieldmark-part-names", "version": 9, "names": {}}', ["version 9", "upgrade"]),
    ('{"format": "fieldmark-part-names", "version": 1, "names": {"x": "crown"}}', ["'x'", "not a part number"]),
    ('{"format": "fieldmark-part-names", "version": 1, "names": {"1": 5}}', ["part '1'", "5"]),
])
def test_a_damaged_file_raises_naming_it(run, text, words):
    (run / PART_NAMES).write_text(text)
    with pytest.raises(CheckpointError) as err:
        read_part_names(run)
    assert PART_NAMES in str(err.value)
    for w in words:
        assert w in str(err.value)


def test_the_write_is_atomic_a_failure_keeps_the_old_file(run, monkeypatch):
    write_part_names(run, {0: "crown"})

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_part_names(run, {0: "nape"})
    monkeypatch.undo()
    assert read_part_names(run) == {0: "crown"}
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []  # the temporary file is gone


# -- the name helper and the background / habitat parts (issue 23, item 2) -------------------------------------------
def keypoint_scores(parts: int = 3):
    """PartScores by hand: 4 training photos, two keypoints ("crown" at the top, "tail" at the bottom), every part
    active on every photo, part k's centroid next to "crown" for k even and next to "tail" for k odd."""
    import numpy as np

    from engine.fieldmarks import PartScores

    n, c = 4, 2
    kp = np.tile(np.array([[[10.0, 5.0, 1.0], [10.0, 90.0, 1.0]]]), (n, 1, 1))
    centres = np.array([[[12.0, 8.0] if k % 2 == 0 else [11.0, 85.0] for k in range(parts)]] * n)
    return PartScores(["a", "b"], np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), [f"{i}.jpg" for i in range(n)],
                      np.zeros((n, parts, c), np.float32), np.zeros((n, parts, 4)), np.ones((n, parts), bool),
                      centres, np.full((n, c), 0.5), kp, ["crown", "tail"])


def test_a_background_part_gets_no_body_part_name_and_says_why():
    from engine.fieldmarks import accepted_names
    from engine.fieldmarks.names import NEVER_ACTIVE, proposals_from
    from engine.fieldmarks.onbird import PartPlace

    scores = keypoint_scores(4)
    places = [PartPlace(0, 0.75, 0.8, 4, "box"), PartPlace(1, 0.5, None, 4, "foreground"),  # on the bird (>= 0.5)
              PartPlace(2, 0.25, 0.25, 4, "box"), PartPlace(3, 0.0, 0.0, 4, "box")]  # background / habitat
    got = proposals_from(scores, places)
    assert [(p.keypoint, p.count, p.images) for p in got[:2]] == [("crown", 4, 4), ("tail", 4, 4)]
    assert [p.reason for p in got[:2]] == ["", ""] and [p.on_bird for p in got] == [0.75, 0.5, 0.25, 0.0]
    for p, pct in ((got[2], 25), (got[3], 0)):
        assert p.keypoint == "" and p.share == 0.0 and p.count == 0 and p.images == 4  # nothing proposed
        assert p.reason == (f"background / habitat: its peak is on the bird on only {pct} % of its active training "
                            "photos")
    # without shares every part counts as on the bird (the vote alone)
    assert [p.keypoint for p in proposals_from(scores)] == ["crown", "tail", "crown", "tail"]

    # accepting: the background parts stay unnamed, with the reason in the notes; a name the user gave them stays
    names, notes = accepted_names(got, {})
    assert names == {0: "crown", 1: "tail"}
    notes_all = [f"part 3 stays unnamed: {got[2].reason}", f"part 4 stays unnamed: {got[3].reason}"]
    assert notes == notes_all
    names, notes = accepted_names(got, {3: "perch"})
    assert names == {0: "crown", 1: "tail", 3: "perch"} and notes == [f"part 3 stays unnamed: {got[2].reason}"]

    # a part never active: nothing proposed, and that reason (it counts as not on the bird, but is no habitat)
    never = [PartPlace(0, None, None, 0, "box")] + places[1:]
    scores.present[:, 0] = False
    first = proposals_from(scores, never)[0]
    assert (first.keypoint, first.images, first.reason) == ("", 0, NEVER_ACTIVE)
    assert accepted_names(proposals_from(scores, never), {})[1] == notes_all
