"""Training: a tiny run end to end, stop + resume, run-folder safety, and the CLI's error lines."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import runs
from engine.cli import main as cli
from engine.training.config import TrainConfig
from engine.errors import Cancelled, CheckpointError, ConfigError
from engine.events import BatchEnd, EpochEnd, Started, drive, from_dict, to_dict
from engine.training.loop import train

from ..conftest import ROOT, make_class_folders


def tiny_cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), model="smallnet", method="mcloss", epochs=3, img_size=32,
                batch_size=8, seed=3)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_class_folders(tmp_path_factory.mktemp("d"), classes=3, per_class=10, size=(36, 36))


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="epochs=0"):
        tiny_cfg("d", "o", epochs=0)
    with pytest.raises(ConfigError, match="method='mc'"):
        tiny_cfg("d", "o", method="mc")
    with pytest.raises(ConfigError, match="model 'resnet7' is unknown"):
        tiny_cfg("d", "o", model="resnet7")
    cfg = tiny_cfg("d", "o")
    assert cfg.mu == 1.5 and cfg.lr_head == 0.05  # from scratch: the paper's scratch value
    tuned = tiny_cfg("d", "o", pretrained="x.pth")
    assert tuned.mu == 0.5 and (tuned.lr_backbone, tuned.lr_head) == (0.001, 0.05)  # the part layers learn fast
    assert tiny_cfg("d", "o", pretrained="x.pth", method="tasn", model="tasn_resnet18").lr_head == 0.01
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_config_reads_old_runs_with_retired_options():
    cfg = tiny_cfg("d", "o")
    old = {**cfg.to_dict(), "label_smoothing": 0.1}  # saved by runs before the option was removed (no loss read it)
    assert TrainConfig.from_dict(old) == cfg and "label_smoothing" not in cfg.to_dict()
    with pytest.raises(ConfigError, match="unknown config keys"):
        TrainConfig.from_dict({**cfg.to_dict(), "label_smoothin": 0.1})


def test_train_writes_a_complete_run_and_events(data, tmp_path):
    events = []
    result = drive(train(tiny_cfg(data, tmp_path / "run")), events.append)
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("EpochEnd") == 3 and kinds.index("Started") < kinds.index("BatchEnd")
    ends = [e for e in events if isinstance(e, EpochEnd)]
    assert {"loss", "ce", "dis", "div", "regions"} <= set(ends[-1].train) and "conc" not in ends[-1].train
    # top-1 counted by hand: the saved model's predictions (the predict API's own decoding path) on the test split
    from engine.data import scan
    from engine.maps.predict import predict

    test = scan(data, test_fraction=0.2, seed=3).split("test")
    run_model = runs.load_run(tmp_path / "run")
    guesses = [p.top[0][0] for p in predict(run_model, [Path(s.path) for s in test], top_k=1)]
    right = sum(g == run_model.classes[s.label] for g, s in zip(guesses, test))
    assert len(test) == 6 and ends[-1].test_top1 == pytest.approx(right / 6, abs=1e-12)  # 2 of 10 per class
    for e in events:  # every event survives the JSON-lines trip the GUI's child process makes
        assert from_dict(json.loads(json.dumps(to_dict(e)))) == e
    run = tmp_path / "run"
    meta = runs.read_meta(run)
    assert meta["epoch"] == 3 and meta["classes"] == ["class_0", "class_1", "class_2"]
    assert meta["preprocessing"]["mean"] == [0.485, 0.456, 0.406] and meta["config"]["model"] == "smallnet"
    assert len(runs.read_history(run)) == 3
    loaded = runs.load_run(run)
    assert loaded.model.training is False and result.metrics["test_top1"] == ends[-1].test_top1


def test_mc_concentration_term_is_trained_and_logged_when_weighted(data, tmp_path):
    # from scratch the default weight is 0: the term is neither computed nor logged
    assert tiny_cfg(data, tmp_path / "a").mc_conc == 0.0
    events = []
    drive(train(tiny_cfg(data, tmp_path / "conc", epochs=1, mc_conc=50.0)), events.append)
    end = [e for e in events if isinstance(e, EpochEnd)][-1]
    assert 0 < end.train["conc"] < 0.5 and end.train["loss"] > end.train["ce"]  # spread < 1/2, then / (h·w)
    assert runs.read_meta(tmp_path / "conc")["config"]["mc_conc"] == 50.0
    assert runs.load_resume(tmp_path / "conc")["loss_weights"]["mc_conc"] == 50.0


def test_stop_then_resume_matches_an_uninterrupted_run(data, tmp_path):
    full = drive(train(tiny_cfg(data, tmp_path / "full")))
    seen = {"batches": 0}

    def stop_in_epoch_3():
        return seen["batches"] >= 7  # 3 steps per epoch: stops during epoch 3

    gen = train(tiny_cfg(data, tmp_path / "cut"), should_stop=stop_in_epoch_3)
    with pytest.raises(Cancelled):
        for ev in gen:
            if isinstance(ev, BatchEnd):
                seen["batches"] += 1
    assert runs.read_meta(tmp_path / "cut")["epoch"] == 2  # the run folder stays readable
    events = []
    resumed = drive(train(tiny_cfg(data, tmp_path / "cut"), resume=True), events.append)
    start = next(e for e in events if isinstance(e, Started))
    assert start.start_epoch == 2 and sum(isinstance(e, EpochEnd) for e in events) == 1
    hist_full = runs.read_history(tmp_path / "full")
    hist_cut = runs.read_history(tmp_path / "cut")
    assert [h["epoch"] for h in hist_cut] == [1, 2, 3]
    assert hist_cut[-1]["loss"] == pytest.approx(hist_full[-1]["loss"], rel=1e-4)
    assert resumed.metrics["test_top1"] == full.metrics["test_top1"]


def test_existing_run_folder_is_never_overwritten(data, tmp_path):
    drive(train(tiny_cfg(data, tmp_path / "r", epochs=1)))
    with pytest.raises(ConfigError, match="--resume"):
        drive(train(tiny_cfg(data, tmp_path / "r", epochs=1)))
    with pytest.raises(ConfigError, match="xi=2"):
        drive(train(tiny_cfg(data, tmp_path / "r", epochs=2, xi=2), resume=True))


def test_checkpoint_with_wrong_class_count_is_refused(data, tmp_path):
    drive(train(tiny_cfg(data, tmp_path / "r", epochs=1)))
    with pytest.raises(CheckpointError, match="checkpoint has 3 classes, the dataset has 16"):
        runs.load_run(tmp_path / "r", expect_classes=16)
    other = make_class_folders(tmp_path / "four", classes=4, per_class=4, size=(36, 36))
    with pytest.raises(CheckpointError, match="3 classes, the dataset has 4"):
        drive(train(tiny_cfg(other, tmp_path / "r", epochs=2), resume=True))


class Evil:
    def __reduce__(self):
        return (exec, ("open('/tmp/fieldmark-pwned', 'w').write('x')",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    from engine.errors import WeightsError
    from engine.models import create_model

    bad = tmp_path / "evil.pth"
    with open(bad, "wb") as fh:
        pickle.dump({"state_dict": Evil()}, fh)
    with pytest.raises(WeightsError, match="could run code"):
        create_model("smallnet", 3, pretrained=str(bad))
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"x": 1}, run / "ok.pt")
    (run / runs.RESUME).write_bytes(bad.read_bytes())
    with pytest.raises(CheckpointError, match="could run code"):
        runs.load_resume(run)
    import os

    assert not os.path.exists("/tmp/fieldmark-pwned")


def test_damaged_and_newer_run_folders_are_refused(data, tmp_path):
    drive(train(tiny_cfg(data, tmp_path / "r", epochs=1)))
    w = tmp_path / "r" / runs.MODEL_WEIGHTS
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        runs.load_run(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / runs.MODEL_JSON).read_text())
    meta["format_version"] = runs.FORMAT_VERSION + 1
    meta["fieldmark_version"] = "9.0.0"
    (tmp_path / "r" / runs.MODEL_JSON).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="Fieldmark 9.0.0.*upgrade"):
        runs.load_run(tmp_path / "r")


def test_cli_train_predict_and_one_line_errors(data, tmp_path, capsys):
    assert cli(["train", str(data), "--out", str(tmp_path / "run"), "--model", "smallnet", "--epochs", "1",
                "--img-size", "32", "--batch-size", "8"]) == 0
    assert cli(["predict", str(tmp_path / "run"), str(data / "class_1"), "--top-k", "2", "--json"]) == 0
    capsys.readouterr()
    assert cli(["predict", str(tmp_path / "run"), str(data / "class_1" / "img_000.jpg"), "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["predictions"][0]["top"][0]["class"] in ("class_0", "class_1", "class_2")
    for argv, needle in [
        (["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")], "does not exist"),
        (["train", str(data), "--out", str(tmp_path / "x"), "--xi", "0"], "xi=0"),
        (["train", str(data), "--out", str(tmp_path / "x"), "--model", "resnet7"], "resnet7"),
        (["predict", str(tmp_path / "nope"), str(data)], "not a Fieldmark run folder"),
        (["train", str(data), "--out", str(tmp_path / "x"), "--pretrained", "/no/file.pth"], "does not exist"),
    ]:
        assert cli(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("fieldmark: error:") and needle in err[0], err


def test_engine_imports_without_qt():
    """engine/ must import and work with PySide6 unavailable (a meta-path hook makes it unimportable)."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('PySide6', 'pyqtgraph', 'superqt', 'app'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pkgutil, importlib, engine\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print('ok', len([m for m in sys.modules if m.startswith('engine')]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr
