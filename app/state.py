"""The small dataclasses that the application's signals carry (one dataclass per signal)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.data import DataReport, Sample


@dataclass(frozen=True)
class DataState:
    """The library's data set: its folder and the scan's report (None while nothing is open)."""

    root: str
    report: DataReport | None


@dataclass(frozen=True)
class SelectionState:
    """The library's selected images, the current one first (empty when nothing is selected)."""

    samples: tuple[Sample, ...]
    root: str = ""


@dataclass(frozen=True)
class RunRef:
    """A run folder, as the status bar and the later workspaces (Explore, Export) need it."""

    path: str
    model: str = ""
    method: str = ""
    classes: tuple[str, ...] = ()
    epoch: int = 0
    epochs: int = 0
    data: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        from pathlib import Path

        return Path(self.path).name

    def summary(self) -> str:
        """One line: ``name (model, method, epoch e/n, top-1 x%)``."""
        top1 = self.metrics.get("test_top1")
        acc = f", top-1 {top1 * 100:.1f}%" if isinstance(top1, (int, float)) else ""
        return f"{self.name} ({self.model}, {self.method}, epoch {self.epoch}/{self.epochs}{acc})"

    @classmethod
    def from_folder(cls, path: str) -> "RunRef":
        """Read a run folder's model.json (raises engine.errors.CheckpointError when it is none)."""
        from engine.runs import read_meta, run_dir_of

        run = run_dir_of(path)
        meta = read_meta(run)
        cfg = meta.get("config") or {}
        return cls(str(run), (meta.get("arch") or {}).get("name", "?"), meta.get("method", "?"),
                   tuple(meta.get("classes") or ()), int(meta.get("epoch", 0)), int(meta.get("epochs", 0)),
                   str(cfg.get("data", "")), dict(meta.get("metrics") or {}))


@dataclass(frozen=True)
class ThemeState:
    """The active theme: "light" or "dark", with the colours plots need."""

    name: str
    foreground: str
    background: str
    accent: str


@dataclass(frozen=True)
class LogEntry:
    """One logging record, as plain data for the log panel."""

    level: int
    level_name: str
    name: str
    message: str
    created: float


@dataclass(frozen=True)
class WorkspaceState:
    """Which workspace is shown."""

    index: int
    name: str
