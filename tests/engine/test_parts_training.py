"""`--method parts` through the whole engine: training logs the four shared-part losses, a resume continues the
run, evaluation scores the K+1 maps under the published protocol, export files part k in one folder for every
class, and predict gives each part's share of the top class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.events import EpochEnd, drive
from engine.runs import load_run, read_history
from engine.toybirds.dataset import generate
from engine.training.config import TrainConfig
from engine.training.loop import train


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy") / "birds"
    generate(root, classes=3, per_class=8, size=64, seed=0)
    return root


def test_parts_train_resume_evaluate_export_predict(toy, tmp_path, capsys):
    cfg = TrainConfig(data=str(toy), out=str(tmp_path / "run"), model="smallnet", method="parts", parts=3,
                      epochs=1, img_size=64, batch_size=8, device="cpu", cache_mb=64)
    assert cfg.fine is True and (cfg.lr_backbone, cfg.lr_head) == (2e-4, 2e-2)  # the parts defaults
    ends = []
    drive(train(cfg), lambda ev: ends.append(ev) if isinstance(ev, EpochEnd) else None)
    assert set(ends[0].train) >= {"loss", "ce", "conc", "orth", "equiv", "pres"}
    drive(train(cfg.replace(epochs=2), resume=True))  # goes on from epoch 1
    history = read_history(tmp_path / "run")
    assert [row["epoch"] for row in history] == [1, 2]
    run = load_run(tmp_path / "run")
    assert type(run.model).__name__ == "SharedPartsNet" and run.model.parts == 3

    assert main(["evaluate", str(tmp_path / "run"), str(toy), "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    own = out["protocol"]["own"]["protocol"]
    assert own["background"] is True and own["maps"].startswith("shared-part softmax maps (K=3")
    assert out["protocol"]["random"]["protocol"]["maps"] == "random (seed 0)"

    assert main(["export", str(tmp_path / "run"), str(toy), "--out", str(tmp_path / "parts"), "--device", "cpu"]) == 0
    capsys.readouterr()
    folders = sorted(p.name for p in (tmp_path / "parts").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert folders and all(name.startswith("part_") for name in folders)  # part k: one folder for every class
    coco = json.loads((tmp_path / "parts" / "parts_coco.json").read_text())
    assert {tuple(c["keypoints"]) for c in coco["categories"]} == {("part_1", "part_2", "part_3")}

    photo = next((toy / "images").rglob("*.jpg"))
    assert main(["predict", str(tmp_path / "run"), str(photo), "--json", "--top-k", "2"]) == 0
    pred = json.loads(capsys.readouterr().out)["predictions"][0]
    assert [p["part"] for p in pred["parts"]] == [1, 2, 3]


def test_part_loss_weights_from_the_command_line_are_checked(toy, tmp_path, capsys):
    assert main(["train", str(toy), "--out", str(tmp_path / "r"), "--method", "parts", "--part-loss", "equiv"]) == 2
    assert "--part-loss 'equiv': write NAME=WEIGHT" in capsys.readouterr().err
    assert main(["train", str(toy), "--out", str(tmp_path / "r"), "--method", "parts", "--part-loss", "glue=1"]) == 2
    assert "unknown loss weight 'w_glue'" in capsys.readouterr().err


def test_the_parts_method_has_its_own_size_epochs_and_batch_and_a_resume_keeps_the_runs(toy, tmp_path):
    from engine.cli import build_parser
    from engine.cli.train import config_from_args

    parts = TrainConfig(data=str(toy), out=str(tmp_path / "p"), model="smallnet", method="parts")
    other = TrainConfig(data=str(toy), out=str(tmp_path / "m"), model="smallnet", method="mcloss")
    assert (parts.img_size, parts.epochs, parts.batch_size) == (448, 14, 16)  # measured on cub-parts-dev (README)
    assert (other.img_size, other.epochs, other.batch_size) == (224, 10, 32)
    explicit = TrainConfig(data=str(toy), out=str(tmp_path / "p"), method="parts", img_size=224, epochs=3)
    assert (explicit.img_size, explicit.epochs, explicit.batch_size) == (224, 3, 16)

    # a parts run trained at 64 px for 1 epoch, resumed with no size flags: its own size, not the default
    run = tmp_path / "run"
    drive(train(TrainConfig(data=str(toy), out=str(run), model="smallnet", method="parts", parts=2, epochs=1,
                            img_size=64, batch_size=8, device="cpu", cache_mb=64)))
    args = build_parser().parse_args(["train", str(toy), "--out", str(run), "--model", "smallnet", "--method",
                                      "parts", "--parts", "2", "--resume"])
    cfg = config_from_args(args)
    assert (cfg.img_size, cfg.epochs, cfg.batch_size) == (64, 1, 8)
    args = build_parser().parse_args(["train", str(toy), "--out", str(run), "--model", "smallnet", "--method",
                                      "parts", "--parts", "2", "--resume", "--epochs", "2"])
    assert config_from_args(args).epochs == 2


def test_rotation_and_the_equivariance_gradient_are_options_kept_by_a_resume(toy, tmp_path, capsys):
    from engine.cli import build_parser
    from engine.cli.train import config_from_args
    from engine.errors import ConfigError
    from engine.training.config import DEFAULT_ROTATE, PARTS_EQUIV_BACKPROP
    from engine.training.loop import build_criterion

    parts = TrainConfig(data=str(toy), out=str(tmp_path / "p"), model="smallnet", method="parts")
    assert (parts.rotate, parts.equiv_backprop) == (DEFAULT_ROTATE, PARTS_EQUIV_BACKPROP)
    mc = TrainConfig(data=str(toy), out=str(tmp_path / "m"), model="smallnet", equiv_backprop=True)
    assert (mc.rotate, mc.equiv_backprop) == (0.0, None)  # no equivariance pass outside parts
    with pytest.raises(ConfigError, match="rotate=-5.*from 0"):
        TrainConfig(data=str(toy), out="o", rotate=-5)
    # a parts config saved before the options: no rotation, both passes back-propagated (the authors')
    old = parts.to_dict()
    del old["rotate"], old["equiv_backprop"]
    assert (TrainConfig.from_dict(old).rotate, TrainConfig.from_dict(old).equiv_backprop) == (0.0, True)

    run = tmp_path / "run"
    assert main(["train", str(toy), "--out", str(run), "--model", "smallnet", "--method", "parts", "--parts", "2",
                 "--epochs", "1", "--img-size", "64", "--batch-size", "8", "--device", "cpu", "--rotate", "30",
                 "--equiv-backprop"]) == 0
    capsys.readouterr()
    meta = json.loads((run / "model.json").read_text())
    assert (meta["config"]["rotate"], meta["config"]["equiv_backprop"]) == (30.0, True)
    assert meta["preprocessing"]["rotate"] == 30.0 and "rotation up to ±30°" in meta["preprocessing"]["description"]
    # a resume with neither flag keeps the run's, not the defaults
    args = build_parser().parse_args(["train", str(toy), "--out", str(run), "--model", "smallnet", "--method",
                                      "parts", "--parts", "2", "--resume", "--epochs", "2"])
    cfg = config_from_args(args)
    assert (cfg.rotate, cfg.equiv_backprop) == (30.0, True)
    assert build_criterion(cfg, None).equiv_stop_grad is False
    assert build_criterion(cfg.replace(equiv_backprop=False), None).equiv_stop_grad is True
    # and one that changes them is refused, naming the setting
    assert main(["train", str(toy), "--out", str(run), "--model", "smallnet", "--method", "parts", "--parts", "2",
                 "--resume", "--epochs", "2", "--rotate", "10", "--device", "cpu"]) == 2
    assert "rotate=10.0" in capsys.readouterr().err
