"""Part names everywhere a part is listed (issue 13, item 2): `fieldmark names` sets, clears and proposes them
(no body-part name for a background / habitat part, issue 23); export folders, parts.csv, the COCO keypoints and
`export --json` carry them; `predict --json` and `explain` show them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.events import drive
from engine.fieldmarks import propose_names, read_part_names, set_part_name
from engine.errors import DataError
from engine.toybirds.dataset import generate
from engine.training.config import TrainConfig
from engine.training.loop import train

from ..conftest import make_class_folders


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-part `parts` run on 3 toy species (one short epoch: what matters here is the plumbing)."""
    base = tmp_path_factory.mktemp("names")
    data = base / "birds"
    generate(data, classes=3, per_class=8, size=64, seed=0)
    cfg = TrainConfig(data=str(data), out=str(base / "run"), model="smallnet", method="parts", parts=3, epochs=1,
                      img_size=64, batch_size=8, device="cpu", cache_mb=64)
    drive(train(cfg))
    return data, base / "run"


def test_names_command_sets_clears_and_lists(tiny, capsys):
    _, run = tiny
    assert main(["names", str(run), "--set", "1=crown", "--set", "3= wing bars ", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parts"] == [{"part": 1, "part_name": "crown"}, {"part": 2, "part_name": None},
                            {"part": 3, "part_name": "wing bars"}]
    assert main(["names", str(run), "--clear", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == ["1\tpart 1", "2\tpart 2", "3\twing bars"]
    assert read_part_names(run) == {2: "wing bars"}
    assert main(["names", str(run), "--set", "4=tail"]) == 2
    assert "part 4 does not exist: the run has 3 parts" in capsys.readouterr().err
    assert main(["names", str(run), "--set", "crown"]) == 2
    assert "K=NAME" in capsys.readouterr().err
    assert main(["names", str(run), "--accept"]) == 2
    assert "--propose DATA" in capsys.readouterr().err
    assert read_part_names(run) == {2: "wing bars"}  # the refused commands changed nothing


def test_export_predict_and_explain_use_the_names(tiny, tmp_path, capsys):
    data, run = tiny
    set_part_name(run, 0, "crown")
    set_part_name(run, 1, "")
    set_part_name(run, 2, "wing bars")
    assert main(["export", str(run), str(data), "--out", str(tmp_path / "x"), "--device", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["parts"] == [{"part": 1, "part_name": "crown", "folder": "part_1_crown"},
                                {"part": 2, "part_name": None, "folder": "part_2"},
                                {"part": 3, "part_name": "wing bars", "folder": "part_3_wing_bars"}]
    with open(tmp_path / "x" / "parts.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    expected = {"1": "crown", "2": "", "3": "wing bars"}
    for r in rows:
        assert r["part_name"] == expected[r["part_k"]]
        assert r["crop"].split("/")[0] == {"1": "part_1_crown", "2": "part_2", "3": "part_3_wing_bars"}[r["part_k"]]
        assert (tmp_path / "x" / r["crop"]).is_file()
    coco = json.loads((tmp_path / "x" / "parts_coco.json").read_text())
    assert {tuple(c["keypoints"]) for c in coco["categories"]} == {("crown", "part_2", "wing bars")}

    photo = next((data / "images").rglob("*.jpg"))
    assert main(["predict", str(run), str(photo), "--json", "--device", "cpu"]) == 0
    parts = json.loads(capsys.readouterr().out)["predictions"][0]["parts"]
    assert [(p["part"], p["part_name"]) for p in parts] == [(1, "crown"), (2, None), (3, "wing bars")]

    assert main(["explain", str(run), str(photo), "--out", str(tmp_path / "e"), "--device", "cpu"]) == 0
    capsys.readouterr()
    record = json.loads(next((tmp_path / "e").glob("*.channels.json")).read_text())
    assert record["maps"][0]["names"] == ["crown", "part 2", "wing bars"]
    assert [p["name"] for p in record["maps"][0]["parts"]] == ["crown", "part 2", "wing bars"]


def test_propose_names_votes_per_part_and_accept_keeps_user_names(tiny, capsys):
    data, run = tiny
    set_part_name(run, 0, "")
    set_part_name(run, 2, "my wing")
    proposals = drive(propose_names(run, data))
    assert [p.part for p in proposals] == [0, 1, 2]
    for p in proposals:
        assert p.images >= p.count >= 0 and 0.0 <= p.share <= 1.0
        assert (p.keypoint == "") == (p.images == 0 or p.reason.startswith("background"))
        assert (p.keypoint == "") == bool(p.reason)
        if p.images:
            assert p.share == pytest.approx(p.count / p.images)
    assert main(["names", str(run), "--propose", str(data), "--accept", "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["keypoint"] for p in out["proposals"]] == [p.keypoint or None for p in proposals]
    names = read_part_names(run)
    assert names[2] == "my wing"  # a name the user gave is kept
    named = [p for p in proposals if p.part != 2 and p.keypoint]
    if named:  # the best-supported proposal for an unnamed part is taken
        best = max(named, key=lambda p: (p.share, p.count))
        assert names[best.part] == best.keypoint


def test_propose_names_needs_keypoints(tiny, tmp_path):
    _, run = tiny
    folders = make_class_folders(tmp_path / "plain", classes=3)
    with pytest.raises(DataError, match="parts/part_locs.txt"):
        drive(propose_names(run, folders))


def test_propose_names_gives_a_background_part_none_and_says_why(tiny, capsys):
    """The run's saved on-bird shares (written by hand: part 2 background) decide; the pass does not redo them."""
    from engine.fieldmarks.onbird import PartPlace, places_doc, saved_places
    from engine.runs import PART_PLACES, write_part_places

    data, run = tiny
    for k in range(3):
        set_part_name(run, k, "")
    places = [PartPlace(0, 0.9, 0.9, 5, "box"), PartPlace(1, 0.2, 0.1, 5, "box"), PartPlace(2, 0.6, 0.5, 5, "box")]
    write_part_places(run, places_doc(places, "train", 12, str(data)))
    try:
        proposals = drive(propose_names(run, data))
        assert saved_places(run) == places  # read, not computed again
        second = proposals[1]
        assert second.keypoint == "" and second.on_bird == 0.2
        reason = "background / habitat: its peak is on the bird on only 20 % of its active training photos"
        assert second.reason == reason
        assert main(["names", str(run), "--propose", str(data), "--device", "cpu"]) == 0
        out = capsys.readouterr().out
        assert f"proposal: part 2 -> none: {reason}" in out.splitlines()
        assert main(["names", str(run), "--propose", str(data), "--accept", "--json", "--device", "cpu"]) == 0
        captured = capsys.readouterr()
        doc = json.loads(captured.out)
        assert doc["proposals"][1] == {"part": 2, "keypoint": None, "share": 0.0, "count": 0,
                                       "images": second.images, "on_bird": 0.2, "reason": reason}
        assert 1 not in read_part_names(run)  # never named after a body part
        assert f"note: part 2 stays unnamed: {reason}" in captured.err.splitlines()
    finally:
        (run / PART_PLACES).unlink(missing_ok=True)
