"""Export discovered parts as a data set: ``DIR/<class>/part_<k>/<image-stem>.jpg`` crops (a shared-parts run:
``DIR/part_<k>/<class>/<image-stem>.jpg``, part k being the same body region for every class), ``DIR/parts.csv`` and
``DIR/parts_coco.json`` (COCO keypoints: one category per class, its ξ parts as keypoints, one annotation per
image). Parts are the MC-Loss channel maps of a class (Chang et al., IEEE TIP 2020), or any other map method of
:mod:`engine.maps.explain`, read by :func:`engine.maps.parts.find_parts`; the class is the image's true class when the data
is labelled, else the predicted one.

Coordinates in the files are on the file's stored pixel grid at full resolution (before its EXIF orientation:
the frame of the data set's own boxes and part_locs.txt, :mod:`engine.data.orientation`; ``width`` and ``height``
are that grid's), whatever orientation or reduction the decoder applied; crops are cut upright from the decoded
image. Points (x, y) (a part's peak) have pixel centres at integers (as CUB's part_locs.txt); boxes x0, y0, x1, y1
are edge coordinates, [0, W] × [0, H]: the square cut into the crop (the part's region widened to a square around
its centre); COCO's bbox x, y, w, h likewise.

Named parts (:mod:`engine.fieldmarks.names`): a part the user named goes to ``part_<k>_<name>`` (the name made
safe for a file name), its rows in ``parts.csv`` carry the name in ``part_name`` and the COCO keypoints are named
after the parts (``part_<k>`` for an unnamed one).

Class folders: a class name is made safe for a folder name (``/``, backslash and ``: * ? " < > |`` become ``_``,
end dots and spaces go); classes whose names become one folder, or folders differing only in case (one folder on
macOS and Windows), never merge: the later class in the run's order gets ``-2``, ``-3``, ... and the summary says
so.

The job streams over the images with a torch DataLoader (bounded memory) and is a generator of
:class:`engine.events.Progress` returning an :class:`ExportSummary`. It is resumable and crash-safe: crops are
written to a temporary name and renamed; after each batch the file system is synced and only then are the batch's
per-image records appended to ``DIR/.fieldmark-export/done.jsonl`` (fsync'd); a rerun skips recorded images, and
``parts.csv`` / ``parts_coco.json`` are rebuilt from the records (atomically) at the end
(:mod:`engine.export.resumable`; the folders' names: :mod:`engine.export.naming`; the files:
:mod:`engine.export.files`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator

import cv2
import numpy as np
from torch.utils.data import DataLoader, Dataset

from engine.data.imageio import Decoded, load_image
from engine.data.scan import DataReport, Sample, Skipped
from engine.data.transforms import Preprocessing
from engine.errors import Cancelled, CheckpointError, ConfigError, DecodeError
from engine.events import Message, Progress
from engine.export import resumable
from engine.export.files import write_coco, write_csv
from engine.export.naming import class_folders, part_folder, relative_image
from engine.export.resumable import FORMAT, ExportError, ExportFolder, job_id
from engine.maps.explain import explain, get_method
from engine.maps.parts import crop, find_parts, square_box
from engine.models.shared_parts import has_shared_parts
from engine.runs import LoadedRun, is_run, read_part_names, use_run_split

log = logging.getLogger(__name__)


@dataclass
class ExportSummary:
    out: str
    job: str
    exported: int  # images exported by this call
    resumed: int  # images already done by an earlier call, skipped
    crops: int  # crops written by this call
    total_images: int  # images recorded in the folder (all jobs)
    failed: list[Skipped] = field(default_factory=list)
    csv: str = ""
    coco: str = ""
    notes: list[str] = field(default_factory=list)  # e.g. classes given a suffixed folder
    parts: list[dict[str, Any]] = field(default_factory=list)  # {"part": k (1-based), "part_name", "folder"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Images(Dataset):
    """Decodes one original image per item (:class:`Decoded`); a failure comes back as its reason."""

    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[int, Decoded | None, str]:
        try:
            return i, load_image(self.samples[i].path), ""
        except DecodeError as exc:
            return i, None, exc.reason


def _collate(items: list) -> list:
    return items


def _encode_jpg(rgb: np.ndarray) -> bytes:
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB
        raise ExportError("OpenCV could not encode a crop as JPEG")
    return enc.tobytes()


def _check_options(crop_size: int, min_score: float) -> None:
    if not 0 <= int(crop_size) <= 4096:
        raise ConfigError(f"crop_size={crop_size}: give a side in pixels up to 4096 (0: keep the crop's own size)")
    if not 0.0 <= float(min_score) <= 1.0:
        raise ConfigError(f"min_score={min_score}: must be between 0 and 1 (a share of the strongest part's peak)")


def export_parts(run: LoadedRun, report: DataReport, out: str | os.PathLike, *, split: str = "test",
                 crop_size: int = 128, min_score: float = 0.0, append: bool = False, method: str = "channels",
                 box: str = "region", batch_size: int = 16, workers: int = 0,
                 should_stop: Callable[[], bool] | None = None) -> Generator[Progress | Message, None,
                                                                              ExportSummary]:
    """Export the parts of ``report``'s ``split`` images; yields Progress("export", done, total) per batch.

    A labelled ``report`` is first laid under the run's saved split (:func:`engine.runs.use_run_split`), whose
    lines come as Message events.

    ``min_score``: parts whose ``score_norm`` (peak / the image's strongest part) is below it are not cut;
    ``crop_size``: crops are squares resized to this side (0: the square at its own size). Raises ExportError
    for an unusable folder, Cancelled when ``should_stop()`` turns true (finished batches are kept).
    """
    _check_options(crop_size, min_score)
    get_method(method).check(run.model)  # before anything is written
    labelled = report.layout != "flat"
    if labelled:  # the run's own split: photos added since left out, missing or changed ones named
        report = yield from use_run_split(run.run_dir, report, run.meta.get("config"))
    if labelled and list(report.classes) != run.classes:
        raise CheckpointError(f"the run knows {len(run.classes)} classes, the data has {len(report.classes)} "
                              f"({[c for c in report.classes if c not in run.classes][:3]} unknown to the run): "
                              "export with the run trained on this data")
    samples = report.split(split) if labelled else list(report.samples)
    out = Path(out).expanduser().absolute()
    job = {"id": job_id(run, report, split, method, int(crop_size), float(min_score), box), "format": FORMAT,
           "run": str(run.run_dir), "data": report.root, "split": split, "method": method,
           "crop_size": int(crop_size), "min_score": float(min_score), "box": box, "classes": run.classes}
    folder = ExportFolder.open(out, job, append)
    stop = should_stop or (lambda: False)
    cutter = _Cutter(run, report, folder, int(crop_size), float(min_score), box)
    for note in cutter.notes:
        log.warning("%s", note)
    todo = [s for s in samples if relative_image(s.path, report.root) not in folder.done]
    resumed = len(samples) - len(todo)
    pp = Preprocessing.from_dict(run.preprocessing)
    summary = ExportSummary(str(out), job["id"], 0, resumed, 0, 0, notes=cutter.notes,
                            parts=[{"part": k + 1, "part_name": cutter.part_names.get(k),
                                    "folder": part_folder(k, cutter.part_names)} for k in range(_part_count(run))])
    loader = DataLoader(_Images(todo), batch_size=max(1, batch_size), num_workers=workers, collate_fn=_collate)
    yield Progress("export", resumed, len(samples))
    for batch in loader:
        if stop():
            raise Cancelled(f"export stopped after {resumed + summary.exported} of {len(samples)} images; run it "
                            "again to go on")
        ok = [(todo[i], dec) for i, dec, _ in batch if dec is not None]
        summary.failed += [Skipped(todo[i].path, why) for i, dec, why in batch if dec is None]
        classes = [s.label if labelled and s.label >= 0 else None for s, _ in ok]
        sets = explain(run.model, [dec.rgb for _, dec in ok], method, classes, pp, keep_low_res=False) if ok else []
        lines, crops = cutter.batch(ok, sets)
        summary.exported += lines
        summary.crops += crops
        yield Progress("export", resumed + summary.exported + len(summary.failed), len(samples))
    try:
        summary.total_images = write_csv(out / "parts.csv", folder.done_file)
        write_coco(out / "parts_coco.json", folder.done_file, cutter.part_names)
    except OSError as exc:
        raise resumable.write_failure(out, exc) from exc
    summary.csv, summary.coco = str(out / "parts.csv"), str(out / "parts_coco.json")
    log.info("exported %d images (%d crops) to %s; %d were done before", summary.exported, summary.crops, out,
             resumed)
    return summary


class _Cutter:
    """Cuts the parts of one export's images into its folder and records them, a batch at a time."""

    def __init__(self, run: LoadedRun, report: DataReport, folder: ExportFolder, crop_size: int, min_score: float,
                 box: str):
        self.run, self.report, self.folder = run, report, folder
        self.crop_size, self.min_score, self.box = crop_size, min_score, box
        self.folders, self.notes = class_folders(run.classes, folder.used)
        self.part_names = _part_names(run)
        self.shared = has_shared_parts(run.model)

    def batch(self, ok: list[tuple[Sample, Decoded]], sets: list) -> tuple[int, int]:
        """Cut and record one batch's images (with their map sets); (images, crops) written. On a failed write the
        batch's crops are removed and ExportError is raised."""
        lines, written, crops = [], [], 0
        try:
            for (sample, dec), (ms, *_) in zip(ok, sets):
                rec = self.one(sample, dec, ms, written)
                lines.append(json.dumps(rec) + "\n")
                crops += len(rec["parts"])
            self.folder.record(lines)
        except OSError as exc:
            raise self.folder.abandon(written, exc) from exc
        return len(lines), crops

    def one(self, sample: Sample, dec: Decoded, ms, written: list[Path]) -> dict[str, Any]:
        """Cut one image's parts (found on the decoded image) and return its record (in the file's frame)."""
        run, names = self.run, self.folder.names
        img, info = dec
        rel = relative_image(sample.path, self.report.root)
        cls = run.classes[ms.class_index]
        folder = self.folders[cls]
        stem = Path(sample.path).stem
        if names.get(f"{folder}/{stem}", rel) != rel:
            stem = f"{stem}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"
        names[f"{folder}/{stem}"] = rel
        h, w = img.shape[:2]
        parts = find_parts(ms, bird_box=info.xywh_to_image(sample.bbox), box=self.box)
        rows = []
        for p in parts:
            if p.duplicate_of is not None or p.score_norm < self.min_score or p.score <= 0:
                continue
            # shared parts mean the same body region for every class: one folder per part, classes inside it
            pf = part_folder(p.index, self.part_names)
            rel_crop = f"{pf}/{folder}/{stem}.jpg" if self.shared else f"{folder}/{pf}/{stem}.jpg"
            path = self.folder.out / rel_crop
            resumable.make_dirs(path.parent, self.folder.created)
            resumable.write_bytes(path, _encode_jpg(crop(img, p.box, self.crop_size or None)))
            written.append(path)
            sq = square_box(p.box, (h, w))
            edges = info.box_to_file((max(0.0, sq[0] + 0.5), max(0.0, sq[1] + 0.5), min(float(w), sq[2] + 0.5),
                                      min(float(h), sq[3] + 0.5)))
            x, y = info.points_to_file(p.peak)
            rows.append({"part": p.index + 1, "part_name": self.part_names.get(p.index, ""), "channel": p.channel,
                         "x": round(float(x), 2), "y": round(float(y), 2), "box": [round(v, 2) for v in edges],
                         "score": p.score, "score_norm": p.score_norm, "crop": rel_crop})
        fw, fh = info.file_size
        return {"job": self.folder.job["id"], "image": rel, "width": fw, "height": fh, "class": cls,
                "class_index": ms.class_index, "predicted": run.classes[ms.predicted],
                "truth": sample.label >= 0 and self.report.layout != "flat",
                "bbox": list(sample.bbox) if sample.bbox else None, "stem": stem, "folder": folder,
                "xi": len(ms.names), "parts": rows}


def _part_names(run: LoadedRun) -> dict[int, str]:
    """The names the user gave the run's parts ({} for a model never saved as a run)."""
    return read_part_names(run.run_dir) if is_run(run.run_dir) else {}


def _part_count(run: LoadedRun) -> int:
    if has_shared_parts(run.model):
        return int(run.model.parts)
    groups = getattr(run.model, "groups", None)
    return max(groups) if groups else 1


__all__ = ["ExportError", "ExportSummary", "class_folders", "export_parts", "job_id", "part_folder"]
