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
    form.set_config(cfg.replace(freeze_bn=False, freeze_stages=0, compile=False, size_schedule=None).to_dict())
    built = form.build_config()
    assert (built.freeze_bn, built.freeze_stages, built.compile, built.size_schedule) == (False, 0, False, None)
