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
