"""Runs described without loading their weights: :class:`RunInfo`, and the runs of a folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import CheckpointError
from engine.runs.files import MODEL_JSON, read_meta, run_dir_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunInfo:
    """A run folder as its ``model.json`` describes it, without loading the weights: what lists, panels and the
    app's active-run state show. ``data`` is the data folder it was trained on; ``updated`` the last save."""

    path: str
    model: str = ""
    method: str = ""
    classes: tuple[str, ...] = ()
    epoch: int = 0
    epochs: int = 0
    data: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    updated: str = ""

    @classmethod
    def from_meta(cls, run: str | Path, meta: dict[str, Any]) -> "RunInfo":
        cfg = meta.get("config") or {}
        return cls(str(run), (meta.get("arch") or {}).get("name", "?"), meta.get("method", "?"),
                   tuple(meta.get("classes") or ()), int(meta.get("epoch", 0)), int(meta.get("epochs", 0)),
                   str(cfg.get("data", "")), dict(meta.get("metrics") or {}), str(meta.get("updated", "")))

    @classmethod
    def read(cls, path: str | Path) -> "RunInfo":
        """Describe the run folder at ``path`` (or holding the file ``path``); CheckpointError when it is none."""
        run = run_dir_of(path)
        return cls.from_meta(run, read_meta(run))

    @property
    def name(self) -> str:
        return Path(self.path).name

    def summary(self) -> str:
        """One line: ``name (model, method, epoch e/n, top-1 x%)``."""
        top1 = self.metrics.get("test_top1")
        acc = f", top-1 {top1 * 100:.1f}%" if isinstance(top1, (int, float)) else ""
        return f"{self.name} ({self.model}, {self.method}, epoch {self.epoch}/{self.epochs}{acc})"


def list_runs(folder: str | Path) -> list[RunInfo]:
    """Run folders directly inside ``folder`` (and ``folder`` itself), newest first; damaged ones skipped."""
    folder = Path(folder).expanduser()
    cands = [folder] + (sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else [])
    out = []
    for p in cands:
        if not (p / MODEL_JSON).is_file():
            continue
        try:
            out.append(RunInfo.read(p))
        except CheckpointError as exc:
            log.warning("%s", exc)
    return sorted(out, key=lambda r: r.updated, reverse=True)
