"""The Train form's attention options: GAIN (check box, α, σ, ω) and the attention blocks build what the CLI builds,
come back from a run's config, stay off for TASN, and the run the Train page starts with them has them."""

from __future__ import annotations

from PySide6.QtCore import Qt

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


def test_the_train_page_starts_a_run_whose_model_json_has_gain_and_the_blocks(qtbot, data_dir, tmp_path, monkeypatch):
    """Start on the Train page with GAIN and CBAM blocks; the child's job (run here, in-process: the same
    :mod:`app.child` code on the arguments the page gives the child) makes a run that says so in model.json and whose
    model has the blocks (the maps Explore's ``attention`` method shows)."""
    import io

    from app import child
    from app.train.page import TrainPage
    from engine.models.attention import CBAM, attention_blocks
    from engine.runs import load_run, read_meta

    page, out = TrainPage(), tmp_path / "runs" / "gain-cbam"
    qtbot.addWidget(page)
    form = page.form
    form.set_data(str(data_dir))
    form.method.setCurrentIndex(form.method.findData("mcloss"))
    form.model.setCurrentText("smallnet")
    for spin, value in ((form.img_size, 32), (form.batch_size, 4), (form.epochs, 1)):
        spin.setValue(value)
    form.device.setCurrentText("cpu")
    form.set_out(str(out))
    form.gain.setChecked(True)
    form.gain_terms["gain_omega"].setValue(20.0)
    form.attention.setCurrentIndex(form.attention.findData("cbam"))
    assert form.state.error == "", form.state.error
    started: list[list[str]] = []
    monkeypatch.setattr(page.job, "start", lambda args, *rest: started.append(args))
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert len(started) == 1 and started[0][0] == "train"
    args = child.build_parser().parse_args(started[0])
    child.run_job(child.train_job(args, lambda: False), io.StringIO())
    cfg = read_meta(out)["config"]
    assert (cfg["gain"], cfg["gain_alpha"], cfg["gain_sigma"], cfg["gain_omega"], cfg["attention"]) == \
        (True, 1.0, 0.5, 20.0, "cbam")
    blocks = attention_blocks(load_run(out).model)
    assert len(blocks) == 2 and all(isinstance(b, CBAM) for b in blocks)
