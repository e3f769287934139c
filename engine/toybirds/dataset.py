"""Toy birds: a procedural fine-grained data set whose field marks are known.

Every class is a unique set of two or three field marks (:data:`MARKS`: a saturated colour on one CUB part);
classes 2k and 2k+1 form a confusable pair that differs in exactly one mark, the way a field guide pairs
similar species. Body colour, size, pose, background, lighting and noise vary within a class, so only the
marks tell classes apart. The output uses the CUB_200_2011 layout (images/, images.txt, classes.txt,
image_class_labels.txt, train_test_split.txt, bounding_boxes.txt, parts/parts.txt, parts/part_locs.txt), so
the code that reads and scores CUB reads and scores this too, plus ``toybirds.json`` with the truth:
which marks define each class (``confusable_pairs`` holds 0-based indices into ``classes``; the CUB class
id is index + 1) and where each mark sits. Same seed, same bytes.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from engine.errors import ConfigError, DataError
from engine.fileio import atomic_write_json, atomic_write_text
from engine.toybirds.draw import MARKS, PARTS, MarkSpec, draw_bird

__all__ = ["MARKS", "PARTS", "MarkSpec", "BirdClass", "ToyBirds", "design_classes", "draw_bird", "generate",
           "load_truth", "class_marks", "max_classes"]

log = logging.getLogger(__name__)

FORMAT = "fieldmark-toybirds"
VERSION = 1
TRUTH_FILE = "toybirds.json"
JPEG_QUALITY = 95
MIN_SIZE, MAX_SIZE = 64, 1024
NOUNS = ("Finch", "Warbler", "Sparrow", "Tanager", "Vireo", "Bunting", "Thrush", "Wren", "Flycatcher", "Pipit",
         "Robin", "Starling", "Shrike", "Oriole", "Grosbeak", "Siskin", "Lark", "Chat")


@dataclass(frozen=True)
class BirdClass:
    """One toy species: its name (``Blue_crowned_Cyan_winged_Finch``) and the marks that define it."""

    name: str
    marks: tuple[str, ...]


@dataclass
class ToyBirds:
    """A generated (or loaded) toy-birds data set. ``pairs`` holds (index, index, differing mark)."""

    root: Path
    classes: list[BirdClass]
    marks: dict[str, MarkSpec]
    pairs: list[tuple[int, int, str]]
    n_images: int
    seed: int = 0
    size: int = 160

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]


def _greedy_pairs(limit: int) -> list[tuple[frozenset[int], int]]:
    """Up to ``limit`` pairs (two-mark set S, extra mark m) with S and S + m unused, chosen for contrast.

    Preference, in order: no class one mark away from a class of another pair; each pair differs in a mark
    no other pair differs in; the more visible marks (MARKS order) as differing marks; marks used evenly.
    """
    n = len(MARKS)
    chosen: list[tuple[frozenset[int], int]] = []
    used: set[frozenset[int]] = set()
    usage, diff_usage = [0] * n, [0] * n
    candidates = [(frozenset(s), m) for s in itertools.combinations(range(n), 2) for m in range(n) if m not in s]
    while len(chosen) < limit:
        best, best_key = None, None
        for s, m in candidates:
            t = s | {m}
            if s in used or t in used:
                continue
            near = sum(len(s ^ u) == 1 for u in used) + sum(len(t ^ u) == 1 for u in used)
            key = (near, diff_usage[m], m, sum(usage[i] for i in t), max(usage[i] for i in t), sorted(s))
            if best_key is None or key < best_key:
                best, best_key = (s, m), key
        if best is None:
            break
        s, m = best
        chosen.append(best)
        used |= {s, s | {m}}
        diff_usage[m] += 1
        for i in s | {m}:
            usage[i] += 1
    return chosen


_MAX_CLASSES: int | None = None


def max_classes() -> int:
    """The most classes the generator can make (unique mark sets, laid out in confusable pairs)."""
    global _MAX_CLASSES
    if _MAX_CLASSES is None:
        _MAX_CLASSES = 2 * len(_greedy_pairs(10 ** 6))
    return _MAX_CLASSES


def design_classes(n: int) -> tuple[list[BirdClass], list[tuple[int, int, str]]]:
    """``n`` classes (2 <= n <= :func:`max_classes`) and their confusable pairs; the same for every seed.

    With an odd ``n`` the last class (two marks) has no partner.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= max_classes():
        raise ConfigError(f"classes={n!r}: the toy-bird generator makes 2 to {max_classes()} classes "
                          f"(unique sets of 2-3 of {len(MARKS)} field marks)")
    names = list(MARKS)
    classes: list[BirdClass] = []
    pairs: list[tuple[int, int, str]] = []
    for k, (s, m) in enumerate(_greedy_pairs((n + 1) // 2)):
        noun = NOUNS[k % len(NOUNS)] + ("" if k < len(NOUNS) else f"_{k // len(NOUNS) + 1}")
        for marks in (s, s | {m}):
            if len(classes) == n:
                break
            ordered = tuple(names[i] for i in sorted(marks))
            classes.append(BirdClass("_".join(MARKS[x].adjective for x in ordered) + "_" + noun, ordered))
        if len(classes) == 2 * k + 2:
            pairs.append((2 * k, 2 * k + 1, names[m]))
    return classes, pairs


def _check_config(per_class: int, size: int, test_fraction: float) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(per_class) or per_class < 1:
        raise ConfigError(f"per_class={per_class!r}: must be a whole number of images, at least 1")
    if not is_int(size) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"size={size!r}: must be a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}")
    if not isinstance(test_fraction, (int, float)) or isinstance(test_fraction, bool) \
            or not 0.0 <= float(test_fraction) <= 1.0:
        raise ConfigError(f"test_fraction={test_fraction!r}: must be a number from 0 to 1")


def _is_toybirds(folder: Path) -> bool:
    try:
        with open(folder / TRUTH_FILE, encoding="utf-8") as fh:
            return json.load(fh).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not _is_toybirds(out):
        raise DataError(f"{out}: the folder is not empty and holds no toy-birds data set ({TRUTH_FILE}); "
                        "choose an empty or new folder")


def _split(per_class: int, n_classes: int, test_fraction: float, seed: int) -> list[bool]:
    """Stratified, seeded: is_train per image, in image order (class-major)."""
    rng = np.random.default_rng([seed, 0x5711])
    n_test = round(per_class * test_fraction)
    if 0 < test_fraction < 1 and per_class >= 2:
        n_test = min(max(n_test, 1), per_class - 1)
    flags: list[bool] = []
    for _ in range(n_classes):
        test = set(rng.permutation(per_class)[:n_test].tolist())
        flags += [i not in test for i in range(per_class)]
    return flags


def generate(
    out: str | os.PathLike,
    classes: int = 8,
    per_class: int = 60,
    size: int = 160,
    seed: int = 0,
    test_fraction: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> ToyBirds:
    """Write a toy-birds data set to ``out`` (CUB_200_2011 layout) and return its truth.

    Refuses (DataError) a non-empty ``out`` that is no toy-birds output; replaces an earlier one. The data
    set is built in a hidden sibling folder and renamed into place at the end, so an interrupted run leaves
    nothing half-written. ``progress(done, total)`` is called after every image (it may raise to cancel).
    """
    out = Path(out).expanduser().absolute()
    bird_classes, pairs = design_classes(classes)
    _check_config(per_class, size, test_fraction)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed={seed!r}: must be a whole number, 0 or more")
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.toybirds-", dir=out.parent))
    try:
        n = _write(tmp, bird_classes, pairs, per_class, size, int(seed), float(test_fraction), progress)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %d toy-bird images of %d classes to %s", n, len(bird_classes), out)
    return ToyBirds(out, bird_classes, dict(MARKS), pairs, n, int(seed), size)


def _replace(new: Path, out: Path) -> None:
    """Move ``new`` to ``out``; an existing ``out`` (empty, or checked to be toy birds) is removed after."""
    old = None
    if out.exists():
        _check_target(out)  # still safe to replace?
        old = out.parent / f"{new.name}.old"
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write(root: Path, bird_classes: list[BirdClass], pairs: list[tuple[int, int, str]], per_class: int,
           size: int, seed: int, test_fraction: float, progress: Callable[[int, int], None] | None) -> int:
    total = len(bird_classes) * per_class
    is_train = _split(per_class, len(bird_classes), test_fraction, seed)
    images, labels, boxes, locs = [], [], [], []
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY,
              cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]  # keep marks' colour crisp
    image_id = 0
    for ci, bc in enumerate(bird_classes):
        folder = f"{ci + 1:03d}.{bc.name}"
        (root / "images" / folder).mkdir(parents=True)
        for _ in range(per_class):
            image_id += 1
            rgb, kps, (bx, by, bw, bh) = draw_bird(np.random.default_rng([seed, 1, image_id]), size, bc.marks)
            rel = f"{folder}/{bc.name}_{image_id:04d}.jpg"
            ok, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
            if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
                raise DataError(f"{root / 'images' / rel}: OpenCV could not encode the JPEG")
            (root / "images" / rel).write_bytes(enc.tobytes())
            images.append(f"{image_id} {rel}\n")
            labels.append(f"{image_id} {ci + 1}\n")
            boxes.append(f"{image_id} {bx:.1f} {by:.1f} {bw:.1f} {bh:.1f}\n")
            for pid, part in enumerate(PARTS, 1):
                x, y, v = kps[part]
                locs.append(f"{image_id} {pid} {x:.1f} {y:.1f} {v}\n")
            if progress is not None:
                progress(image_id, total)
    atomic_write_text(root / "images.txt", "".join(images))
    atomic_write_text(root / "classes.txt", "".join(f"{i + 1} {i + 1:03d}.{c.name}\n"
                                                    for i, c in enumerate(bird_classes)))
    atomic_write_text(root / "image_class_labels.txt", "".join(labels))
    atomic_write_text(root / "train_test_split.txt", "".join(f"{i + 1} {int(t)}\n" for i, t in enumerate(is_train)))
    atomic_write_text(root / "bounding_boxes.txt", "".join(boxes))
    atomic_write_text(root / "parts" / "parts.txt", "".join(f"{i} {p}\n" for i, p in enumerate(PARTS, 1)))
    atomic_write_text(root / "parts" / "part_locs.txt", "".join(locs))
    used = sorted({m for c in bird_classes for m in c.marks}, key=list(MARKS).index)
    atomic_write_json(root / TRUTH_FILE, {
        "format": FORMAT, "version": VERSION, "seed": seed, "size": size, "per_class": per_class,
        "test_fraction": test_fraction, "n_images": total,
        "classes": [{"name": c.name, "marks": list(c.marks)} for c in bird_classes],
        "confusable_pairs": [list(p) for p in pairs],
        "marks": {m: {"part": MARKS[m].part, "parts": list(MARKS[m].parts), "colour": list(MARKS[m].colour)}
                  for m in used},
    })
    return total


def load_truth(root: str | os.PathLike) -> ToyBirds:
    """Read ``toybirds.json`` of a generated data set back. Raises DataError when it is missing or invalid."""
    root = Path(root)
    path = root / TRUTH_FILE
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: missing; {root} is no toy-birds data set") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{path}: not a toy-birds truth file (format is not {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise DataError(f"{path}: toy-birds version {doc.get('version')!r}; this program reads version {VERSION}")
    try:
        marks = {name: MarkSpec(name, m["part"], MARKS[name].hue if name in MARKS else 0.0,
                                MARKS[name].adjective if name in MARKS else name)
                 for name, m in doc["marks"].items()}
        classes = [BirdClass(str(c["name"]), tuple(c["marks"])) for c in doc["classes"]]
        pairs = [(int(i), int(j), str(m)) for i, j, m in doc["confusable_pairs"]]
        return ToyBirds(root, classes, marks, pairs, int(doc["n_images"]), int(doc["seed"]), int(doc["size"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: malformed ({type(exc).__name__}: {exc})") from exc


def class_marks(root: str | os.PathLike) -> dict[str, list[tuple[str, str]]]:
    """{class name: [(mark name, CUB part it sits on), ...]} of a generated data set."""
    truth = load_truth(root)
    return {c.name: [(m, truth.marks[m].part) for m in c.marks] for c in truth.classes}
