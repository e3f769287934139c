"""The Train form's attention options: GAIN (check box, α, σ, ω) and the attention blocks build what the CLI builds,
come back from a run's config, and stay off for TASN."""

from __future__ import annotations

from engine.cli import build_parser
from engine.cli.train import config_from_args
from engine.training.config import TrainConfig

from app.train.form import TrainForm


def make_form(qtbot, data_dir, tmp_path) -> TrainForm:
    form = TrainForm()
    qtbot.addWidget(form)
    form.set_data(str(data_dir))
    form.set_out(str(tmp_path / "runs" / "new"))
    form.model.setCurrentText("smallnet")
    return form


def test_gain_and_attention_build_what_the_cli_builds(qtbot, data_dir, tmp_path):
    form = make_form(qtbot, data_dir, tmp_path)
    cfg = form.state.config
    assert (cfg.gain, cfg.gain_alpha, cfg.attention) == (False, None, "none")
    assert not any(spin.isEnabled() for spin in form.gain_terms.values())  # α, σ, ω follow the check box
    with qtbot.waitSignal(form.config_changed):
        form.gain.setChecked(True)
    assert all(spin.isEnabled() for spin in form.gain_terms.values())
    assert (form.state.config.gain_alpha, form.state.config.gain_sigma, form.state.config.gain_omega) == (1, 0.5, 10)
    form.gain_terms["gain_alpha"].setValue(0.5)
    form.attention.setCurrentIndex(form.attention.findData("cbam"))
    cfg = form.state.config
    assert (cfg.gain, cfg.gain_alpha, cfg.attention) == (True, 0.5, "cbam")
    args = build_parser().parse_args(["train", str(data_dir), "--out", cfg.out, "--model", "smallnet", "--gain",
                                      "--gain-alpha", "0.5", "--attention", "cbam"])
    assert config_from_args(args) == cfg.replace(pretrained=None)
    form.gain_terms["gain_sigma"].setValue(0.0)  # the config's own message, naming the field
    assert form.state.config is None and form.state.error.startswith("gain_sigma=0.0")
    form.gain_terms["gain_sigma"].setValue(0.4)
    form.method.setCurrentIndex(form.method.findData("tasn"))
    assert not form.gain.isEnabled() and not form.attention.isEnabled()
    assert not any(spin.isEnabled() for spin in form.gain_terms.values())
    if form.state.config is not None:  # a TASN model is installed: both stay off for it
        assert (form.state.config.gain, form.state.config.attention) == (False, "none")


def test_a_runs_gain_and_attention_come_back_and_older_runs_have_neither(qtbot, data_dir, tmp_path):
    form = make_form(qtbot, data_dir, tmp_path)
    saved = TrainConfig(data=str(data_dir), out=str(tmp_path / "runs" / "new"), model="smallnet", method="parts",
                        gain=True, gain_alpha=2.0, gain_omega=20.0, attention="residual")
    form.set_config(saved.to_dict())
    assert form.gain.isChecked() and form.gain_terms["gain_alpha"].value() == 2.0
    assert form.attention.currentData() == "residual" and form.build_config() == saved
    old = {k: v for k, v in saved.to_dict().items() if not k.startswith("gain") and k != "attention"}
    form.set_config(old)
    assert not form.gain.isChecked() and form.attention.currentData() == "none"
    assert form.gain_terms["gain_alpha"].value() == 1.0  # the paper's α, ready when GAIN is checked
    assert form.build_config() == TrainConfig.from_dict(old)
