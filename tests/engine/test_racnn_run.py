"""An RA-CNN run end to end on tiny toy birds (Fu et al., CVPR 2017): ``train --method racnn``, ``explain --method
racnn`` (the squares as JSON, the zoomed crops as PNG), ``export`` (the two squares as parts, by default), ``evaluate``
(the squares' centres as 2 parts, top-1 per scale), the zoom views' geometry, and the settings' one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cli import main as cli
from engine.data import scan
from engine.data.imageio import read_image
from engine.errors import ConfigError
from engine.events import BatchEnd, EpochEnd, drive
from engine.maps.zoom import views_of
from engine.models import create_model
from engine.runs import load_run
from engine.training.config import TrainConfig
from engine.training.loop import train

SIZE = 64


@pytest.fixture(scope="module")
def racnn_run(tmp_path_factory) -> tuple[Path, Path, list]:
    from engine.toybirds import dataset as toybirds

    root = tmp_path_factory.mktemp("racnn_run")
    data, run = root / "birds", root / "run"
    toybirds.generate(data, classes=3, per_class=6, size=SIZE)
    cfg = TrainConfig(data=str(data), out=str(run), model="racnn_smallnet", method="racnn", epochs=2, img_size=SIZE,
                      batch_size=6, device="cpu", cache_mb=32, seed=0, extra={"apn_warmup": 2})
    events = []
    drive(train(cfg), events.append)
    return data, run, events


def test_training_logs_every_term_and_saves_the_alternation(racnn_run):
    data, run, events = racnn_run
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert len(epochs) == 2 and all({"ce", "rank", "apn"} <= set(e.train) for e in epochs)
    loaded = load_run(run)
    assert loaded.meta["method"] == "racnn" and loaded.meta["arch"]["name"] == "racnn_smallnet"
    steps = sum(isinstance(e, BatchEnd) for e in events)
    assert int(loaded.model.train_calls) == steps > 0  # saved with the weights: a resume goes on alternating


def test_explain_writes_the_squares_and_the_zoomed_crops(racnn_run, tmp_path, capsys):
    data, run, _ = racnn_run
    photo = sorted(Path(data).rglob("*.png"))[0] if list(Path(data).rglob("*.png")) else \
        sorted(Path(data).rglob("*.jpg"))[0]
    out = tmp_path / "maps"
    assert cli(["explain", str(run), str(photo), "--out", str(out), "--method", "racnn"]) == 0
    stem = photo.stem
    doc = json.loads((out / f"{stem}.racnn.squares.json").read_text())
    h, w = read_image(photo).shape[:2]
    assert doc["size"] == [h, w] and [s["scale"] for s in doc["squares"]] == [2, 3]
    s2, s3 = doc["squares"]
    assert s3["half_side"][0] < s2["half_side"][0]  # scale 3 zooms further
    x0, y0, x1, y1 = s2["box"]
    assert x0 <= s3["box"][0] and s3["box"][2] <= x1 + 1e-6  # scale 3's square lies in scale 2's
    for s in (s2, s3):
        crop = read_image(out / s["png"])
        assert crop.shape == (SIZE, SIZE, 3)
    maps = json.loads((out / f"{stem}.racnn.json").read_text())["maps"][0]
    assert maps["names"] == ["scale 2 square", "scale 3 square"]
    peak = maps["parts"][0]["peak"]
    assert abs(peak[0] - s2["centre"][0]) <= 1.0 and abs(peak[1] - s2["centre"][1]) <= 1.0
    assert maps["parts"][1]["duplicate_of"] is None  # scale 3's square lies in scale 2's by design: not a repeat


def test_zoom_views_cut_the_square_from_the_photo():
    img = np.zeros((40, 60, 3), np.uint8)
    img[10:30, 15:45] = 200  # the square (0.5, 0.5, 0.25) of a 60 × 40 photo: x 15..45, y 10..30
    v = views_of(img, np.array([[0.5, 0.5, 0.25], [0.5, 0.5, 0.125]]), 20)
    assert v.boxes()[0] == pytest.approx((15.0, 10.0, 45.0, 30.0))
    assert v.crops[0].min() >= 199 and v.crops[1].min() >= 199  # all inside the bright square
    assert v.to_dict()["squares"][0]["centre"] == pytest.approx([29.5, 19.5])


def test_export_writes_the_two_squares_as_parts(racnn_run, tmp_path, capsys):
    data, run, _ = racnn_run
    out = tmp_path / "export"
    assert cli(["export", str(run), str(data), "--out", str(out), "--crop-size", "32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["crops"] == 2 * summary["exported"] > 0  # scale 2 and scale 3: two parts per photo


def test_evaluate_scores_the_square_centres_as_two_parts(racnn_run, capsys):
    data, run, _ = racnn_run
    assert cli(["evaluate", str(run), str(data), "--json", "--no-field-marks"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["top1_per_scale"]) == {"scale 1", "scale 2", "scale 3", "fused"}
    assert doc["top1"] == pytest.approx(doc["top1_per_scale"]["fused"])
    sq = doc["squares"]  # mean and sd over the test photos; scale 3's square lies inside scale 2's, so it is smaller
    assert set(sq) == {"scale 2", "scale 3"} and set(sq["scale 2"]) == {"centre_x", "centre_y", "half_side"}
    assert 0 < sq["scale 3"]["half_side"][0] <= sq["scale 2"]["half_side"][0] <= 0.5
    assert all(0 <= mean <= 1 and sd >= 0 for d in sq.values() for mean, sd in d.values())
    own = doc["protocol"]["own"]
    assert "RA-CNN squares" in own["protocol"]["maps"] and own["keypoint_error"] == own["keypoint_error"]
    from engine.evaluation.evaluate import evaluate_run

    result = evaluate_run(load_run(run), scan(str(data)))
    assert result.info["parts"] == 2 and result.info["source"] == "racnn squares"
    flat = [v for d in result.info["squares"].values() for pair in d.values() for v in pair]
    assert flat == pytest.approx([v for d in sq.values() for pair in d.values() for v in pair])
    assert cli(["evaluate", str(run), str(data), "--no-field-marks"]) == 0
    assert "squares on the photo (mean ± sd over the test photos" in capsys.readouterr().out


def test_settings_errors_are_one_line(racnn_run, tmp_path, capsys):
    data, _, _ = racnn_run
    base = dict(data="d", out="o")
    with pytest.raises(ConfigError, match=r"model='mobilenet_v2': .*racnn_mobilenet_v2"):
        TrainConfig(**base, method="racnn", model="mobilenet_v2")
    with pytest.raises(ConfigError, match=r"racnn_smallnet is an RA-CNN model: use --method racnn"):
        TrainConfig(**base, method="ce", model="racnn_smallnet")
    with pytest.raises(ConfigError, match=r"fine=True: .*racnn"):
        TrainConfig(**base, method="racnn", model="racnn_smallnet", fine=True)
    with pytest.raises(ConfigError, match=r"apn_warmup"):
        TrainConfig(**base, method="racnn", model="racnn_smallnet", extra={"apn_warmup": -1})
    with pytest.raises(ConfigError, match=r"margin"):
        TrainConfig(**base, method="racnn", model="racnn_smallnet", extra={"margin": -0.1})
    with pytest.raises(ConfigError, match=r"apn_gradient='ring': use boxcar"):
        TrainConfig(**base, method="racnn", model="racnn_smallnet", extra={"apn_gradient": "ring"})
    with pytest.raises(ConfigError, match=r"apn_half=0.5: .*under 0.5 \(the whole side\)"):
        TrainConfig(**base, method="racnn", model="racnn_smallnet", extra={"apn_half": 0.5})
    with pytest.raises(ConfigError, match=r"apn_half=0.1: .*above 0.167"):
        TrainConfig(**base, method="racnn", model="racnn_smallnet", extra={"apn_half": 0.1})
    with pytest.raises(ConfigError, match=r"apn_lr=2: .*from 0 to 1"):
        TrainConfig(**base, method="racnn", model="racnn_smallnet", extra={"apn_lr": 2})
    with pytest.raises(ConfigError, match=r"gain=True: .*RA-CNN has attention of its own"):
        TrainConfig(**base, method="racnn", model="racnn_smallnet", gain=True)
    with pytest.raises(ConfigError, match=r"attention='cbam': .*racnn_smallnet is an RA-CNN model"):
        TrainConfig(**base, method="racnn", model="racnn_smallnet", attention="cbam")
    for argv, expect in ((["--method", "racnn"], "racnn_mobilenet_v2"),
                         (["--method", "racnn", "--model", "racnn_smallnet", "--apn-warmup", "-3"], "apn_warmup=-3"),
                         (["--method", "racnn", "--model", "racnn_smallnet", "--apn-lr", "-1"], "apn_lr=-1.0"),
                         (["--method", "racnn", "--model", "racnn_smallnet", "--img-size", "64", "--scale-size",
                           "128"], "scale_size=128"),
                         (["--method", "ce", "--scale-size", "128"], "use it with --method racnn"),
                         (["--method", "ce", "--apn-gradient", "thirds"], "apn_gradient='thirds': --apn-gradient is "
                                                                          "RA-CNN's"),
                         (["--method", "ce", "--apn-half", "0.4"], "apn_half=0.4: --apn-half is RA-CNN's"),
                         (["--method", "racnn", "--model", "racnn_smallnet", "--apn-half", "0.6"], "apn_half=0.6"),
                         (["--method", "racnn", "--model", "racnn_smallnet", "--nproc", "2"], "use --nproc 1")):
        assert cli(["train", str(data), "--out", str(tmp_path / "x"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], err


def test_a_resumed_run_goes_on_alternating(racnn_run, tmp_path):
    data, run, events = racnn_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = int(load_run(copy).model.train_calls)
    cfg = TrainConfig(data=str(data), out=str(copy), model="racnn_smallnet", method="racnn", epochs=3, img_size=SIZE,
                      batch_size=6, device="cpu", cache_mb=32, seed=0, extra={"apn_warmup": 2})
    resumed = []
    drive(train(cfg, resume=True), resumed.append)
    steps = sum(isinstance(e, BatchEnd) for e in resumed)
    assert int(load_run(copy).model.train_calls) == before + steps and steps > 0


def test_a_run_saved_before_the_apns_had_their_own_rate_resumes(racnn_run, tmp_path, caplog):
    """A run saved with two optimizer groups (before --apn-lr gave the APNs a third) goes on from its weights, the
    momentum afresh, and the log says so."""
    import logging

    data, run, _events = racnn_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    state = torch.load(copy / "resume.pt", map_location="cpu", weights_only=True)
    groups = state["optimizer"]["param_groups"]
    merged = {**groups[1], "params": groups[1]["params"] + groups[2]["params"]}
    state["optimizer"]["param_groups"] = [groups[0], merged]
    torch.save(state, copy / "resume.pt")
    cfg = TrainConfig(data=str(data), out=str(copy), model="racnn_smallnet", method="racnn", epochs=3, img_size=SIZE,
                      batch_size=6, device="cpu", cache_mb=32, seed=0, extra={"apn_warmup": 2})
    with caplog.at_level(logging.WARNING, logger="engine.training.loop"):
        resumed = []
        drive(train(cfg, resume=True), resumed.append)
    assert any(isinstance(e, EpochEnd) for e in resumed)
    assert "the optimizer's momentum starts afresh" in caplog.text and "weights of epoch 2" in caplog.text


def test_the_apns_learn_at_their_own_rate(racnn_run):
    """At the head's rate the APNs ran to the photo's edge (docs/METHODS.md#racnn): an optimizer group of their own,
    at --apn-lr (default APN_LR), every other new layer at the head's rate."""
    from engine.models.racnn import APN_LR
    from engine.training.loop import make_optimizer

    data, _run, _events = racnn_run
    model = create_model("racnn_smallnet", 3)
    for extra, rate in (({}, APN_LR), ({"apn_lr": 0.002}, 0.002)):
        cfg = TrainConfig(data=str(data), out="unused", model="racnn_smallnet", method="racnn", device="cpu",
                          extra=extra)
        groups = make_optimizer(cfg, model).param_groups
        apns = {id(p) for p in model.apns.parameters()}
        assert [g["lr"] for g in groups] == [cfg.lr_backbone, cfg.lr_head, rate]
        assert {id(p) for p in groups[2]["params"]} == apns and not apns & {id(p) for p in groups[1]["params"]}
        assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_a_run_at_a_scale_size_saves_it_and_loads_it(racnn_run, tmp_path):
    """--img-size 64 --scale-size 32: the photo at 64 px, each scale at 32 (model.json's arch keeps it, a run saved
    without it loads at the photo's size); the arch keeps --apn-half too, and a run saved without it loads with the
    paper's ¼."""
    data, run, _events = racnn_run
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), model="racnn_smallnet", method="racnn", epochs=1,
                      img_size=SIZE, batch_size=6, device="cpu", cache_mb=32, seed=0,
                      extra={"apn_warmup": 2, "scale_size": 32})
    drive(train(cfg), lambda e: None)
    loaded = load_run(tmp_path / "run")
    assert loaded.meta["arch"]["scale_size"] == 32 and loaded.model.scale_size == 32
    assert loaded.meta["arch"]["apn_half"] == 0.4 == loaded.model.init_half  # --apn-half's default, kept in arch
    with torch.no_grad():
        inputs = loaded.model.racnn_outputs(torch.rand(1, 3, SIZE, SIZE)).inputs
    assert [tuple(i.shape[-2:]) for i in inputs] == [(32, 32)] * 3
    old = load_run(run)
    assert "scale_size" not in old.meta["arch"] and old.model.scale_size is None
    meta = json.loads((run / "model.json").read_text())
    meta["arch"].pop("apn_half")  # a run saved before --apn-half: its squares were the paper's
    copy = tmp_path / "before"
    shutil.copytree(run, copy)
    (copy / "model.json").write_text(json.dumps(meta))
    assert load_run(copy).model.init_half == 0.25


def test_square_summary_gives_each_scales_mean_and_spread():
    from engine.evaluation.evaluate import square_summary

    squares = np.array([[[0.4, 0.5, 0.25], [0.3, 0.6, 0.1]], [[0.6, 0.5, 0.35], [0.5, 0.4, 0.1]]])
    got = square_summary(squares)
    assert got["scale 2"] == {"centre_x": [pytest.approx(0.5), pytest.approx(0.1)], "centre_y": [0.5, 0.0],
                              "half_side": [pytest.approx(0.3), pytest.approx(0.05)]}
    assert got["scale 3"]["half_side"] == [pytest.approx(0.1), pytest.approx(0.0)]
    from engine.evaluation.scores import format_table

    text = format_table({}, {"split": "val", "n_test": 2, "n_train": 5, "squares": got})  # evaluate --split val
    assert "2 val / 5 train images" in text and "(mean ± sd over the val photos, fractions of its side): scale 2 " \
        "centre (0.500 ± 0.100, 0.500 ± 0.000), half side 0.300 ± 0.050; scale 3 " in text


def test_racnn_defaults_are_saved_and_an_older_run_keeps_its_own():
    """A new racnn config carries the APN settings it trains with (so its resume keeps them); a config saved before
    --apn-gradient existed reads as what it trained with then; the config's defaults are the model module's."""
    from engine.models.racnn import APN_GRADIENT, APN_HALF, APN_LR, APN_WARMUP
    from engine.training.config import RACNN_BEFORE_THIRDS, RACNN_DEFAULTS
    from engine.training.loop import model_kwargs

    assert RACNN_DEFAULTS == {"apn_warmup": APN_WARMUP, "apn_lr": APN_LR, "apn_gradient": APN_GRADIENT,
                              "apn_half": APN_HALF}
    cfg = TrainConfig(data="d", out="o", method="racnn", model="racnn_smallnet", extra={"apn_lr": 0.005})
    assert cfg.extra == {**RACNN_DEFAULTS, "apn_lr": 0.005}
    assert model_kwargs(cfg) == {"apn_half": APN_HALF}  # model.json's arch keeps it, so the run loads as it trained
    old = {**cfg.to_dict(), "extra": {"apn_lr": 0.005}}
    assert TrainConfig.upgrade_dict(old)["extra"] == {"apn_warmup": 20, "apn_lr": 0.005, "apn_gradient": "boxcar",
                                                      "apn_half": 0.25}
    thirds = {**cfg.to_dict(), "extra": {"apn_gradient": "thirds", "apn_lr": 0.001, "apn_warmup": 76}}
    assert TrainConfig.upgrade_dict(thirds)["extra"]["apn_half"] == 0.25  # saved before --apn-half: the paper's
    assert RACNN_BEFORE_THIRDS["apn_lr"] == 1e-4
    assert TrainConfig(data="d", out="o", method="ce").extra == {}
