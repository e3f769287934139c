"""The Train form offers RA-CNN (``--method racnn``): its models, the options that do not apply turned off, and the
config it builds is the CLI's."""

from __future__ import annotations

from engine.cli import build_parser
from engine.cli.train import config_from_args
from engine.models import list_models

from app.train.form import TrainForm


def test_the_form_trains_racnn_as_the_cli_does(qtbot, data_dir, tmp_path):
    form = TrainForm()
    qtbot.addWidget(form)
    form.set_data(str(data_dir))
    form.set_out(str(tmp_path / "runs" / "new"))
    with qtbot.waitSignal(form.config_changed):
        form.method.setCurrentIndex(form.method.findData("racnn"))
    assert form.method.currentText() == "RA-CNN"
    assert [form.model.itemText(i) for i in range(form.model.count())] == list_models("racnn")
    assert form.model.currentText() == "racnn_mobilenet_v2"
    assert not any(w.isEnabled() for w in (form.fine, form.padding, form.attention, form.gain, form.xi, form.parts))
    form.model.setCurrentText("racnn_smallnet")
    cfg = form.state.config
    assert cfg is not None, form.state.error
    assert (cfg.method, cfg.model, cfg.fine, cfg.gain, cfg.attention) == ("racnn", "racnn_smallnet", False, False,
                                                                          "none")
    args = build_parser().parse_args(["train", str(data_dir), "--out", cfg.out, "--model", "racnn_smallnet",
                                      "--method", "racnn"])
    assert config_from_args(args) == cfg.replace(pretrained=None)
    form.method.setCurrentIndex(form.method.findData("ce"))
    assert form.model.currentText() == "mobilenet_v2" and form.fine.isEnabled()
