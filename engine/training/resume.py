"""Starting and continuing a run: the run folder's state, the settings a resume must share with the run, and the
data a resume trains on (the run's saved split, :mod:`engine.data.split`).

A resume continues the same run:

* the settings that define the model, its data or its learning-rate schedule (:data:`RUN_KEYS`) must be the
  run's; another value is refused with the key, both values and what to do. ``fieldmark train --resume`` takes
  the settings that have no command-line flag from the run itself;
* ``--epochs`` may change: the rest of the schedule is re-planned without the learning rate rising
  (:meth:`engine.training.schedule.Schedule.resumed`), and the run says so;
* the training photos must be the ones saved with the run. Photos added since are left out (and listed); a
  training photo missing or changed stops the resume with their names, unless ``allow_data_change``
  (``--allow-data-change``): then the run goes on with the folder as it is, saves the new split and records the
  change in ``model.json`` (``data_changes``).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

import engine.runs as runs
from engine.data.records import DataReport
from engine.errors import CheckpointError, ConfigError, DataError
from engine.events import Message
from engine.training.config import TrainConfig
from engine.training.schedule import Schedule

#: Settings a resume must share with the run: the model, its data and split, the loss and the schedule.
RUN_KEYS = ("model", "method", "xi", "parts", "fine", "padding", "img_size", "part_channels", "seed", "batch_size",
            "lr_backbone", "lr_head", "mu", "lam", "mc_conc", "rotate", "equiv_backprop", "zoom", "momentum", "weight_decay",
            "gain", "gain_alpha", "gain_sigma", "gain_omega", "attention", "freeze_bn", "freeze_stages", "size_schedule",
            "warmup_epochs", "test_fraction", "validation_fraction", "crop_scale", "per_sample_mask", "amp", "extra")
#: Of those, the ones `fieldmark train` has no flag for: a CLI resume takes them from the run.
NO_FLAG_KEYS = ("part_channels", "momentum", "weight_decay", "warmup_epochs", "test_fraction", "crop_scale",
                "per_sample_mask", "amp", "extra", "cache_mb")


def saved_config(state: dict[str, Any]) -> dict[str, Any]:
    """The config a run's resume state was saved with, old key names renamed."""
    return TrainConfig.upgrade_dict(state.get("config") or {})


def run_config(run: str | Path) -> dict[str, Any] | None:
    """The config of the run in ``run`` (from resume.pt, else model.json), or None when there is none."""
    run = Path(run).expanduser()
    if (run / runs.RESUME).is_file():
        return saved_config(runs.load_resume(run))
    if runs.is_run(run):
        return TrainConfig.upgrade_dict(runs.read_meta(run).get("config") or {})
    return None


def check_same_run(cfg: TrainConfig, state: dict[str, Any]) -> None:
    """Refuse a resume whose settings differ from the run's in a :data:`RUN_KEYS` key."""
    old = saved_config(state)
    new = cfg.to_dict()
    for key in RUN_KEYS:
        if key in old and old[key] != new[key]:
            raise ConfigError(f"--resume with {key}={getattr(cfg, key)!r}, but the run was started with "
                              f"{key}={old[key]!r}: use the same settings, or a new --out folder for a new run")


def prepare_run(cfg: TrainConfig, resume: bool) -> tuple[Path, dict | None]:
    """The run folder and, for a resume, its saved state; refuses what cannot be started or continued."""
    run = Path(cfg.out).expanduser()
    if resume:
        if not (run / runs.RESUME).is_file():
            raise CheckpointError(f"{str(run)!r} has no complete epoch to resume from: start it without --resume")
        state = runs.load_resume(run)
        runs.remove_orphan_temps(run)
        check_same_run(cfg, state)
        done = int(state["epoch"])
        if cfg.epochs < done:
            raise ConfigError(f"--resume with epochs={cfg.epochs}, but the run has already trained {done} epochs: "
                              f"give --epochs {done} or more")
        return run, state
    if run.is_dir():
        runs.remove_orphan_temps(run)  # a run killed inside its first save left only these,
        if [p.name for p in run.iterdir()] == [runs.SPLIT]:  # or the split it writes first: start it again
            (run / runs.SPLIT).unlink()
    if run.exists() and any(run.iterdir()):
        if (run / runs.MODEL_JSON).exists() or (run / runs.RESUME).exists():
            raise ConfigError(f"run folder {str(run)!r} already holds a run: add --resume to continue it, "
                              "or choose another --out")
        raise ConfigError(f"run folder {str(run)!r} exists and is not empty: choose a new or empty --out folder")
    return run, None


def check_writable(run: Path) -> None:
    """Fail before training rather than at the end of the first epoch when the run folder cannot be written."""
    try:
        run.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write the run folder {str(run)!r} ({exc.strerror or exc}): choose an --out "
                          "folder you can write to") from exc


def published_epoch(run: Path) -> int | None:
    """The epoch of the run's ``model.json``, or None when it cannot be read."""
    try:
        return int(runs.read_meta(run).get("epoch", 0))
    except CheckpointError:
        return None


def resumed_schedule(state: dict, epoch: int, cfg: TrainConfig, steps: int) -> Generator[Message, None, Schedule]:
    """The schedule a resume goes on with: the saved one (runs saved without one: planned from their config),
    re-planned when --epochs or the steps per epoch changed (see :mod:`engine.training.schedule`)."""
    old = state.get("config") or {}
    saved = (Schedule.from_dict(state["schedule"]) if state.get("schedule") else Schedule.plan(
        int(old.get("epochs", cfg.epochs)), steps, float(old.get("warmup_epochs", cfg.warmup_epochs))))
    schedule = saved.resumed(epoch, cfg.epochs, steps)
    if schedule != saved:
        factor = schedule.factor(epoch * steps)
        text = (f"the learning-rate schedule is re-planned for {cfg.epochs} epochs instead of {saved.epochs}"
                + (f" ({steps} steps an epoch instead of {saved.steps_per_epoch})" if steps != saved.steps_per_epoch
                   else "") + f": it goes on from {factor:.4g} × the base rates after epoch {epoch} and decays to 0 "
                f"at epoch {cfg.epochs}, never rising")
        if factor < 1e-3:
            yield Message("warning", text + "; the run had finished its schedule, so the extra epochs will change "
                                            "little: to train on at a real learning rate, start a new run")
        else:
            yield Message("info", text)
    return schedule


@dataclass
class TrainingData:
    """What a run trains on: the report (in the run's split), whether the split is to be saved with the next
    epoch (a new run, a run saved before splits were kept, an allowed change) and the change to record."""

    report: DataReport
    save_split: bool
    change: dict[str, Any] | None = None


def training_data(run: Path, report: DataReport, state: dict[str, Any] | None,
                  allow_data_change: bool) -> Generator[Message, None, TrainingData]:
    """A new run trains on the scan; a resume on the run's saved split (see the module docstring). Yields the
    lines the user should see as Message events."""
    if state is None:
        return TrainingData(report, True)
    classes = list(state.get("classes") or [])
    if list(report.classes) != classes:
        unknown = [c for c in report.classes if c not in classes][:3]
        raise CheckpointError(f"checkpoint has {len(classes)} classes, the dataset has {len(report.classes)}"
                              + (f" ({unknown} are new)" if unknown else "") + ": resume on the run's own data "
                              "(move new class folders aside), or start a new run")
    data = runs.run_split(run, report, saved_config(state))
    check = data.check
    if check is not None and check.foreign:
        raise DataError(f"{report.root!r} holds none of the {check.saved} photos the run {str(run)!r} was trained "
                        "on: resume with the run's own data folder, or start a new run on this one")
    epoch = int(state["epoch"])
    if check is not None and check.train_changed and not allow_data_change:
        raise DataError(f"the training photos of the run {str(run)!r} changed since it saved its split: "
                        f"{check.describe_train_change()}. Put them back as they were, or resume with "
                        "--allow-data-change to go on with the folder as it is now (recorded in the run)")
    for level, text in data.messages:
        yield Message(level, text)
    if check is None:
        return TrainingData(data.report, True)
    if not check.train_changed:
        return TrainingData(data.report, False)
    change = {"after_epoch": epoch, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "missing": {k: v for k, v in check.missing.items() if v},
              "changed": {k: v for k, v in check.changed.items() if v}, "added_left_out": len(check.added)}
    yield Message("warning", f"--allow-data-change: the run goes on after epoch {epoch} with the training photos "
                             f"as they are now ({check.describe_train_change()}); recorded in the run's "
                             f"{runs.MODEL_JSON}")
    return TrainingData(data.report, True, change)


def data_changes(run: Path, change: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The run's recorded data changes (``model.json``), plus ``change``."""
    past: list[dict[str, Any]] = []
    if runs.is_run(run):
        try:
            past = list(runs.read_meta(run).get("data_changes") or [])
        except CheckpointError:
            past = []
    return past + ([change] if change else [])
