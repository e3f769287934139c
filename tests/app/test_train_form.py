"""The training form: the engine's TrainConfig validates every edit; the form builds what the CLI builds."""

from __future__ import annotations

from engine.cli import build_parser
from engine.cli.train import config_from_args
from engine.models import list_models
from engine.training.config import OTHER_SIZE_EPOCHS_BATCH, PARTS_SIZE_EPOCHS_BATCH, TrainConfig

from app.train.form import TrainForm


def make_form(qtbot, data_dir, tmp_path) -> TrainForm:
    form = TrainForm()
    qtbot.addWidget(form)
    form.set_data(str(data_dir))
    form.set_out(str(tmp_path / "runs" / "new"))
    return form


def test_defaults_are_valid_and_errors_come_from_the_config(qtbot, data_dir, tmp_path):
    form = make_form(qtbot, data_dir, tmp_path)
    assert form.state.config is not None and form.state.can_start and not form.state.error
    with qtbot.waitSignal(form.config_changed) as blocker:
        form.epochs.setValue(0)
    state = blocker.args[0]
    assert state.config is None and not state.can_start and state.error.startswith("epochs=0")
    assert form.message.text() == state.error and form.message.property("error") is True
    form.epochs.setValue(3)
    form.img_size.setValue(16)
    assert form.state.error.startswith("img_size=16")
    form.img_size.setValue(64)
    form.mu.setText("lots")
    assert form.state.error.startswith("mu='lots'")
    form.mu.setText("0.01")
    assert form.state.config.mu == 0.01
    form.mc_conc.setText("much")  # MC-Loss's concentration weight: a number, or empty for the default
    assert form.state.error.startswith("mc_conc='much'") and "leave it empty" in form.state.error
    form.mc_conc.setText("-3")
    assert form.state.error.startswith("mc_conc=-3.0")
    form.mc_conc.setText("250")
    assert form.state.config.mc_conc == 250.0
    form.method.setCurrentIndex(form.method.findData("ce"))
    assert not form.mc_conc.isEnabled()  # MC-Loss only
    form.method.setCurrentIndex(form.method.findData("mcloss"))
    assert form.mc_conc.isEnabled()
    form.set_data(str(tmp_path / "nowhere"))
    assert "does not exist" in form.state.error


def test_models_follow_the_method(qtbot, data_dir, tmp_path):
    form = make_form(qtbot, data_dir, tmp_path)
    models = lambda: [form.model.itemText(i) for i in range(form.model.count())]  # noqa: E731
    assert models() == list_models("partnet")
    tasn = form.method.findData("tasn")
    if list_models("tasn"):
        form.method.setCurrentIndex(tasn)
        assert models() == list_models("tasn") and form.state.config.method == "tasn"
    else:
        assert not form.method.model().item(tasn).isEnabled()
    form.method.setCurrentIndex(form.method.findData("ce"))
    assert models() == list_models("partnet") and form.state.config.method == "ce"


def test_an_output_folder_holding_a_run_offers_resume_not_start(qtbot, data_dir, tmp_path):
    form = make_form(qtbot, data_dir, tmp_path)
    run = tmp_path / "runs" / "old"
    run.mkdir(parents=True)
    (run / "model.json").write_text("{}")
    (run / "resume.pt").write_bytes(b"x")
    form.set_out(str(run))
    assert form.state.config is not None and form.state.can_resume and not form.state.can_start
    (run / "resume.pt").unlink()
    (run / "model.json").unlink()
    (run / "other.txt").write_text("x")
    form.set_out(str(tmp_path / "runs"))
    form.set_out(str(run))
    assert "not an empty folder" in form.state.error


def test_the_form_builds_the_config_the_cli_builds(qtbot, data_dir, tmp_path):
    form = make_form(qtbot, data_dir, tmp_path)
    form.model.setCurrentText("smallnet")
    form.method.setCurrentIndex(form.method.findData("ce"))
    form.xi.setValue(2)
    form.mu.setText("0.5")
    form.mc_conc.setText("20")
    form.lam.setValue(4.0)
    form.epochs.setValue(7)
    form.img_size.setValue(96)
    form.batch_size.setValue(8)
    form.seed.setValue(5)
    form.device.setCurrentText("cpu")
    out = str(tmp_path / "runs" / "new")
    args = build_parser().parse_args(["train", str(data_dir), "--out", out, "--model", "smallnet", "--method", "ce",
                                      "--xi", "2", "--mu", "0.5", "--lam", "4", "--epochs", "7", "--img-size", "96",
                                      "--batch-size", "8", "--seed", "5", "--device", "cpu", "--mc-conc", "20"])
    assert form.build_config() == config_from_args(args)
    form.set_config(form.build_config().replace(epochs=9, pretrained="DEFAULT"))
    assert form.epochs.value() == 9 and form.build_config().pretrained == "DEFAULT"


def test_shared_parts_in_the_form_build_what_the_cli_builds(qtbot, data_dir, tmp_path):
    form = make_form(qtbot, data_dir, tmp_path)
    assert not form.parts.isEnabled() and form.fine.isChecked()  # MC-Loss: ξ, μ, λ, stride-16 maps; no K
    cli = build_parser().parse_args(["train", str(data_dir), "--out", form.state.config.out])
    assert config_from_args(cli) == form.build_config().replace(pretrained=None)
    assert "stride 16" in form.message.text()  # the note describes the maps the run will have
    form.method.setCurrentIndex(form.method.findData("ce"))
    assert not form.fine.isChecked() and form.build_config().fine is False  # CE keeps 7 x 7 (Grad-CAM baseline)
    assert "stride 32" in form.message.text()
    form.method.setCurrentIndex(form.method.findData("parts"))
    assert form.parts.isEnabled() and not form.xi.isEnabled() and form.fine.isChecked()
    form.parts.setValue(4)
    cfg = form.state.config
    assert (cfg.method, cfg.parts, cfg.fine) == ("parts", 4, True)
    args = build_parser().parse_args(["train", str(data_dir), "--out", cfg.out, "--method", "parts", "--parts", "4"])
    # the parts method's own image size, epochs and batch (measured on cub-parts-dev), in the form as in the CLI
    assert (cfg.img_size, cfg.epochs, cfg.batch_size) == PARTS_SIZE_EPOCHS_BATCH == (448, 14, 16)
    assert config_from_args(args) == cfg.replace(pretrained=None)
    form.method.setCurrentIndex(form.method.findData("mcloss"))  # back: the other methods' defaults
    assert (form.img_size.value(), form.epochs.value(), form.batch_size.value()) == OTHER_SIZE_EPOCHS_BATCH
    form.epochs.setValue(3)  # a value the user chose is kept across a change of method
    form.method.setCurrentIndex(form.method.findData("parts"))
    assert (form.img_size.value(), form.epochs.value(), form.batch_size.value()) == (224, 3, 32)
    form.parts.setValue(0)
    assert form.state.config is None and form.state.error.startswith("parts=0")
    form.method.setCurrentIndex(form.method.findData("tasn"))
    assert not form.fine.isEnabled() and not form.fine.isChecked()


def test_padding_follows_the_method_and_reaches_the_config_as_the_cli_builds_it(qtbot, data_dir, tmp_path):
    form = make_form(qtbot, data_dir, tmp_path)
    assert form.padding.currentData() == "replicate" and form.state.config.padding == "replicate"  # MC-Loss
    form.method.setCurrentIndex(form.method.findData("ce"))
    assert form.padding.currentData() == "zeros" and form.state.config.padding == "zeros"
    form.padding.setCurrentIndex(form.padding.findData("reflect"))
    cfg = form.state.config
    assert cfg.padding == "reflect"
    args = build_parser().parse_args(["train", str(data_dir), "--out", cfg.out, "--method", "ce",
                                      "--padding", "reflect", "--model", cfg.model])
    assert config_from_args(args) == cfg.replace(pretrained=None)
    form.method.setCurrentIndex(form.method.findData("tasn"))
    assert not form.padding.isEnabled()
    assert form.state.config is not None and form.state.config.padding == "zeros", form.state.error
    # a run's saved config brings its padding back, an old one (no key) its zeros
    old = TrainConfig(data=str(data_dir), out=str(tmp_path / "o"), model="smallnet").to_dict()
    del old["padding"]
    form.set_config(old)
    assert form.method.currentData() == "mcloss" and form.padding.currentData() == "zeros"


def test_resume_keeps_the_runs_settings_that_have_no_field(qtbot, data_dir, tmp_path):
    """A run's warm-up, crop scale and learning rates are not in the form: filled from the run they stay the
    run's, so Resume continues it (and is not refused for settings the user cannot see); the CLI's --resume
    builds the same config."""
    from engine.training.config import TrainConfig
    from engine.events import drive
    from engine.training.loop import train

    run = tmp_path / "runs" / "old"
    cfg = TrainConfig(data=str(data_dir), out=str(run), model="smallnet", epochs=1, img_size=32, batch_size=4,
                      device="cpu", warmup_epochs=1.0, crop_scale=(0.6, 1.0), lr_backbone=0.02, cache_mb=64)
    drive(train(cfg))
    form = make_form(qtbot, data_dir, tmp_path)
    form.set_config(cfg.to_dict())
    form.epochs.setValue(2)
    built = form.build_config()
    assert built == cfg.replace(epochs=2) and form.state.can_resume
    args = build_parser().parse_args(["train", str(data_dir), "--out", str(run), "--model", "smallnet",
                                      "--epochs", "2", "--img-size", "32", "--batch-size", "4", "--device", "cpu",
                                      "--lr-backbone", "0.02", "--resume"])
    assert config_from_args(args) == built
    form.set_config({**cfg.to_dict(), "lr_backbone": 0.05})  # the automatic rate stays automatic
    form.pretrained.setCurrentText("DEFAULT")
    assert form.build_config().lr_backbone == 0.001
