"""The Train form and the speed options (``--freeze-bn``, ``--freeze-stages``, ``--compile``, ``--size-schedule``):
the form has no fields for them (``fieldmark train`` sets them), and a run's values stay in the config it builds,
so Resume in the app continues the same run."""

from __future__ import annotations

from app.train.form import TrainForm


def test_a_runs_speed_options_stay_in_the_forms_config(qtbot, data_dir, tmp_path):
    form = TrainForm()
    qtbot.addWidget(form)
    form.set_data(str(data_dir))
    form.set_out(str(tmp_path / "runs" / "new"))
    cfg = form.build_config().replace(method="parts", pretrained="DEFAULT", freeze_bn=True, freeze_stages=2,
                                      compile=True, size_schedule="0.5:320", img_size=448)
    form.set_config(cfg.to_dict())
    built = form.build_config()
    assert (built.freeze_bn, built.freeze_stages, built.compile, built.size_schedule) == (True, 2, True, "0.5:320")
    form.set_config(cfg.replace(freeze_bn=False, freeze_stages=0, compile=False, size_schedule="none").to_dict())
    built = form.build_config()
    assert (built.freeze_bn, built.freeze_stages, built.compile, built.size_schedule) == (False, 0, False, "none")


def test_a_run_at_the_parts_defaults_keeps_them_automatic(qtbot, data_dir, tmp_path):
    """A parts run trained at its speed defaults opens with them automatic: they follow Method and the size, so
    switching the opened run's form to CE at 224 px builds a valid config with the speed options off."""
    form = TrainForm()
    qtbot.addWidget(form)
    form.set_data(str(data_dir))
    form.set_out(str(tmp_path / "runs" / "new"))
    cfg = form.build_config().replace(method="parts", pretrained="DEFAULT", img_size=448, epochs=14,
                                      freeze_stages=None, size_schedule=None, test_every=None)
    assert (cfg.freeze_stages, cfg.size_schedule, cfg.test_every) == (2, "0.5:320", 7)
    form.set_config(cfg.to_dict())
    built = form.build_config()
    assert (built.method, built.freeze_stages, built.size_schedule) == ("parts", 2, "0.5:320")
    form.revalidate()
    assert form.state.can_start and form.state.note.endswith(
        ". The first 2 backbone stages frozen; epochs 1-7 at 320 px, 8-14 at 448 px; a test pass after epochs 7 and "
        "14. Ready.")
    assert form.message.text() == form.state.note
    form.method.setCurrentIndex(form.method.findData("ce"))
    form.img_size.setValue(224)
    built = form.build_config()
    assert (built.method, built.freeze_stages, built.size_schedule, built.test_every) == ("ce", 0, "none", 1)
    form.revalidate()
    assert form.state.note.endswith("Ready.") and "frozen" not in form.state.note
