"""A run's split, remembered: which photos trained and which tested a model, and what each file held.

A run saves the split it trained on (``split.json``, written and read by :mod:`engine.runs`); resume, evaluate,
Compare and export lay that split over a fresh scan of the folder with :func:`apply_saved_split` instead of drawing
a new one. Photos added since are listed and left out; photos missing or changed since are named.

The document, plain JSON::

    {"format": "fieldmark-split", "version": 1, "root": "/abs/data", "layout": "class-folders",
     "source": "seeded stratified 80/20, seed 0", "classes": ["a", "b"],
     "fields": ["class", "size", "mtime_ns", "blake2b"],
     "train": {"a/0001.jpg": [0, 48213, 1712345678901234567, "9f2c4e1a0b3d5e7f"], ...}, "test": {...}}

Paths are relative to the data root (``/``-separated), so a moved or copied folder still matches.

The fingerprint of a file is its size, its modification time in nanoseconds and a BLAKE2b-64 hash of its bytes.
The check is fast where it can be: a different size is a change; the same size and mtime is no change (one
``stat``, no read); the same size with another mtime (a copy made without keeping times, a ``touch``) reads the
file and compares the hash, so a copied folder is not "changed" while an edit that keeps the size is found. The
hash is computed once per file when the split is first saved (the run decodes every file then anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine.data.records import DataReport, Sample
from engine.errors import CheckpointError

FORMAT, VERSION = "fieldmark-split", 1
FIELDS = ["class", "size", "mtime_ns", "blake2b"]
#: The splits a document holds: "val" (a share of the training photos held out for choosing settings,
#: ``--validation-fraction``) is optional and absent from runs saved before it existed.
SPLITS = ("train", "val", "test")
REQUIRED = ("train", "test")
SHOW = 5  # paths named in one message line before "and N more"


def class_rng(seed: int, name: str) -> np.random.Generator:
    """The generator that draws one class's test photos: seeded by (seed, CRC-32 of the class name), so that
    adding, removing or renaming another class never moves this one's photos."""
    return np.random.default_rng([seed % 2 ** 64, zlib.crc32(name.encode("utf-8"))])


def n_test(n: int, test_fraction: float) -> int:
    """How many of a class's ``n`` photos are held out: the rounded share, at least one and at most n - 1 (a
    class of one photo trains only)."""
    if n < 2:
        return 0
    return min(max(int(round(n * test_fraction)), 1), n - 1)


def draw_test(files_by_class: dict[str, list], test_fraction: float, seed: int,
              legacy: bool = False) -> dict[str, set[int]]:
    """For each class (in the given order), the indices of its files that go to the test split.

    Each class draws from its own :func:`class_rng`. ``legacy`` reproduces Fieldmark 0.1's draw, one generator
    shared by the classes in order (where one photo added to one class moved the test photos of every later
    class): only for runs saved before the split was remembered with them."""
    shared = np.random.default_rng(seed) if legacy else None
    out = {}
    for name, files in files_by_class.items():
        rng = shared if shared is not None else class_rng(seed, name)
        order = rng.permutation(len(files))
        out[name] = set(order[:n_test(len(files), test_fraction)].tolist())
    return out


def redraw(report: DataReport, test_fraction: float, seed: int, legacy: bool = False) -> DataReport:
    """A class-folders report split again by :func:`draw_test` (the scan's own draw, or the legacy one)."""
    by_class: dict[str, list[int]] = {c: [] for c in report.classes}
    for i, s in enumerate(report.samples):
        if s.label >= 0:
            by_class[report.classes[s.label]].append(i)
    test = draw_test(by_class, test_fraction, seed, legacy)
    split = {}
    for name, idx in by_class.items():
        for k, i in enumerate(idx):
            split[i] = "test" if k in test[name] else "train"
    samples = [replace(s, split=split.get(i, s.split)) for i, s in enumerate(report.samples)]
    return replace(report, samples=samples, notes=list(report.notes), skipped=list(report.skipped))


def carve_validation(report: DataReport, fraction: float, seed: int) -> DataReport:
    """``report`` with a per-class share ``fraction`` of its training photos moved to the "val" split (for choosing
    settings; the test split is untouched). Each class draws from its own generator, seeded by (seed, the class
    name prefixed ``validation/``), so the draw does not depend on the other classes. A class keeps at least one
    training photo; ``fraction`` 0 returns the report unchanged."""
    if fraction <= 0:
        return report
    by_class: dict[int, list[int]] = {}
    for i, s in enumerate(report.samples):
        if s.label >= 0 and s.split == "train":
            by_class.setdefault(s.label, []).append(i)
    val: set[int] = set()
    for label, idx in by_class.items():
        order = class_rng(seed, "validation/" + report.classes[label]).permutation(len(idx))
        val.update(idx[j] for j in order[:n_test(len(idx), fraction)])
    samples = [replace(s, split="val") if i in val else s for i, s in enumerate(report.samples)]
    source = f"{report.split_source}; validation {fraction:g} of each class's training photos, seed {seed}"
    return replace(report, samples=samples, split_source=source, notes=list(report.notes),
                   skipped=list(report.skipped))


def content_hash(path: str | os.PathLike) -> str:
    """BLAKE2b-64 of a file's bytes, as 16 hex digits."""
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(path: str | os.PathLike) -> tuple[int, int, str]:
    """(size, mtime_ns, content hash) of a file."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, content_hash(path)


def same_content(path: str | os.PathLike, size: int, mtime_ns: int, digest: str) -> bool:
    """Whether the file still holds what its saved fingerprint describes (see the module docstring)."""
    try:
        st = os.stat(path)
        if st.st_size != size:
            return False
        if st.st_mtime_ns == mtime_ns:
            return True
        return content_hash(path) == digest
    except OSError:
        return False


def relative(path: str, root: str) -> str:
    """``path`` relative to ``root``, ``/``-separated."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(os.path.relpath(path, root)).as_posix()


def record_split(report: DataReport, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The split document of a scanned (or already split) report: every labelled train/test sample with its
    class and fingerprint. Files that cannot be read any more are left out (the scan or the decoder names them)."""
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "root": str(Path(report.root).resolve()),
                           "layout": report.layout, "source": report.split_source, "classes": list(report.classes),
                           "fields": FIELDS, "train": {}, "val": {}, "test": {}}
    todo = [s for s in report.samples if s.label >= 0 and s.split in SPLITS]
    for i, s in enumerate(todo):
        try:
            size, mtime, digest = fingerprint(s.path)
        except OSError:
            continue
        doc[s.split][relative(s.path, report.root)] = [int(s.label), size, mtime, digest]
        if progress is not None:
            progress(i + 1, len(todo))
    return doc


def to_text(doc: dict[str, Any]) -> str:
    """The document as JSON with one line per file (readable, and diffs show which photos moved)."""
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in doc.items() if k not in SPLITS]
    present = [split for split in SPLITS if split in REQUIRED or doc.get(split)]
    for i, split in enumerate(present):
        items = list(doc.get(split, {}).items())
        lines.append(f"  {json.dumps(split)}: {{")
        lines += [f"    {json.dumps(p)}: {json.dumps(r)}" + ("," if j < len(items) - 1 else "")
                  for j, (p, r) in enumerate(items)]
        lines.append("  }" + ("," if i < len(present) - 1 else ""))
    return "\n".join(lines + ["}", ""])


def check_doc(doc: Any, where: str) -> dict[str, Any]:
    """``doc`` if it is a split document this version reads, else a CheckpointError naming ``where``."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{where!r} is not a Fieldmark split file: restore it from a backup, or delete it "
                              "(the split is then drawn again from the folder)")
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise CheckpointError(f"{where!r} has split format {doc.get('version')!r}; this Fieldmark reads "
                              f"{VERSION}: upgrade Fieldmark to open it")
    if not isinstance(doc.get("classes"), list) or not all(isinstance(doc.get(k), dict) for k in REQUIRED) \
            or not isinstance(doc.get("val", {}), dict):
        raise CheckpointError(f"{where!r} is damaged (no classes or splits): restore it, or delete it")
    for split in SPLITS:
        for rel, rec in doc.get(split, {}).items():
            if not (isinstance(rec, list) and len(rec) == len(FIELDS) and all(isinstance(v, int) for v in rec[:3])
                    and 0 <= rec[0] < len(doc["classes"])):
                raise CheckpointError(f"{where!r} is damaged: the {split} entry {rel!r} is {rec!r}, not "
                                      f"[{', '.join(FIELDS)}]: restore it, or delete it")
    return doc


def _listing(paths: list[str]) -> str:
    shown = ", ".join(paths[:SHOW])
    return shown + (f" and {len(paths) - SHOW} more" if len(paths) > SHOW else "")


def _photos(n: int) -> str:
    return f"{n} photo{'s' if n != 1 else ''}"


@dataclass
class SplitCheck:
    """How the data folder compares with a run's saved split. Paths are relative to the data root."""

    run: str
    root: str
    saved: int = 0  # files in the saved split
    added: list[str] = field(default_factory=list)  # in the folder, not in the saved split: left out
    missing: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SPLITS})  # left out
    changed: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SPLITS})  # kept, named
    foreign: bool = False  # none of the saved files is in the folder: it is not the run's data
    same_classes: bool = True  # the folder has the run's classes (else the caller's class check speaks)

    @property
    def train_changed(self) -> bool:
        """The training set lost a photo or one of its photos changed (added photos are left out)."""
        return bool(self.missing["train"] or self.changed["train"])

    def describe_train_change(self) -> str:
        parts = []
        if self.missing["train"]:
            parts.append(f"{_photos(len(self.missing['train']))} missing ({_listing(self.missing['train'])})")
        if self.changed["train"]:
            parts.append(f"{_photos(len(self.changed['train']))} changed ({_listing(self.changed['train'])})")
        return "; ".join(parts)

    def messages(self) -> list[tuple[str, str]]:
        """(level, text) lines for the user: what was left out and what is not what the run saw."""
        out = []
        if self.foreign:
            if not self.same_classes:
                return []
            return [("warning", f"{self.root} holds none of the {self.saved} photos of the run {self.run}: it is "
                                "not the run's data, so its own split is used")]
        if self.added:
            out.append(("info", f"{_photos(len(self.added))} added to {self.root} since the run {self.run} was "
                                f"trained, left out (the run never saw them): {_listing(self.added)}"))
        for split in SPLITS:
            if self.missing[split]:
                out.append(("warning", f"{_photos(len(self.missing[split]))} of the run's {split} split "
                                       f"missing from {self.root} (removed, moved or now unreadable), left out: "
                                       f"{_listing(self.missing[split])}"))
            if self.changed[split]:
                out.append(("warning", f"{_photos(len(self.changed[split]))} of the run's {split} split changed "
                                       f"since the run saved its split: {_listing(self.changed[split])}"))
        return out


def apply_saved_split(report: DataReport, doc: dict[str, Any], run: str = "") -> tuple[DataReport, SplitCheck]:
    """Lay a saved split over a fresh scan of the data: the run's classes, each saved photo in its saved split
    (in scan order), added photos left out, missing ones left out and changed ones kept, all named in the
    :class:`SplitCheck`. When no saved photo is in the folder the result is the scan itself (``foreign``)."""
    classes = [str(c) for c in doc["classes"]]
    check = SplitCheck(run, report.root)
    saved: dict[str, tuple[str, int, list]] = {}
    for split in SPLITS:
        for rel, rec in doc.get(split, {}).items():
            saved[rel] = (split, int(rec[0]), rec)
    check.saved = len(saved)
    if report.layout == "flat":  # photos without classes are prediction data, never the run's: nothing to say
        check.foreign, check.same_classes = True, False
        return report, check
    kept: list[Sample] = []
    found: set[str] = set()
    for s in report.samples:
        rel = relative(s.path, report.root)
        if rel not in saved or s.label < 0:
            check.added.append(rel)
            continue
        split, label, rec = saved[rel]
        found.add(rel)
        if report.classes[s.label] != classes[label] or not same_content(s.path, rec[1], rec[2], str(rec[3])):
            check.changed[split].append(rel)
        kept.append(replace(s, label=label, split=split))
    if not found and saved:
        check.foreign, check.same_classes = True, list(report.classes) == classes
        check.added = []
        return report, check
    for rel, (split, _, _) in saved.items():
        if rel not in found:
            check.missing[split].append(rel)
    for split in SPLITS:
        check.missing[split].sort()
    notes = list(report.notes)
    source = f"saved with the run {run}" if run else "saved with the run"
    return DataReport(report.root, report.layout, classes, kept, list(report.skipped), list(report.part_names),
                      source, notes), check
