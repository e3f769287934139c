"""A validation split cut from the training photos (issue 23, item 4): ``--validation-fraction F`` moves a per-class
share of the training photos to "val", saved in split.json; the test split is untouched; evaluate scores it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine import runs
from engine.cli import main as cli
from engine.data import scan
from engine.data.split import carve_validation
from engine.errors import ConfigError
from engine.events import Started, drive
from engine.evaluation.evaluate import evaluate
from engine.runs import load_run
from engine.training.config import TrainConfig
from engine.training.loop import train

from ..conftest import make_class_folders
from .test_run_split import new_photo, rel_split, tiny_cfg


@pytest.fixture
def data(tmp_path):
    return make_class_folders(tmp_path / "data", classes=3, per_class=10, size=(36, 36))


def test_a_share_of_each_class_s_training_photos_becomes_val_and_test_stays(data):
    report = scan(data, test_fraction=0.2, seed=0)
    before = rel_split(report)
    carved = rel_split(carve_validation(report, 0.25, seed=0))
    assert {p for p, s in before.items() if s == "test"} == {p for p, s in carved.items() if s == "test"}
    for c in report.classes:  # 8 training photos per class: round(8 * 0.25) = 2 to val
        mine = {p: s for p, s in carved.items() if p.startswith(c + "/")}
        assert sorted(mine.values()).count("val") == 2 and sorted(mine.values()).count("train") == 6
    assert carved == rel_split(carve_validation(report, 0.25, seed=0))  # deterministic
    assert carved != rel_split(carve_validation(report, 0.25, seed=1))
    assert rel_split(carve_validation(report, 0.0, seed=0)) == before


def test_a_photo_added_to_one_class_moves_no_other_class_s_validation_photos(data):
    first = rel_split(carve_validation(scan(data, seed=0), 0.25, 0))
    cls = sorted(p.name for p in data.iterdir() if p.is_dir())[0]
    new_photo(data / cls / "zz_new.png")
    second = rel_split(carve_validation(scan(data, seed=0), 0.25, 0))
    others = [p for p in first if not p.startswith(cls + "/")]
    assert {p: first[p] for p in others} == {p: second[p] for p in others}


def test_the_fraction_is_checked_by_name():
    with pytest.raises(ConfigError, match="validation_fraction=1.0"):
        TrainConfig(data="d", out="o", validation_fraction=1.0)
    with pytest.raises(ConfigError, match="validation_fraction=-0.1"):
        TrainConfig(data="d", out="o", validation_fraction=-0.1)


def test_cli_refuses_a_bad_fraction_in_one_line(data, tmp_path, capsys):
    code = cli(["train", str(data), "--out", str(tmp_path / "r"), "--validation-fraction", "1.5"])
    err = capsys.readouterr().err
    assert code == 2 and "validation_fraction=1.5" in err and len(err.strip().splitlines()) == 1


def test_a_run_trains_without_its_val_photos_saves_them_and_evaluate_scores_them(tmp_path, capsys):
    from engine.toybirds.dataset import generate

    data = tmp_path / "toy"
    generate(data, classes=3, per_class=12, size=64, seed=0)
    run = tmp_path / "run"
    cfg = TrainConfig(data=str(data), out=str(run), model="smallnet", method="parts", parts=2, epochs=1, img_size=32,
                      batch_size=8, seed=1, device="cpu", cache_mb=64, validation_fraction=0.25)
    events: list = []
    drive(train(cfg), events.append)
    doc = json.loads((run / "split.json").read_text())
    n_val, n_train = len(doc["val"]), len(doc["train"])
    assert n_val > 0 and not set(doc["val"]) & set(doc["train"]) and not set(doc["val"]) & set(doc["test"])
    started = next(e for e in events if isinstance(e, Started))
    assert started.num_train == n_train  # the val photos are not trained on
    assert "validation 0.25" in doc["source"]
    # the saved split comes back with its val photos, and evaluate scores exactly them
    data_view = runs.run_split(run, scan(data), None).report
    assert sorted(Path(s.path).relative_to(data).as_posix() for s in data_view.split("val")) == sorted(doc["val"])
    result = drive(evaluate(load_run(run), scan(data), split="val"))
    assert result.info["n_test"] == n_val and result.info["n_train"] == n_train
    # a resume keeps the run's fraction; another one is refused, naming it
    assert cli(["train", str(data), "--out", str(run), "--resume", "--epochs", "2", "--validation-fraction", "0.5",
                "--model", "smallnet", "--method", "parts", "--parts", "2", "--seed", "1",
                "--device", "cpu"]) == 2
    assert "validation_fraction" in capsys.readouterr().err
