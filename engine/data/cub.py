"""The official CUB_200_2011 layout (Wah et al., 2011): its own split, boxes and part keypoints."""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path, PureWindowsPath
from typing import Callable

from engine.errors import DataError, DecodeError
from engine.data.imageio import check_file, read_image
from engine.data.records import CUB_PARTS, DataReport, Sample, Skipped  # noqa: F401  (CUB_PARTS re-exported)

log = logging.getLogger(__name__)

REQUIRED = ("images.txt", "classes.txt", "image_class_labels.txt")


def find_root(root: Path) -> Path | None:
    """``root`` itself or its ``CUB_200_2011`` sub-folder when it holds the CUB index files."""
    for cand in (root, root / "CUB_200_2011"):
        if all((cand / f).is_file() for f in REQUIRED):
            return cand
    return None


def _rows(path: Path, n_fields: int) -> list[list[str]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(maxsplit=n_fields - 1) if n_fields else line.split()
            if n_fields and len(parts) < n_fields:
                raise DataError(f"{str(path)!r} line {lineno}: expected {n_fields} fields, found {line!r}")
            rows.append(parts)
    return rows


def read(root: Path, *, verify: bool = False, progress: Callable[[int, int], None] | None = None):
    """Read a CUB-layout folder into a DataReport."""

    try:
        images = {int(i): p for i, p in _rows(root / "images.txt", 2)}
        class_rows = _rows(root / "classes.txt", 2)
        labels = {int(i): int(c) for i, c in _rows(root / "image_class_labels.txt", 2)}
        split_file = root / "train_test_split.txt"
        is_train = {int(i): t.strip() == "1" for i, t in _rows(split_file, 2)} if split_file.is_file() else None
        box_file = root / "bounding_boxes.txt"
        boxes = {int(r[0]): tuple(float(v) for v in r[1:5]) for r in _rows(box_file, 0)} if box_file.is_file() else {}
        part_names, part_locs = _read_parts(root)
    except ValueError as exc:
        raise DataError(f"{str(root)!r}: a CUB index file has a malformed number ({exc}): "
                        "check images.txt, image_class_labels.txt, train_test_split.txt") from exc
    class_ids = [int(i) for i, _ in class_rows]
    classes = [_pretty(name) for _, name in class_rows]
    index = {cid: k for k, cid in enumerate(class_ids)}
    skipped: list[Skipped] = []
    samples = []
    notes = []
    if is_train is None:
        notes.append("train_test_split.txt missing: every image is treated as test")
    ids = sorted(images)
    for n, image_id in enumerate(ids):
        path = root / "images" / images[image_id]
        if progress is not None:
            progress(n + 1, len(ids))
        outside = _outside(images[image_id])
        if outside:
            skipped.append(Skipped(str(path), OUTSIDE, f"images.txt, image id {image_id}: {images[image_id]!r} is "
                                                       f"{outside}; give a path inside {str(root / 'images')!r}"))
            continue
        if image_id not in labels or labels[image_id] not in index:
            skipped.append(Skipped(str(path), "no class", f"image id {image_id} has no valid class label"))
            continue
        try:
            check_file(path)
            if verify:
                read_image(path)
        except DecodeError as exc:
            reason = "missing" if not path.exists() else exc.reason
            skipped.append(Skipped(str(path), reason, exc.detail))
            continue
        split = "test" if is_train is None else ("train" if is_train.get(image_id, False) else "test")
        parts = part_locs.get(image_id)
        samples.append(Sample(str(path), index[labels[image_id]], split, image_id, boxes.get(image_id),
                              tuple(parts) if parts is not None else None))
    return DataReport(str(root), "cub", classes, samples, skipped, part_names=part_names,
                      split_source="train_test_split.txt" if is_train is not None else "none", notes=notes)


OUTSIDE = "outside the images folder"


def _outside(rel: str) -> str:
    """Why an images.txt path leaves the images folder ("" when it does not): absolute, or climbing out with
    "..". Checked on the text, as given (backslashes count as separators)."""
    text = rel.replace("\\", "/")
    if text.startswith("/") or PureWindowsPath(rel).drive:
        return "an absolute path"
    norm = posixpath.normpath(text)
    if norm == ".." or norm.startswith("../"):
        return "a path that climbs out with '..'"
    return ""


def _pretty(name: str) -> str:
    """"001.Black_footed_Albatross" → "Black_footed_Albatross" (the numeric prefix is CUB's ordering)."""
    head, dot, tail = name.partition(".")
    return tail if dot and head.isdigit() and tail else name


def _read_parts(root: Path) -> tuple[list[str], dict[int, list[tuple[float, float, int]]]]:
    parts_file, locs_file = root / "parts" / "parts.txt", root / "parts" / "part_locs.txt"
    if not parts_file.is_file():
        return [], {}
    rows = _rows(parts_file, 2)
    part_ids = [int(i) for i, _ in rows]
    names = [n for _, n in rows]
    slot = {pid: k for k, pid in enumerate(part_ids)}
    locs: dict[int, list[tuple[float, float, int]]] = {}
    if locs_file.is_file():
        for r in _rows(locs_file, 0):
            image_id, pid, x, y, vis = int(r[0]), int(r[1]), float(r[2]), float(r[3]), int(float(r[4]))
            if pid not in slot:
                continue
            locs.setdefault(image_id, [(0.0, 0.0, 0)] * len(names))[slot[pid]] = (x, y, vis)
    return names, locs
