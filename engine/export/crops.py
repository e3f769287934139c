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
``parts.csv`` / ``parts_coco.json`` are rebuilt from the records (atomically) at the end.
"""

from __future__ import annotations

import errno
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

from engine.data.scan import DataReport, Sample, Skipped
from engine.data.transforms import Preprocessing
from engine.errors import Cancelled, CheckpointError, ConfigError, DecodeError, EngineError
from engine.events import Message, Progress
from engine.fileio import atomic_write
from engine.maps.explain import explain, get_method
from engine.models.shared_parts import has_shared_parts
from engine.export.files import STATE, read_records, write_coco, write_csv
from engine.data.imageio import Decoded, load_image
from engine.maps.parts import crop, find_parts, square_box
from engine.runs import LoadedRun, is_run, read_part_names, use_run_split

log = logging.getLogger(__name__)

FORMAT = "fieldmark-export"


class ExportError(EngineError):
    """The output folder cannot be used or written."""


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


# ------------------------------------------------------------------ file operations (one place, easy to fake)
def _write_bytes(path: Path, data: bytes) -> None:
    """Atomic against crashes (temporary name, rename); durability comes from the per-batch sync."""
    atomic_write(path, lambda fh: fh.write(data), sync=False)


def _mkdir(path: Path, created: list[Path]) -> None:
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
        created.append(d)


def _append_lines(path: Path, lines: list[str]) -> None:
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


def _fail(out: Path, exc: OSError) -> ExportError:
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


def _check_out(out: Path, job: dict[str, Any], append: bool) -> tuple[list[dict], bool]:
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


def _rel(path: str, root: str) -> str:
    """The image's path relative to the data root (absolute when outside it), "/"-separated."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, os.path.abspath(root))
    return full if rel.startswith("..") else rel.replace(os.sep, "/")


def _encode_jpg(rgb: np.ndarray) -> bytes:
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB
        raise ExportError("OpenCV could not encode a crop as JPEG")
    return enc.tobytes()


_UNSAFE = '/\\:*?"<>|\0'  # characters some file system refuses in a name


def _folder_name(name: str) -> str:
    return "".join("_" if ch in _UNSAFE else ch for ch in name).strip(". ") or "class"


def part_folder(index: int, part_names: dict[int, str]) -> str:
    """Part ``index``'s folder (0-based index): ``part_<k>``, or ``part_<k>_<name>`` for a named part, the name
    made safe for a folder (spaces as ``_``): ``part_3_wing_bars``."""
    safe = "".join("_" if ch in _UNSAFE or ch.isspace() else ch for ch in part_names.get(index, "")).strip("._ ")
    return f"part_{index + 1}_{safe}" if safe else f"part_{index + 1}"


def class_folders(classes: list[str], taken: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """({class: folder}, notes): each class's export folder, distinct even where names sanitise to one folder or
    differ only in case; ``taken`` ({class: folder}) are the folders earlier exports in the folder already use."""
    out = dict(taken or {})
    owner = {f.casefold(): c for c, f in out.items()}
    notes = []
    for c in classes:
        if c in out:
            continue
        base = folder = _folder_name(c)
        n = 2
        while folder.casefold() in owner:
            folder = f"{base}-{n}"
            n += 1
        if folder != base:
            notes.append(f"class {c!r} is exported to {folder}/: its name makes the folder {base}/, which class "
                         f"{owner[base.casefold()]!r} already uses")
        owner[folder.casefold()] = c
        out[c] = folder
    return out, notes


def _record_folder(rec: dict[str, Any]) -> str:
    """The class folder a done record's crops went to (older records: from a crop's path, or the class name)."""
    if rec.get("folder"):
        return rec["folder"]
    return rec["parts"][0]["crop"].split("/")[0] if rec.get("parts") else _folder_name(rec["class"])


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
    if not 0 <= int(crop_size) <= 4096:
        raise ConfigError(f"crop_size={crop_size}: give a side in pixels up to 4096 (0: keep the crop's own size)")
    if not 0.0 <= float(min_score) <= 1.0:
        raise ConfigError(f"min_score={min_score}: must be between 0 and 1 (a share of the strongest part's peak)")
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
    jobs, resume = _check_out(out, job, append)
    stop = should_stop or (lambda: False)
    created: list[Path] = []
    state = out / STATE
    done_file = state / "done.jsonl"
    try:
        _mkdir(state, created)
        if not resume:
            _write_bytes(state / "jobs.json", json.dumps({"format": FORMAT, "jobs": jobs + [job]}, indent=1).encode())
        if not done_file.exists():
            _append_lines(done_file, [])
    except OSError as exc:
        _undo(created, state if state in created else None)
        raise _fail(out, exc) from exc

    done: set[str] = set()
    names: dict[str, str] = {}  # crop stem → image, for collisions
    used: dict[str, str] = {}  # class → folder, of the exports already in the folder
    for rec in read_records(done_file):
        folder = _record_folder(rec)
        used.setdefault(rec["class"], folder)
        names.setdefault(f"{folder}/{rec['stem']}", rec["image"])
        if rec.get("job") == job["id"]:
            done.add(rec["image"])
    folders, notes = class_folders(run.classes, used)
    for note in notes:
        log.warning("%s", note)
    todo = [s for s in samples if _rel(s.path, report.root) not in done]
    resumed = len(samples) - len(todo)
    pp = Preprocessing.from_dict(run.preprocessing)
    part_names = _part_names(run)
    summary = ExportSummary(str(out), job["id"], 0, resumed, 0, 0, notes=notes,
                            parts=[{"part": k + 1, "part_name": part_names.get(k), "folder": part_folder(k, part_names)}
                                   for k in range(_part_count(run))])
    loader = DataLoader(_Images(todo), batch_size=max(1, batch_size), num_workers=workers, collate_fn=_collate)
    yield Progress("export", resumed, len(samples))
    wrote_record = False
    for batch in loader:
        if stop():
            raise Cancelled(f"export stopped after {resumed + summary.exported} of {len(samples)} images; run it "
                            "again to go on")
        ok = [(todo[i], dec) for i, dec, _ in batch if dec is not None]
        summary.failed += [Skipped(todo[i].path, why) for i, dec, why in batch if dec is None]
        classes = [s.label if labelled and s.label >= 0 else None for s, _ in ok]
        sets = explain(run.model, [dec.rgb for _, dec in ok], method, classes, pp, keep_low_res=False) if ok else []
        lines, written = [], []
        try:
            for (sample, dec), (ms, *_) in zip(ok, sets):
                rec = _export_one(sample, dec, ms, run, report, out, job, int(crop_size), float(min_score), box,
                                  folders, names, created, written, part_names)
                lines.append(json.dumps(rec) + "\n")
                summary.crops += len(rec["parts"])
            os.sync()  # the crops are on disk before any record names them
            _append_lines(done_file, lines)
        except OSError as exc:
            for p in written:
                _unlink(p)
            _undo(created, state if not wrote_record and not resume and state in created else None)
            raise _fail(out, exc) from exc
        wrote_record = wrote_record or bool(lines)
        summary.exported += len(lines)
        yield Progress("export", resumed + summary.exported + len(summary.failed), len(samples))
    try:
        summary.total_images = write_csv(out / "parts.csv", done_file)
        write_coco(out / "parts_coco.json", done_file, part_names)
    except OSError as exc:
        raise _fail(out, exc) from exc
    summary.csv, summary.coco = str(out / "parts.csv"), str(out / "parts_coco.json")
    log.info("exported %d images (%d crops) to %s; %d were done before", summary.exported, summary.crops, out,
             resumed)
    return summary


def _export_one(sample: Sample, dec: Decoded, ms, run: LoadedRun, report: DataReport, out: Path,
                job: dict, crop_size: int, min_score: float, box: str, folders: dict[str, str],
                names: dict[str, str], created: list[Path], written: list[Path],
                part_names: dict[int, str]) -> dict[str, Any]:
    """Cut one image's parts (found on the decoded image) and return its record (in the file's frame)."""
    img, info = dec
    rel = _rel(sample.path, report.root)
    cls = run.classes[ms.class_index]
    folder = folders[cls]
    stem = Path(sample.path).stem
    if names.get(f"{folder}/{stem}", rel) != rel:
        stem = f"{stem}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"
    names[f"{folder}/{stem}"] = rel
    h, w = img.shape[:2]
    parts = find_parts(ms, bird_box=info.xywh_to_image(sample.bbox), box=box)
    rows = []
    for p in parts:
        if p.duplicate_of is not None or p.score_norm < min_score or p.score <= 0:
            continue
        # shared parts mean the same body region for every class: one folder per part, classes inside it
        pf = part_folder(p.index, part_names)
        rel_crop = f"{pf}/{folder}/{stem}.jpg" if has_shared_parts(run.model) else f"{folder}/{pf}/{stem}.jpg"
        path = out / rel_crop
        _mkdir(path.parent, created)
        _write_bytes(path, _encode_jpg(crop(img, p.box, crop_size or None)))
        written.append(path)
        sq = square_box(p.box, (h, w))
        edges = info.box_to_file((max(0.0, sq[0] + 0.5), max(0.0, sq[1] + 0.5), min(float(w), sq[2] + 0.5),
                                  min(float(h), sq[3] + 0.5)))
        x, y = info.points_to_file(p.peak)
        rows.append({"part": p.index + 1, "part_name": part_names.get(p.index, ""), "channel": p.channel,
                     "x": round(float(x), 2), "y": round(float(y), 2), "box": [round(v, 2) for v in edges], "score": p.score, "score_norm": p.score_norm,
                     "crop": rel_crop})
    fw, fh = info.file_size
    return {"job": job["id"], "image": rel, "width": fw, "height": fh, "class": cls, "class_index": ms.class_index,
            "predicted": run.classes[ms.predicted], "truth": sample.label >= 0 and report.layout != "flat",
            "bbox": list(sample.bbox) if sample.bbox else None, "stem": stem, "folder": folder, "xi": len(ms.names),
            "parts": rows}


def _part_names(run: LoadedRun) -> dict[int, str]:
    """The names the user gave the run's parts ({} for a model never saved as a run)."""
    return read_part_names(run.run_dir) if is_run(run.run_dir) else {}


def _part_count(run: LoadedRun) -> int:
    if has_shared_parts(run.model):
        return int(run.model.parts)
    groups = getattr(run.model, "groups", None)
    return max(groups) if groups else 1


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


def _undo(created: list[Path], state: Path | None) -> None:
    """Remove what a failed call created: the state folder's files when it made the folder, then empty dirs."""
    if state is not None:
        for f in state.glob("*"):
            _unlink(f)
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            pass


__all__ = ["ExportError", "ExportSummary", "class_folders", "export_parts", "job_id", "part_folder"]
