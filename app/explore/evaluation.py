"""The active run's facts and part-evaluation figures (docs/METHODS.md#part-evaluation): its ``evaluation.json``
when present, else an Evaluate button that runs :func:`engine.evaluation.evaluate.evaluate` off the GUI thread with
progress."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from engine.data import DataReport
from engine.events import Message, Progress
from engine.runs import EVALUATION, RunInfo

from ..common.lane import Lane
from ..common.text import error_text
from .compute import ExploreRun, evaluate_job

log = logging.getLogger(__name__)

# (key, label, format): fractions shown as percentages; the engine gives keypoint error in % of the bird box
# and NMI / ARI × 100 already (docs/METHODS.md#published-protocol)
ROWS = (("top1", "Top-1 accuracy", "pct"), ("part_hit_rate", "Part hit rate", "pct"),
        ("peaks_in_box", "Peaks in the bird's box", "pct"), ("peaks_on_border", "Peaks on the map's border", "pct"),
        ("keypoint_error", "Keypoint error (% of box)", "f1"), ("nmi", "NMI (×100)", "f1"),
        ("ari", "ARI (×100)", "f1"), ("regions_per_class", "Regions per class", "f2"),
        ("mark_recall", "Field-mark recall", "pct"))


@dataclass(frozen=True)
class EvaluationState:
    """The figures shown for a run (None: none yet)."""

    run: str
    figures: dict[str, Any] | None


def _fmt(value: Any, kind: str) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    if kind == "pct":
        return f"{100 * value:.1f} %"
    return f"{value:.{int(kind[1:])}f}"


def figures_html(figures: dict[str, Any]) -> str:
    """A small table of the figures, with the random baseline beside them when present."""
    base = (figures.get("baselines") or {}).get("random") or {}
    rows = "".join(f"<tr><td>{label}</td><td align='right'><b>{_fmt(figures.get(key), kind)}</b></td>"
                   f"<td align='right' style='color:gray'>{_fmt(base.get(key), kind) if key in base else ''}</td></tr>"
                   for key, label, kind in ROWS if key in figures)
    head = "<tr><td></td><td align='right'>run</td><td align='right' style='color:gray'>random</td></tr>"
    return f"<table cellspacing='3'>{head}{rows}</table>" + marks_html(figures.get("marks") or [])


def marks_html(rows: list[dict[str, Any]]) -> str:
    """Toy birds: per class, each defining mark with ✓ (a part of the class lies on it in at least half of the
    test images) or ✗, and that fraction."""
    if not rows:
        return ""
    by_class: dict[str, list[str]] = {}
    for r in rows:
        frac = r.get("fraction")
        cell = f"{r['mark'].replace('_', ' ')} {'✓' if r.get('recalled') else '✗'}"
        if isinstance(frac, (int, float)):
            cell += f" <span style='color:gray'>{100 * frac:.0f}%</span>"
        by_class.setdefault(str(r["class"]), []).append(cell)
    found = sum(bool(r.get("recalled")) for r in rows)
    items = "".join(f"<li>{html.escape(c.replace('_', ' '))}: {', '.join(cells)}</li>" for c, cells in by_class.items())
    return f"<p><b>Field marks found: {found} of {len(rows)}</b></p><ul style='margin-left:-20px'>{items}</ul>"


class EvaluationPanel(QGroupBox):
    """Shows a run's figures; ``evaluation_changed`` carries an :class:`EvaluationState` when they change."""

    evaluation_changed = Signal(object)  # EvaluationState

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Run", parent)
        self.lane = Lane(self, "evaluate")
        self.info: RunInfo | None = None
        self.report: DataReport | None = None
        self.figures: dict[str, Any] | None = None
        self._notes: list[str] = []  # the last evaluation's lines about the data (the run's saved split)
        self.summary = QLabel("No run is open: train one, or File ▸ Open Run…", self)
        self.summary.setWordWrap(True)
        self.table = QLabel("", self)
        self.table.setWordWrap(True)
        self.evaluate_button = QPushButton("Evaluate", self)
        self.evaluate_button.setToolTip("Measure the run's parts against the keypoints of the test split")
        self.evaluate_button.clicked.connect(self._on_evaluate_button_clicked)
        self.progress = QProgressBar(self)
        self.progress.setVisible(False)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.hint = QLabel("", self)
        self.hint.setWordWrap(True)
        self.hint.setObjectName("hintLabel")
        row = QHBoxLayout()
        row.addWidget(self.evaluate_button)
        row.addWidget(self.progress, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(self.summary)
        lay.addWidget(self.table)
        lay.addLayout(row)
        lay.addWidget(self.status)
        lay.addWidget(self.hint)
        self._update()

    def set_run(self, run: ExploreRun | None) -> None:
        self.lane.cancel()
        self.info = run.run if run else None
        self.figures = run.evaluation if run else None
        self.status.setText("")
        self.progress.setVisible(False)
        self._update()
        self.evaluation_changed.emit(EvaluationState(self.info.path if self.info else "", self.figures))

    def shutdown(self) -> None:
        self.lane.shutdown()

    def set_report(self, report: DataReport | None) -> None:
        self.report = report
        self._update()

    def can_evaluate(self) -> tuple[bool, str]:
        if self.info is None:
            return False, "No run is open."
        if self.report is None:
            return False, "Open the run's data folder in the Library to evaluate it."
        if not self.report.has_parts:
            return False, "Evaluation needs part keypoints (a CUB-layout folder such as toy birds)."
        if list(self.report.classes) != list(self.info.classes):
            return False, "The open data set has other classes than the run: open the run's data to evaluate."
        return True, ""

    def _update(self) -> None:
        info = self.info
        if info is None:
            self.summary.setText("No run is open: train one, or File ▸ Open Run…")
        else:
            top1 = info.metrics.get("test_top1")
            acc = f" · test top-1 {100 * top1:.1f} %" if isinstance(top1, (int, float)) else ""
            self.summary.setText(f"<b>{html.escape(info.path.rsplit('/', 1)[-1])}</b><br>{info.model} · "
                                 f"{info.method} · {len(info.classes)} classes{acc}")
        self.table.setText(figures_html(self.figures) if self.figures else "")
        self.table.setVisible(bool(self.figures))
        ok, why = self.can_evaluate()
        running = not self.lane.is_idle()
        self.evaluate_button.setEnabled(ok and not running)
        self.evaluate_button.setText("Evaluate again" if self.figures else "Evaluate")
        self.evaluate_button.setToolTip(why or "Measure the run's parts against the keypoints of the test split")
        self.hint.setText(why if info is not None else "")
        self.hint.setVisible(bool(why) and info is not None)

    @Slot()
    def _on_evaluate_button_clicked(self) -> None:
        ok, why = self.can_evaluate()
        if not ok or self.info is None or self.report is None:
            self.status.setText(why)
            return
        run = self.info.path
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.status.setText("Evaluating…")
        self._notes = []
        self.lane.submit(evaluate_job, run, self.report,
                         on_returned=lambda figures: self._on_lane_returned(run, figures),
                         on_errored=self._on_lane_errored, on_yielded=self._on_lane_yielded,
                         on_finished=self._update)
        self._update()

    def _on_lane_yielded(self, event: Progress | Message) -> None:
        if isinstance(event, Message):  # how the data differs from the run's saved split
            (log.warning if event.level == "warning" else log.info)("evaluation: %s", event.text)
            self._notes.append(event.text)
        if isinstance(event, Progress) and event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)
            self.status.setText(f"Evaluating: {event.stage} {event.done}/{event.total}")

    def _on_lane_returned(self, run: str, figures: dict[str, Any]) -> None:
        self.progress.setVisible(False)
        self.status.setText(f"Saved as {EVALUATION} in the run folder."
                            + "".join(f"\n{note}" for note in self._notes))
        if self.info is not None and self.info.path == run:
            self.figures = figures
        self._update()
        self.evaluation_changed.emit(EvaluationState(run, figures))

    def _on_lane_errored(self, exc: BaseException) -> None:
        self.progress.setVisible(False)
        text = error_text(exc)
        log.error("evaluation failed: %s", text)
        self.status.setText(f"Evaluation failed: {text}")
        self._update()

