"""One tiny toy-birds run for the Explore, Compare and Export tests, built once per test session.

4 classes × 8 images of 96 px (CUB layout with keypoints), smallnet with MC-Loss at 96 px for 2 epochs: a few
seconds on a loaded 2-core machine. Every test module's session fixture calls :func:`toy_run`, which builds into
pytest's base temporary folder once and reuses it after.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.runs import is_run


@dataclass(frozen=True)
class ToyRun:
    data: Path
    run: Path


def toy_run(base: Path) -> ToyRun:
    """Generate the data and train the run under ``base`` (pytest's basetemp), or reuse them."""
    from engine.toybirds import dataset as toybirds
    from engine.training.config import TrainConfig
    from engine.events import drive
    from engine.training.loop import train

    root = base / "toyrun"
    data, run = root / "birds", root / "run"
    if not (data / "toybirds.json").is_file():
        toybirds.generate(data, classes=4, per_class=8, size=96)
    if not is_run(run):
        cfg = TrainConfig(data=str(data), out=str(run), model="smallnet", method="mcloss", xi=3, epochs=2,
                          img_size=96, batch_size=8, device="cpu", cache_mb=64, seed=0)
        drive(train(cfg))
    return ToyRun(data, run)


def open_toy(window, qtbot, toy: ToyRun) -> None:
    """Open the toy data in the library and its run as the active run."""
    with qtbot.waitSignal(window.library.data_changed, timeout=30000):
        window.open_folder(str(toy.data))
    window.open_run(str(toy.run), open_data=False)
