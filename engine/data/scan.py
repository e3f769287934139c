"""Scan a folder: detect its layout, list the usable images and every unusable file with its reason."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Callable

from engine.errors import DataError, DecodeError
from engine.data.imageio import check_file, is_image_name, read_image
import engine.data.cub as cub
from engine.data.records import EXPECTED, LAYOUTS, DataReport, Sample, Skipped  # noqa: F401  (re-exported)
from engine.data.split import draw_test

log = logging.getLogger(__name__)

def walk_images(root: Path, skipped: list[Skipped]) -> list[Path]:
    """Every image-named file below ``root``, sorted, following links but never looping."""
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=lambda e: skipped.append(
            Skipped(str(e.filename), "unreadable", e.strerror or str(e)))):
        real = os.path.realpath(dirpath)
        if real in seen:
            skipped.append(Skipped(dirpath, "symlink loop", f"already visited as {real}"))
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if is_image_name(name):
                found.append(Path(dirpath) / name)
    return found


def _usable(paths: list[Path], skipped: list[Skipped], verify: bool,
            progress: Callable[[int, int], None] | None = None) -> list[Path]:
    ok = []
    for i, p in enumerate(paths):
        try:
            check_file(p)
            if verify:
                read_image(p)
            ok.append(p)
        except DecodeError as exc:
            skipped.append(Skipped(str(p), exc.reason, exc.detail))
        if progress is not None:
            progress(i + 1, len(paths))
    return ok


def _image_subdirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def scan(root: str | os.PathLike, *, test_fraction: float = 0.2, seed: int = 0, verify: bool = False,
         progress: Callable[[int, int], None] | None = None) -> DataReport:
    """Scan ``root`` and return a :class:`DataReport`.

    Class folders without ``split.csv`` are split per class: ``test_fraction`` of each class's photos (at least
    one, at most all but one) drawn from a generator seeded by (``seed``, the class name), so that a change in one
    class never moves another's photos (:func:`engine.data.split.draw_test`). A trained run remembers its split
    (:mod:`engine.data.split`); this draw only makes new ones.

    ``verify`` decodes every image fully (slow on large folders); without it, files are checked by signature
    and completeness (zero bytes, not an image, truncated, unreadable), and images that still fail to decode
    are reported when they are loaded.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data folder {str(root)!r} does not exist: check the path")
    if not root.is_dir():
        raise DataError(f"{str(root)!r} is a file, not a folder. {EXPECTED}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction {test_fraction!r} must be between 0 and 1 (e.g. 0.2)")
    cub_root = cub.find_root(root)
    if cub_root is not None:
        report = cub.read(cub_root, verify=verify, progress=progress)
    elif (root / "train").is_dir() and (root / "test").is_dir():
        report = _scan_train_test(root, verify, progress)
    else:
        report = _scan_class_folders(root, test_fraction, seed, verify, progress)
    if not report.samples:
        raise DataError(f"no usable image in {str(root)!r} (layout {report.layout}; "
                        f"{len(report.skipped)} files skipped). {EXPECTED}")
    log.info("scanned %s: layout %s, %d images, %d skipped", root, report.layout, len(report.samples),
             len(report.skipped))
    return report


def _scan_train_test(root: Path, verify: bool, progress) -> DataReport:
    skipped: list[Skipped] = []
    classes = sorted({d.name for part in ("train", "test") for d in _image_subdirs(root / part)})
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for part in ("train", "test"):
        for d in _image_subdirs(root / part):
            for p in _usable(walk_images(d, skipped), skipped, verify, progress):
                samples.append(Sample(str(p), index[d.name], part))
    return DataReport(str(root), "train-test-folders", classes, samples, skipped,
                      split_source="the train/ and test/ folders")


def _scan_class_folders(root: Path, test_fraction: float, seed: int, verify: bool, progress) -> DataReport:
    skipped: list[Skipped] = []
    subdirs = _image_subdirs(root)
    loose = [root / n for n in sorted(os.listdir(root)) if is_image_name(n) and (root / n).is_file()]
    by_class: dict[str, list[Path]] = {}
    for d in subdirs:
        files = walk_images(d, skipped)
        if files:
            by_class[d.name] = files
    if not by_class:
        ok = _usable(loose, skipped, verify, progress)
        return DataReport(str(root), "flat", [], [Sample(str(p), -1, "") for p in ok], skipped,
                          split_source="none (no classes)")
    notes = []
    for p in loose:
        skipped.append(Skipped(str(p), "not in a class folder", "images directly in ROOT are ignored "
                                                                  "when class sub-folders exist"))
    classes = sorted(by_class)
    usable = {c: _usable(by_class[c], skipped, verify, progress) for c in classes}
    empty = [c for c in classes if not usable[c]]
    if empty:
        notes.append(f"classes with no usable image dropped: {', '.join(empty)}")
        classes = [c for c in classes if usable[c]]
    split_csv = root / "split.csv"
    samples = []
    if split_csv.is_file():
        splits = _read_split_csv(split_csv, root)
        for label, c in enumerate(classes):
            missing = [p for p in usable[c] if _rel(p, root) not in splits]
            if missing:
                notes.append(f"{len(missing)} images of {c} are not in split.csv and were put in train")
            samples += [Sample(str(p), label, splits.get(_rel(p, root), "train")) for p in usable[c]]
        source = "split.csv"
    else:
        test = draw_test({c: usable[c] for c in classes}, test_fraction, seed)
        for label, c in enumerate(classes):
            if len(usable[c]) < 2:
                notes.append(f"class {c} has only one image: it is used for training only")
            samples += [Sample(str(p), label, "test" if i in test[c] else "train") for i, p in enumerate(usable[c])]
        source = (f"seeded stratified {round((1 - test_fraction) * 100)}/{round(test_fraction * 100)} per class, "
                  f"seed {seed}")
    return DataReport(str(root), "class-folders", classes, samples, skipped, split_source=source, notes=notes)


def _rel(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix()


def _read_split_csv(path: Path, root: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "path" not in reader.fieldnames or "split" not in reader.fieldnames:
            raise DataError(f"{str(path)!r} needs the columns path and split (found {reader.fieldnames}): "
                            "fix the header or remove the file to split automatically")
        out = {}
        for row in reader:
            split = (row.get("split") or "").strip().lower()
            if split in ("val", "valid", "validation"):
                split = "test"
            if split not in ("train", "test"):
                raise DataError(f"{str(path)!r}: split {row.get('split')!r} for {row.get('path')!r} "
                                "is not train or test")
            out[row["path"].strip().replace("\\", "/")] = split
    return out


def require_trainable(report: DataReport) -> None:
    """Raise DataError unless the report can train a classifier (≥ 2 classes with training images)."""
    if report.layout == "flat":
        raise DataError(f"{report.root!r} is a flat folder of {len(report.samples)} images without classes: "
                        f"training needs labels. {EXPECTED}")
    counts = report.counts()
    trainable = [c for c, n in counts.items() if n["train"] > 0]
    if len(trainable) < 2:
        raise DataError(f"{report.root!r} has {len(trainable)} class(es) with training images "
                        f"({', '.join(trainable) or 'none'}): training needs at least two. {EXPECTED}")
    if not any(s.split == "test" for s in report.samples):
        report.notes.append("no test images: test accuracy cannot be measured")
