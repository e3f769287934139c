"""A run remembers its split (issue 16, item 1): ``split.json`` in the run folder, laid over the data folder by
resume, evaluate, export and Compare; photos added since are left out, missing or changed ones are named; a resume
refuses a changed training set unless allowed (and records it); new splits are drawn per class."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine import runs
from engine.cli import main as cli
from engine.data import scan
from engine.errors import DataError
from engine.events import Message, Started
from engine.training.config import TrainConfig
from engine.events import drive
from engine.training.loop import train

from ..conftest import make_class_folders


def tiny_cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), model="smallnet", method="mcloss", epochs=1, img_size=32,
                batch_size=8, seed=3, device="cpu", cache_mb=64)
    return TrainConfig(**{**base, **kw})


def rel_split(report) -> dict[str, str]:
    return {Path(s.path).relative_to(report.root).as_posix(): s.split for s in report.samples}


def saved_split(run: Path) -> dict[str, str]:
    doc = json.loads((run / "split.json").read_text())
    return {**{p: "train" for p in doc["train"]}, **{p: "test" for p in doc["test"]}}


def train_events(cfg, **kw) -> list:
    events: list = []
    drive(train(cfg, **kw), events.append)
    return events


def texts(events) -> str:
    return "\n".join(e.text for e in events if isinstance(e, Message))


def new_photo(path: Path, seed: int = 9) -> None:
    img = (np.random.default_rng(seed).random((36, 36, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(path), img)


@pytest.fixture
def data(tmp_path):
    return make_class_folders(tmp_path / "data", classes=3, per_class=10, size=(36, 36))


# ------------------------------------------------------------------------------------------- the draw itself
def test_one_class_change_never_moves_another_class_photos(data):
    before = rel_split(scan(data, seed=5))
    new_photo(data / "class_0" / "img_100.jpg")
    shutil.rmtree(data / "class_1")
    after = rel_split(scan(data, seed=5))
    moved = {p for p in after if p.startswith("class_2/") and after[p] != before[p]}
    assert not moved, f"class_2 photos moved between splits when class_0 and class_1 changed: {moved}"
    assert sum(1 for p, s in after.items() if p.startswith("class_2/") and s == "test") == 2


def test_fingerprint_sees_edits_but_not_copies(tmp_path):
    from engine.data.split import fingerprint, same_content

    f = tmp_path / "a.jpg"
    new_photo(f)
    size, mtime, digest = fingerprint(f)
    os.utime(f, ns=(mtime + 10 ** 9, mtime + 10 ** 9))  # a copy without its times: same bytes, another mtime
    assert same_content(f, size, mtime, digest)
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # an edit that keeps the size
    f.write_bytes(bytes(raw))
    assert not same_content(f, size, mtime, digest)
    assert not same_content(f, size + 1, mtime, digest)
    assert not same_content(tmp_path / "gone.jpg", size, mtime, digest)


# ------------------------------------------------------------------------------------------------- training
def test_the_run_saves_its_split_and_resume_leaves_added_photos_out(data, tmp_path):
    run = tmp_path / "run"
    first = train_events(tiny_cfg(data, run))
    saved = saved_split(run)
    assert saved == rel_split(scan(data, seed=3)) and len(saved) == 30
    start = next(e for e in first if isinstance(e, Started))
    new_photo(data / "class_0" / "img_new.jpg")
    events = train_events(tiny_cfg(data, run, epochs=2), resume=True)
    again = next(e for e in events if isinstance(e, Started))
    assert (again.num_train, again.num_test) == (start.num_train, start.num_test)  # the new photo is left out
    assert "1 photo added" in texts(events) and "class_0/img_new.jpg" in texts(events)
    assert saved_split(run) == saved  # nothing to record: the training set is the run's


def test_resume_refuses_a_changed_training_set_unless_allowed_and_records_it(data, tmp_path, capsys):
    run = tmp_path / "run"
    train_events(tiny_cfg(data, run))
    trained = rel_split(scan(data, seed=3))  # the split the run was given
    gone = sorted(p for p, s in trained.items() if s == "train")[0]
    (data / gone).unlink()
    argv = ["train", str(data), "--out", str(run), "--model", "smallnet", "--img-size", "32", "--batch-size", "8",
            "--seed", "3", "--epochs", "2", "--device", "cpu", "--resume"]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and gone in err[0] and "--allow-data-change" in err[0] and "missing" in err[0], err
    assert runs.read_meta(run)["epoch"] == 1 and saved_split(run) == trained  # nothing was touched

    assert cli(argv + ["--allow-data-change"]) == 0
    err = capsys.readouterr().err
    assert "--allow-data-change" in err and gone in err
    meta = runs.read_meta(run)
    assert meta["epoch"] == 2
    assert meta["data_changes"][0]["after_epoch"] == 1 and meta["data_changes"][0]["missing"] == {"train": [gone]}
    assert gone not in saved_split(run) and len(saved_split(run)) == 29
    assert cli(argv[:-3] + ["--epochs", "3", "--resume"]) == 0  # the new split is the run's now: no flag needed
    assert len(runs.read_meta(run)["data_changes"]) == 1


def test_resume_refuses_a_training_photo_edited_in_place(data, tmp_path):
    run = tmp_path / "run"
    train_events(tiny_cfg(data, run))
    edited = sorted(p for p, s in rel_split(scan(data, seed=3)).items() if s == "train")[3]
    new_photo(data / edited, seed=11)
    with pytest.raises(DataError, match=f"1 photo changed \\({edited}\\)"):
        train_events(tiny_cfg(data, run, epochs=2), resume=True)


def test_allow_data_change_needs_resume(data, tmp_path, capsys):
    assert cli(["train", str(data), "--out", str(tmp_path / "r"), "--allow-data-change"]) == 2
    assert "--allow-data-change without --resume" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ evaluate and export
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Toy birds (CUB layout, keypoints) and a one-epoch run on them."""
    from engine.toybirds.dataset import generate

    base = tmp_path_factory.mktemp("toy")
    generate(base / "birds", classes=3, per_class=6, size=64, seed=1)
    drive(train(tiny_cfg(base / "birds", base / "run", batch_size=4)))
    return base


def test_evaluate_and_export_name_missing_and_changed_photos(toy, tmp_path, capsys):
    data, run = tmp_path / "birds", tmp_path / "run"
    shutil.copytree(toy / "birds", data)
    shutil.copytree(toy / "run", run)
    test = sorted(p for p, s in rel_split(scan(data)).items() if s == "test")  # CUB: the split of the files
    (data / test[0]).unlink()
    assert cli(["evaluate", str(run), str(data), "--json"]) == 0
    out = capsys.readouterr()
    assert f"1 photo of the run's test split missing from {data}" in out.err and test[0] in out.err
    assert json.loads(out.out)["top1"] is not None

    new_photo(data / test[1], seed=5)
    assert cli(["export", str(run), str(data), "--out", str(tmp_path / "parts")]) == 0
    out = capsys.readouterr()
    assert "1 photo of the run's test split changed" in out.err and test[1] in out.err
    exported = {row.split(",")[0] for row in (tmp_path / "parts" / "parts.csv").read_text().splitlines()[1:]}
    assert test[1] in exported and test[0] not in exported and len(exported) == len(test) - 1


def test_export_takes_the_runs_test_photos_not_a_new_draw(data, tmp_path, capsys):
    run = tmp_path / "run"
    train_events(tiny_cfg(data, run, seed=7))  # `fieldmark export` scans with seed 0: the run's split must win
    trained = rel_split(scan(data, seed=7))
    new_photo(data / "class_2" / "img_new.jpg")
    assert cli(["export", str(run), str(data), "--out", str(tmp_path / "parts"), "--split", "test"]) == 0
    assert "class_2/img_new.jpg" in capsys.readouterr().err
    exported = {row.split(",")[0] for row in (tmp_path / "parts" / "parts.csv").read_text().splitlines()[1:]}
    assert exported == {p for p, s in trained.items() if s == "test"}


def test_old_run_without_a_saved_split_gets_its_old_draw_with_a_note(data, tmp_path):
    run = tmp_path / "run"
    train_events(tiny_cfg(data, run, seed=4))
    (run / "split.json").unlink()
    # the draw of Fieldmark 0.1: one generator shared by the classes in order
    rng = np.random.default_rng(4)
    expected = {}
    for c in ("class_0", "class_1", "class_2"):
        test = set(rng.permutation(10)[:2].tolist())
        expected.update({f"{c}/img_{i:03d}.jpg": "test" if i in test else "train" for i in range(10)})
    got = runs.run_split(run, scan(data))
    assert rel_split(got.report) == expected and got.check is None
    assert "no saved split" in got.messages[0][1]


def test_data_that_is_not_the_runs_keeps_its_own_split(data, tmp_path):
    run = tmp_path / "run"
    train_events(tiny_cfg(data, run))
    other = make_class_folders(tmp_path / "other", classes=3, per_class=4, size=(36, 36), seed=1)
    for d in other.iterdir():  # same classes, other file names
        for f in d.iterdir():
            f.rename(f.with_name("x" + f.name))
    from engine.data.split import apply_saved_split

    report = scan(other)
    applied, check = apply_saved_split(report, runs.read_split(run), str(run))
    assert check.foreign and applied is report
    assert "not the run's data" in runs.run_split(run, report).messages[0][1]


def test_old_configs_with_val_fraction_still_load():
    cfg = TrainConfig.from_dict({"data": "d", "out": "o", "model": "smallnet", "val_fraction": 0.3})
    assert cfg.test_fraction == 0.3 and "val_fraction" not in cfg.to_dict()


def test_run_folder_file_names_live_in_engine_runs_only():
    """Only engine/runs/files.py spells a run folder's file names (model.json, split.json, evaluation.json, ...)."""
    root = Path(__file__).resolve().parents[2]
    names = ["model.json", "model.safetensors", "metrics.jsonl", "resume.pt", "split.json", "evaluation.json",
             "overlays"]
    offenders = []
    for folder in ("engine", "app"):
        for f in (root / folder).rglob("*.py"):
            if f == root / "engine" / "runs" / "files.py":
                continue
            text = f.read_text(encoding="utf-8")
            offenders += [f"{f.relative_to(root)}: {n}" for n in names
                          if f'"{n}"' in text or f"'{n}'" in text or f"/ {n!r}" in text]
    assert not offenders, offenders


def test_a_run_killed_after_writing_its_split_starts_again(data, tmp_path):
    """The first save writes split.json before resume.pt: a kill between the two leaves a folder that holds only
    the split, and the same command must start the run again rather than call the folder foreign."""
    run = tmp_path / "run"
    train_events(tiny_cfg(data, run))
    for f in run.iterdir():
        if f.name != "split.json":
            f.unlink()
    events = train_events(tiny_cfg(data, run))
    assert any(isinstance(e, Started) and e.start_epoch == 0 for e in events) and runs.read_meta(run)["epoch"] == 1


def test_a_damaged_split_file_is_one_clear_line(data, tmp_path, capsys):
    run = tmp_path / "run"
    train_events(tiny_cfg(data, run))
    f = run / "split.json"
    good = f.read_text()
    which = saved_split(run)["class_0/img_000.jpg"]
    argv = ["export", str(run), str(data), "--out", str(tmp_path / "parts")]
    for text, needle in [(good[: len(good) // 2], "is damaged"),
                         (good.replace('"class_0/img_000.jpg": [0, ', '"class_0/img_000.jpg": [7, ', 1),
                          f"the {which} entry 'class_0/img_000.jpg' is [7, "),
                         ('{"format": "other"}', "is not a Fieldmark split file")]:
        f.write_text(text)
        assert cli(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("fieldmark: error:") and needle in err[0], err
        assert "delete it" in err[0] and str(f) in err[0]
