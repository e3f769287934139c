"""The resumable, crash-safe side of a part export (see :mod:`engine.export.crops`): the job's identity, the
folder's state (``.fieldmark-export/jobs.json`` and ``done.jsonl``), and every file operation of the export in
one place (easy to fake in tests), with the undo of what a failed call created.

Crops are written to a temporary name and renamed; after each batch the file system is synced and only then are
the batch's per-image records appended to ``done.jsonl`` (fsync'd); a rerun skips the images recorded for its job.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.data.scan import DataReport
from engine.errors import EngineError
from engine.export.files import STATE, read_records
from engine.export.naming import record_folder
from engine.fileio import atomic_write
from engine.runs import LoadedRun

FORMAT = "fieldmark-export"


class ExportError(EngineError):
    """The output folder cannot be used or written."""


# ------------------------------------------------------------------ file operations (one place, easy to fake)
def write_bytes(path: Path, data: bytes) -> None:
    """Atomic against crashes (temporary name, rename); durability comes from the per-batch sync."""
    atomic_write(path, lambda fh: fh.write(data), sync=False)


def make_dirs(path: Path, created: list[Path]) -> None:
    """Create ``path`` and its missing parents, adding each folder made to ``created``."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
        created.append(d)


def append_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines and fsync; on failure cut the file back so no torn line stays."""
    with open(path, "ab") as fh:
        start = fh.tell()
        try:
            fh.write("".join(lines).encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        except BaseException:
            fh.truncate(start)
            raise


def unlink_quietly(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


def undo(created: list[Path], state: Path | None) -> None:
    """Remove what a failed call created: the state folder's files when it made the folder, then empty dirs."""
    if state is not None:
        for f in state.glob("*"):
            unlink_quietly(f)
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            pass


def write_failure(out: Path, exc: OSError) -> ExportError:
    """The ExportError for a failed write under ``out``: what failed, and what to do."""
    why = exc.strerror or str(exc)
    hint = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "choose a folder you can write to"
    return ExportError(f"cannot write the export to {str(out)!r} ({why}, {exc.filename or out}): {hint}, then "
                       "run the same command again (finished images are kept and skipped)")


# ------------------------------------------------------------------------------------------- the job
def job_id(run: LoadedRun, report: DataReport, split: str, method: str, crop_size: int, min_score: float,
           box: str) -> str:
    key = json.dumps([str(Path(run.run_dir).resolve()), run.meta.get("updated"), run.meta.get("epoch"),
                      str(Path(report.root).resolve()), split, method, crop_size, min_score, box])
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def check_out(out: Path, job: dict[str, Any], append: bool) -> tuple[list[dict], bool]:
    """(jobs already in the folder, is this a resume). Refuses unrelated non-empty folders without append."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{str(out)!r} is a file: give a folder for the export")
    jobs: list[dict] = []
    jobs_file = out / STATE / "jobs.json"
    if jobs_file.is_file():
        try:
            jobs = json.loads(jobs_file.read_text(encoding="utf-8"))["jobs"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ExportError(f"{str(jobs_file)!r} is damaged ({exc}): remove the folder's .fieldmark-export "
                              "and export again") from exc
    resume = any(j.get("id") == job["id"] for j in jobs)
    if out.is_dir() and any(out.iterdir()) and not resume and not append:
        if jobs:
            other = jobs[-1]
            raise ExportError(f"{str(out)!r} holds an export of run {other.get('run')!r} ({other.get('split')} split, "
                              f"{other.get('method')}, crop {other.get('crop_size')}, min score "
                              f"{other.get('min_score')}): add --append to add this one, or choose another folder")
        raise ExportError(f"{str(out)!r} is not empty and holds no Fieldmark export: choose an empty or new folder, "
                          "or add --append to write the parts into it")
    return jobs, resume


@dataclass
class ExportFolder:
    """One call's hold on an export folder: the job (its ``id`` and settings), whether it resumes, the folders it
    created (undone on failure), and what earlier records say: ``done`` (images this job finished), ``names``
    (crop stem → image, for collisions) and ``used`` (class → folder, of the exports already in the folder)."""

    out: Path
    job: dict[str, Any]
    resume: bool
    created: list[Path] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    names: dict[str, str] = field(default_factory=dict)
    used: dict[str, str] = field(default_factory=dict)
    wrote_record: bool = False

    @property
    def state(self) -> Path:
        return self.out / STATE

    @property
    def done_file(self) -> Path:
        return self.state / "done.jsonl"

    @classmethod
    def open(cls, out: Path, job: dict[str, Any], append: bool) -> "ExportFolder":
        """Check ``out`` (:func:`check_out`), create its state files, read its records. ExportError when it is
        unusable or cannot be written (what this call created is removed)."""
        jobs, resume = check_out(out, job, append)
        folder = cls(out, job, resume)
        state = folder.state
        try:
            make_dirs(state, folder.created)
            if not resume:
                doc = {"format": FORMAT, "jobs": jobs + [job]}
                write_bytes(state / "jobs.json", json.dumps(doc, indent=1).encode())
            if not folder.done_file.exists():
                append_lines(folder.done_file, [])
        except OSError as exc:
            undo(folder.created, state if state in folder.created else None)
            raise write_failure(out, exc) from exc
        for rec in read_records(folder.done_file):
            where = record_folder(rec)
            folder.used.setdefault(rec["class"], where)
            folder.names.setdefault(f"{where}/{rec['stem']}", rec["image"])
            if rec.get("job") == job["id"]:
                folder.done.add(rec["image"])
        return folder

    def record(self, lines: list[str]) -> None:
        """Sync the batch's crops to disk, then append its records (so no record names a crop not on disk)."""
        os.sync()
        append_lines(self.done_file, lines)
        self.wrote_record = self.wrote_record or bool(lines)

    def abandon(self, written: list[Path], exc: OSError) -> ExportError:
        """Remove a failed batch's crops (``written``) and, when nothing was recorded yet, what this call created;
        the ExportError to raise."""
        for p in written:
            unlink_quietly(p)
        state = self.state
        undo(self.created, state if not self.wrote_record and not self.resume and state in self.created else None)
        return write_failure(self.out, exc)
