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


def test_the_form_sets_racnn_scale_size_as_the_cli_does(qtbot, data_dir, tmp_path):
    """Scale size and the first squares' half side (RA-CNN's --scale-size, --apn-half) only for RA-CNN; 448 -> 224
    and 0.4 build the CLI's config; a scale size above the image size is refused with the config's one-line error;
    an opened RA-CNN run's options come back, and do not follow the form to another method."""
    form = TrainForm()
    qtbot.addWidget(form)
    form.set_data(str(data_dir))
    form.set_out(str(tmp_path / "runs" / "new"))
    assert not form.scale_size.isEnabled()
    form.method.setCurrentIndex(form.method.findData("racnn"))
    form.model.setCurrentText("racnn_smallnet")
    assert form.scale_size.isEnabled() and form.scale_size.text() == "image size" and form.apn_half.isEnabled()
    form.img_size.setValue(448)
    form.scale_size.setValue(224)
    cfg = form.state.config
    assert cfg is not None and cfg.extra["scale_size"] == 224, form.state.error
    args = build_parser().parse_args(["train", str(data_dir), "--out", cfg.out, "--model", "racnn_smallnet",
                                      "--method", "racnn", "--img-size", "448", "--scale-size", "224"])
    assert config_from_args(args) == cfg.replace(pretrained=None)
    form.scale_size.setValue(512)
    assert form.state.config is None and not form.state.can_start
    assert form.state.error.startswith("scale_size=512: ") and "\n" not in form.state.error
    form.scale_size.setValue(224)
    form.apn_half.setValue(0.4)  # --apn-half 0.4
    cfg = form.state.config
    assert cfg is not None and cfg.extra["apn_half"] == 0.4, form.state.error
    args = build_parser().parse_args(["train", str(data_dir), "--out", cfg.out, "--model", "racnn_smallnet",
                                      "--method", "racnn", "--img-size", "448", "--scale-size", "224",
                                      "--apn-half", "0.4"])
    assert config_from_args(args) == cfg.replace(pretrained=None)
    form.set_config(cfg.replace(extra={**cfg.extra, "apn_half": 0.3}))  # an opened RA-CNN run: its options return
    assert form.scale_size.value() == 224 and form.apn_half.value() == 0.3
    assert form.state.config.extra == {**cfg.extra, "apn_half": 0.3}
    form.method.setCurrentIndex(form.method.findData("ce"))
    assert not form.scale_size.isEnabled() and not form.apn_half.isEnabled()
    assert form.state.config is not None and form.state.config.extra == {}, form.state.error
