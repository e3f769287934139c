"""The small dataclasses that the application's signals carry (one dataclass per signal). A run travels as
:class:`engine.runs.RunInfo`."""

from __future__ import annotations

from dataclasses import dataclass

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
class StepRequest:
    """Show the image ``delta`` places away in the library's current order (Explore's arrow keys)."""

    delta: int


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
