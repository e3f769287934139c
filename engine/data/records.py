"""What a scan of a data folder found: the samples, the skipped files with their reasons, and the report.

Shared by every layout reader (:mod:`engine.data.scan` for class folders, :mod:`engine.data.cub` for CUB)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from engine.errors import DataError

LAYOUTS = {
    "class-folders": "one sub-folder per class (ROOT/<class>/*.jpg)",
    "train-test-folders": "ROOT/train/<class>/*.jpg and ROOT/test/<class>/*.jpg",
    "cub": "the CUB_200_2011 layout (images.txt, classes.txt, image_class_labels.txt, train_test_split.txt)",
    "flat": "a folder of images without classes (prediction and maps only)",
}
#: The 15 part keypoints of CUB-200-2011 (parts/parts.txt), in its order: the one definition.
CUB_PARTS = ("back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
             "right eye", "right leg", "right wing", "tail", "throat")
EXPECTED = (
    "Expected one of: a folder with one sub-folder of images per class (ROOT/<class>/*.jpg), "
    "train/ and test/ folders of class sub-folders, the CUB_200_2011 layout (images.txt, classes.txt, ...), "
    "or a flat folder of images for prediction."
)


@dataclass(frozen=True)
class Sample:
    """One usable image. ``label`` is -1 and ``split`` is "" in a flat folder."""

    path: str
    label: int
    split: str
    image_id: int | None = None
    bbox: tuple[float, float, float, float] | None = None  # x0, y0, w, h in original pixels
    parts: tuple[tuple[float, float, int], ...] | None = None  # (x, y, visible) per part, CUB order

    def keypoints(self) -> np.ndarray | None:
        return None if self.parts is None else np.asarray(self.parts, dtype=np.float64).reshape(-1, 3)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str
    detail: str = ""


@dataclass
class DataReport:
    """What a scan found: the layout, classes, usable samples and skipped files with reasons."""

    root: str
    layout: str
    classes: list[str]
    samples: list[Sample]
    skipped: list[Skipped] = field(default_factory=list)
    part_names: list[str] = field(default_factory=list)
    split_source: str = ""
    notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Sample]:
        """Samples of one split: "train", "val" (the validation share of the training photos), "test" or "all"."""
        if name == "all":
            return list(self.samples)
        if name not in ("train", "val", "test"):
            raise DataError(f"split {name!r} is not a split: use train, val, test or all")
        return [s for s in self.samples if s.split == name]

    @property
    def has_parts(self) -> bool:
        return bool(self.part_names) and any(s.parts is not None for s in self.samples)

    def counts(self) -> dict[str, dict[str, int]]:
        """{class: {"train": n, "test": n}} in class order."""
        table = {c: {"train": 0, "test": 0} for c in self.classes}
        for s in self.samples:
            if s.label >= 0 and s.split in ("train", "test"):
                table[self.classes[s.label]][s.split] += 1
        return table

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped))

    def describe(self, max_skipped: int = 20) -> str:
        """A human report, as `fieldmark scan` prints it."""
        lines = [f"{self.root}: layout {self.layout} ({LAYOUTS[self.layout]})"]
        n_train = sum(1 for s in self.samples if s.split == "train")
        n_test = sum(1 for s in self.samples if s.split == "test")
        if self.layout == "flat":
            lines.append(f"{len(self.samples)} usable images, no classes")
        else:
            lines.append(f"{len(self.classes)} classes, {len(self.samples)} usable images "
                         f"({n_train} train, {n_test} test; split: {self.split_source})")
            width = max((len(c) for c in self.classes), default=5)
            lines.append(f"  {'class':<{width}}  train   test")
            for name, c in self.counts().items():
                lines.append(f"  {name:<{width}}  {c['train']:5d}  {c['test']:5d}")
        if self.part_names:
            lines.append(f"part keypoints: {len(self.part_names)} ({', '.join(self.part_names)})")
        for note in self.notes:
            lines.append(f"note: {note}")
        if self.skipped:
            by = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped_by_reason().items()))
            lines.append(f"skipped {len(self.skipped)} files ({by}):")
            for s in self.skipped[:max_skipped]:
                lines.append(f"  {s.path}: {s.reason}" + (f" ({s.detail})" if s.detail else ""))
            if len(self.skipped) > max_skipped:
                lines.append(f"  ... and {len(self.skipped) - max_skipped} more (see --json)")
        else:
            lines.append("skipped 0 files")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "root": self.root, "layout": self.layout, "classes": self.classes,
            "counts": self.counts(), "n_images": len(self.samples), "split_source": self.split_source,
            "part_names": self.part_names, "notes": self.notes,
            "skipped": [{"path": s.path, "reason": s.reason, "detail": s.detail} for s in self.skipped],
        }
